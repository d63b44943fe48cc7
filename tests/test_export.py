"""Exports: dense and sparse; SentenceTransformer(folder) reproduces llmret's query and passage vectors
(EOS through the exported tokenizer, prefixes and instruction as prompts) for CLS, mean and last-token pooling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmret.encoders.dense import DenseEncoder
from llmret.encoders.export import export_model
from llmret.encoders.settings import EncoderSettings
from llmret.encoders.sparse import SparseEncoder
from llmret.training.train import TrainSettings, train

from helpers import random_texts, write_training_file


@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_file(tmp_path_factory.mktemp("train") / "train.jsonl", 16)


def trained(model: Path, data: Path, out: Path, retriever: str = "dense", **encoder: object) -> Path:
    return train(TrainSettings(retriever=retriever, train_data=str(data), output_dir=str(out), batch_size=4,
                               group_size=2, max_steps=2, lora_r=4, learning_rate=5e-2,
                               encoder=EncoderSettings(model=str(model), passage_max_length=40, **encoder)))  # type: ignore[arg-type]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("model, pooling", [("tiny_bert", None), ("tiny_bert", "mean"), ("tiny_llama", None)])
def test_sentence_transformers_reproduces_exported_vectors(model: str, pooling: str | None, train_file: Path,
                                                           tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from sentence_transformers import SentenceTransformer

    folder = request.getfixturevalue(model)
    final = trained(folder, train_file, tmp_path / "run", pooling=pooling, query_prefix="q: ",
                    passage_prefix="p: ", instruction="Find the passage.")
    exported = export_model(str(final), tmp_path / "exported")
    ours = DenseEncoder.load(EncoderSettings(model=str(final)), "cpu")
    assert ours.info.pooling == (pooling or ("last" if model == "tiny_llama" else "cls"))
    st = SentenceTransformer(str(exported), device="cpu")
    texts = random_texts(7, seed=5, min_words=2, max_words=12)
    for mine, theirs in ((ours.encode_queries(texts), st.encode_query(texts)),
                         (ours.encode_passages(texts), st.encode_document(texts))):
        assert cosines(mine, theirs).min() >= 1 - 1e-5
    reloaded = DenseEncoder.load(EncoderSettings(model=str(exported)), "cpu")  # and llmret reads its export back
    np.testing.assert_allclose(reloaded.encode_queries(texts), ours.encode_queries(texts), atol=1e-5)
    assert "Dense retriever" in (exported / "README.md").read_text()


def test_sparse_export_keeps_the_head_and_the_settings(tiny_bert: Path, train_file: Path, tmp_path: Path) -> None:
    final = trained(tiny_bert, train_file, tmp_path / "run", "sparse", logit_scale=0.5)
    exported = export_model(str(final), tmp_path / "exported")
    texts = random_texts(5, seed=6)
    adapter = SparseEncoder.load(EncoderSettings(model=str(final)), "cpu").encode_passages(texts)
    plain = SparseEncoder.load(EncoderSettings(model=str(exported)), "cpu")
    assert plain.settings.logit_scale == 0.5 and not (exported / "adapter_config.json").exists()
    np.testing.assert_allclose(plain.encode_passages(texts).toarray(), adapter.toarray(), atol=1e-5)
    assert "Learned-sparse retriever" in (exported / "README.md").read_text()
    with pytest.raises(ValueError, match="was trained as a sparse retriever; load it with --retriever sparse"):
        DenseEncoder.load(EncoderSettings(model=str(exported)), "cpu")
