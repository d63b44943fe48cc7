"""A trained model reloads with every setting it was trained with; explicit settings and a dataset's
rules override them in a fixed order; changed weights never reuse old corpus vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from llmret.data import load_dataset
from llmret.encoders.dense import DenseEncoder
from llmret.encoders.settings import EncoderSettings
from llmret.encoders.sparse import SparseEncoder
from llmret.evaluation.pipeline import evaluate_retriever
from llmret.models.backbone import load_backbone
from llmret.models.saved import SavedModel
from llmret.retrievers import DenseRetriever
from llmret.training.train import TrainSettings, train

from helpers import make_tiny_model, random_texts, write_beir_folder, write_training_file


@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_file(tmp_path_factory.mktemp("train") / "train.jsonl", 24)


def quick_train(model: Path, data: Path, out: Path, retriever: str = "dense", **encoder: object) -> Path:
    return train(TrainSettings(retriever=retriever, train_data=str(data), output_dir=str(out), batch_size=4,
                               group_size=2, max_steps=3, lora_r=4, learning_rate=5e-2, seed=3,
                               encoder=EncoderSettings(model=str(model), **encoder)))  # type: ignore[arg-type]


def test_sparse_model_reloads_with_its_logit_scale_and_lengths(tiny_llama: Path, train_file: Path, tmp_path: Path) -> None:
    trained = dict(logit_scale=0.25, query_max_length=6, passage_max_length=9, passage_top_k=7)
    final = quick_train(tiny_llama, train_file, tmp_path / "run", "sparse", **trained)
    assert SavedModel.read(final).encoder["logit_scale"] == 0.25  # one schema, written in one place
    texts = random_texts(6, seed=4, min_words=10)
    # The vectors of training: the trained weights under exactly the training settings, given explicitly.
    at_training = SparseEncoder(load_backbone(str(final), lm_head=True), EncoderSettings(model=str(final), **trained), "cpu")
    reloaded = SparseEncoder.load(EncoderSettings(model=str(final)), "cpu")
    for query in (True, False):
        assert (reloaded.encode(texts, query=query) != at_training.encode(texts, query=query)).nnz == 0
    assert reloaded.truncated == {"queries": 6, "passages": 6}  # 10+ words at 6 and 9 tokens
    # An explicit value equal to the default still counts as set.
    default_scale = SparseEncoder.load(EncoderSettings(model=str(final), logit_scale=1.0), "cpu")
    assert default_scale.settings.logit_scale == 1.0 and default_scale.settings.passage_max_length == 9
    assert (default_scale.encode_passages(texts) != reloaded.encode_passages(texts)).nnz > 0


def test_instruction_comes_from_flag_then_dataset_then_none(tiny_llama: Path, train_file: Path, tmp_path: Path) -> None:
    final = quick_train(tiny_llama, train_file, tmp_path / "instructed", instruction="Find the code.")
    plain = quick_train(tiny_llama, train_file, tmp_path / "plain")

    def instruction(model: Path, dataset: dict | None, **explicit: object) -> str:
        return DenseEncoder.load(EncoderSettings(model=str(model), **explicit), "cpu", dataset).settings.instruction

    assert instruction(final, None) == "Find the code."  # no dataset: as trained
    assert instruction(final, {"instruction": "Find the docs."}) == "Find the docs."  # the dataset's own
    assert instruction(final, {"instruction": ""}) == ""  # a dataset without one: none
    assert instruction(final, {"instruction": "Find the docs."}, instruction="") == ""  # the flag turns it off
    assert instruction(final, {"instruction": "Find the docs."}, instruction="X") == "X"
    assert instruction(plain, {"instruction": "Find the docs."}) == ""  # not trained with instructions


def test_changed_weights_reencode_the_corpus(tmp_path: Path) -> None:
    docs = {f"d{i}": t for i, t in enumerate(random_texts(12, seed=3, min_words=5))}
    queries = {f"q{i}": docs[f"d{i}"] for i in range(0, 12, 3)}
    data_dir = write_beir_folder(tmp_path / "data", docs, queries, {q: {f"d{q[1:]}": 1} for q in queries})
    model = make_tiny_model(tmp_path / "model", "llama", seed=0)
    out = tmp_path / "out"

    def run() -> dict:
        encoder = DenseEncoder.load(EncoderSettings(model=str(model)), "cpu")
        return evaluate_retriever(DenseRetriever(encoder, work_dir=out, progress=False), load_dataset(data_dir), out).run

    run()
    old = json.loads((out / "embeddings" / "meta.json").read_text())["signature"]["weights"]
    make_tiny_model(model, "llama", seed=1)  # retrained into the same folder
    second = run()
    assert json.loads((out / "embeddings" / "meta.json").read_text())["signature"]["weights"] != old
    fresh_out = tmp_path / "fresh"
    fresh = evaluate_retriever(DenseRetriever(DenseEncoder.load(EncoderSettings(model=str(model)), "cpu"),
                                              work_dir=fresh_out, progress=False), load_dataset(data_dir)).run
    for qid in fresh:
        assert list(second[qid]) == list(fresh[qid])
        np.testing.assert_allclose(list(second[qid].values()), list(fresh[qid].values()), atol=1e-6)


def test_resume_with_other_settings_names_them(tiny_llama: Path, train_file: Path, tmp_path: Path) -> None:
    def crash(step: int, loss: float) -> None:
        if step == 2:
            raise KeyboardInterrupt

    settings = TrainSettings(train_data=str(train_file), output_dir=str(tmp_path / "r"), batch_size=4, group_size=2,
                             max_steps=3, save_steps=1, lora_r=4, encoder=EncoderSettings(model=str(tiny_llama)))
    with pytest.raises(KeyboardInterrupt):
        train(settings, on_step=crash)
    changed = TrainSettings(**{**settings.__dict__, "learning_rate": 1e-3,
                               "encoder": EncoderSettings(model=str(tiny_llama), passage_max_length=20)})
    with pytest.raises(ValueError, match=r"encoder.passage_max_length \(128 -> 20\); learning_rate \(0.0003 -> 0.001\)"):
        train(changed, resume=True)
    assert (train(changed, resume=True, force=True) / "adapter_config.json").is_file()
