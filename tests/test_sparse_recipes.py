"""Ways to be sparse from the first step, by hand against the unrestricted vectors, and the Lion-SP recipe:
its settings under the user's, saved with the model, reloaded to the same vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmret.encoders.settings import EncoderSettings
from llmret.encoders.sparse import SparseEncoder, keep_top_k
from llmret.models.backbone import load_backbone
from llmret.models.saved import SavedModel
from llmret.training.train import TrainSettings, train

from helpers import random_texts, write_training_file


def test_special_terms_and_input_terms_by_hand(tiny_llama: Path) -> None:
    backbone = load_backbone(str(tiny_llama), lm_head=True)
    full = SparseEncoder(backbone, EncoderSettings(model=str(tiny_llama), add_bos=True), "cpu")
    texts = random_texts(4, seed=2, max_words=6)
    ids = full.collate(full.tokenize(texts, 16))
    with torch.no_grad():
        reps = full.forward(**ids)
    assert (reps > 0).sum(dim=1).min() > 20  # a random decoder head: nearly every term is positive
    restricted = SparseEncoder(backbone, EncoderSettings(model=str(tiny_llama), add_bos=True, zero_special_terms=True,
                                                         input_terms_only=True, expansion_terms=3), "cpu")
    with torch.no_grad():
        got = restricted.forward(**ids)
    special = set(full.tokenizer.all_special_ids)
    for row in range(len(texts)):
        own = {int(t) for t, m in zip(ids["input_ids"][row], ids["attention_mask"][row]) if m}
        others = sorted((t for t in range(reps.shape[1]) if t not in own), key=lambda t: -float(reps[row, t]))[:3]
        keep = (own | set(others)) - special
        expected = torch.tensor([float(reps[row, t]) if t in keep else 0.0 for t in range(reps.shape[1])])
        torch.testing.assert_close(got[row], expected)
    assert not got[:, sorted(special)].any()
    with pytest.raises(ValueError, match="needs input_terms_only"):
        SparseEncoder(backbone, EncoderSettings(model=str(tiny_llama), expansion_terms=3), "cpu")


def test_keep_top_k_keeps_the_gradient_of_what_it_keeps() -> None:
    reps = torch.tensor([[0.5, 2.0, 0.0, 1.0], [3.0, 0.125, 0.25, 0.375]], requires_grad=True)
    kept = keep_top_k(reps, 2)
    assert kept.tolist() == [[0.0, 2.0, 0.0, 1.0], [3.0, 0.0, 0.0, 0.375]]
    kept.sum().backward()
    assert reps.grad.tolist() == [[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0]]


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_top_k_in_training_and_warm_up_in_steps(tiny_llama: Path, tmp_path: Path) -> None:
    data = write_training_file(tmp_path / "train.jsonl", 16, (1, 5))

    def run(name: str, **extra: object) -> list[dict]:
        encoder = EncoderSettings(model=str(tiny_llama), query_max_length=12, passage_max_length=20,
                                  query_top_k=3, passage_top_k=5)
        train(TrainSettings(retriever="sparse", train_data=str(data), output_dir=str(tmp_path / name), batch_size=4,
                            group_size=2, max_steps=3, logging_steps=1, lora_r=4, encoder=encoder, **extra))
        return _log(tmp_path / name)

    cut = run("cut", top_k_in_training=True)
    assert all(r["q_nonzero"] <= 3 and r["p_nonzero"] <= 5 for r in cut)
    uncut = run("uncut")
    assert max(r["p_nonzero"] for r in uncut) > 5  # without the flag, training sees every term
    never = run("never", reg_warmup_steps=10**6)
    assert all(r["reg_loss"] < 1e-6 for r in never) and uncut[-1]["reg_loss"] > 1e-3
    with pytest.raises(ValueError, match="top_k_in_training needs"):
        train(TrainSettings(train_data=str(data), top_k_in_training=True, encoder=EncoderSettings(model=str(tiny_llama))))


def test_lion_sparse_recipe_is_saved_and_reloads_to_the_training_vectors(tiny_llama: Path, tmp_path: Path) -> None:
    data = write_training_file(tmp_path / "train.jsonl", 16, (1, 5, 9))
    settings = TrainSettings.from_dict({"recipe": "lion-sparse", "train_data": str(data), "output_dir": str(tmp_path / "lion"),
                                        "batch_size": 4, "max_steps": 2, "lora_r": 4,
                                        "encoder": {"model": str(tiny_llama), "passage_max_length": 20}})
    assert (settings.retriever, settings.learning_rate, settings.group_size, settings.warmup_ratio) == ("sparse", 1e-4, 17, 0.04)
    assert settings.encoder.passage_max_length == 20 and settings.encoder.query_max_length == 64  # the user's wins
    final = train(settings)
    saved = SavedModel.read(final).encoder
    assert saved["logit_scale"] == pytest.approx(32 ** -0.25) and saved["add_bos"] is True
    trained = {k: saved[k] for k in ("logit_scale", "add_bos", "query_max_length", "passage_max_length")}
    texts = random_texts(5, seed=8, min_words=6)
    at_training = SparseEncoder(load_backbone(str(final), lm_head=True), EncoderSettings(model=str(final), **trained), "cpu")
    reloaded = SparseEncoder.load(EncoderSettings(model=str(final)), "cpu")
    for query in (True, False):
        assert (reloaded.encode(texts, query=query) != at_training.encode(texts, query=query)).nnz == 0
    with pytest.raises(ValueError, match="named but not applied"):
        train(TrainSettings(recipe="lion-sparse", train_data=str(data), encoder=EncoderSettings(model=str(tiny_llama))))


def test_lion_dense_recipe_pools_normalised_states_and_reloads(tiny_llama: Path, tmp_path: Path) -> None:
    """Lion's dense pooling by hand from transformers' own hidden states (the mean of the L2-normalised
    token states over real tokens, left and right padded); the recipe's settings saved and reloaded."""
    from transformers import AutoModel, AutoTokenizer

    from llmret.encoders.dense import DenseEncoder
    from llmret.encoders.export import export_model

    data = write_training_file(tmp_path / "train.jsonl", 16, (1, 5, 9))
    settings = TrainSettings.from_dict({"recipe": "lion-dense", "train_data": str(data), "output_dir": str(tmp_path / "ld"),
                                        "batch_size": 4, "max_steps": 2, "lora_r": 4, "group_size": 2,
                                        "encoder": {"model": str(tiny_llama), "passage_max_length": 20}})
    assert (settings.temperature, settings.learning_rate, settings.encoder.pooling) == (0.01, 1e-4, "mean_normalized")
    final = train(settings)
    reloaded = DenseEncoder.load(EncoderSettings(model=str(final)), "cpu")
    assert reloaded.info.pooling == "mean_normalized" and reloaded.info.normalize is False

    encoder = DenseEncoder.load(EncoderSettings(model=str(tiny_llama), pooling="mean_normalized", normalize=False,
                                                add_bos=True, append_eos=False), "cpu")
    model, tok = AutoModel.from_pretrained(tiny_llama), AutoTokenizer.from_pretrained(tiny_llama)
    texts = random_texts(4, seed=6, max_words=12)
    for side in ("right", "left"):
        encoder.tokenizer.padding_side = side
        got = encoder.encode_passages(texts)
        for row, text in enumerate(texts):
            with torch.no_grad():
                states = model(torch.tensor([tok(text)["input_ids"]])).last_hidden_state[0]
            expected = torch.nn.functional.normalize(states, dim=-1).mean(dim=0)
            torch.testing.assert_close(torch.tensor(got[row]), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="no sentence-transformers module"):
        export_model(str(final), tmp_path / "st")
    assert not (tmp_path / "st").exists()  # nothing half-written


def test_calibrated_zero_points_by_hand_train_and_reload_with_the_model(tiny_llama: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from llmret.encoders.term_bias import FILE, zero_points

    gen = torch.Generator().manual_seed(0)
    pooled = torch.randn(50, 40, generator=gen) * 3 + torch.linspace(-5, 5, 40)  # terms with their own offsets
    bias = zero_points(pooled, 7)
    assert int(((pooled + bias) > 0).sum()) == 7 * 50
    centred = (pooled + bias).mean(dim=0)  # every term's mean moved to the same point
    torch.testing.assert_close(centred, centred[:1].expand(40))
    with pytest.raises(ValueError, match="between 1 and 39"):
        zero_points(pooled, 40)

    data = write_training_file(tmp_path / "train.jsonl", 16, (1, 5))

    def run(name: str, **extra: object) -> tuple[Path, list[dict]]:
        encoder = EncoderSettings(model=str(tiny_llama), query_max_length=12, passage_max_length=20)
        final = train(TrainSettings(retriever="sparse", train_data=str(data), output_dir=str(tmp_path / name),
                                    batch_size=4, group_size=2, max_steps=3, logging_steps=1, lora_r=4,
                                    learning_rate=1e-2, encoder=encoder, **extra))
        return final, _log(tmp_path / name)

    _, plain = run("plain")
    final, calibrated = run("calibrated", calibrate_terms=4)
    assert plain[0]["p_nonzero"] > 15 and calibrated[0]["p_nonzero"] < 9  # of a 48-term vocabulary
    trained = load_file(final / FILE)["bias"]
    reloaded = SparseEncoder.load(EncoderSettings(model=str(final)), "cpu")
    torch.testing.assert_close(reloaded.term_bias, trained)
    # By hand from transformers' full logits of the reloaded weights: max over real tokens, + bias, log(1 + ReLU)
    texts = random_texts(5, seed=9, min_words=4)
    got = torch.tensor(reloaded.encode_passages(texts).toarray())
    for row, ids in enumerate(reloaded.token_ids(texts, query=False)):
        with torch.no_grad():
            logits = reloaded.model(torch.tensor([list(ids)])).logits[0].max(dim=0).values
        torch.testing.assert_close(got[row], torch.log1p(torch.relu(logits + trained)), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="needs --retriever sparse"):
        train(TrainSettings(train_data=str(data), calibrate_terms=4, output_dir=str(tmp_path / "d"),
                            encoder=EncoderSettings(model=str(tiny_llama))))
