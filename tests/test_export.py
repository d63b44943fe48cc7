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
                               encoder=EncoderSettings(**{"model": str(model), "passage_max_length": 40, **encoder})))  # type: ignore[arg-type]


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
    assert tei_pooling(exported) == ours.info.pooling
    meta = card_metadata(exported)
    assert (meta["library_name"], meta["pipeline_tag"]) == ("sentence-transformers", "sentence-similarity")
    assert "llmret" in meta["tags"] and "base_model" not in meta  # a local folder is no Hub id


def card_metadata(folder: Path) -> dict:
    """The Hub's metadata block at the top of an export's model card."""
    import yaml

    card = (folder / "README.md").read_text()
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.fixture(scope="module")
def tiny_gemma3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Gemma 3 (sliding-window and full layers, its own bidirectional config flag) on the tiny
    Llama's tokenizer; its 64-token window holds every test text."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from helpers import tiny_tokenizer

    torch.manual_seed(0)
    tokenizer, folder = tiny_tokenizer("llama"), tmp_path_factory.mktemp("tiny-gemma3")
    Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=128, sliding_window=64,
        layer_types=["sliding_attention", "full_attention"], bos_token_id=1, eos_token_id=2,
        pad_token_id=0)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


LION = {"bidirectional": True, "add_bos": True, "append_eos": False}


@pytest.mark.parametrize("model, encoder", [("tiny_bert", {}), ("tiny_llama", LION), ("tiny_llama", {"bidirectional": False}),
                                            ("tiny_gemma3", LION)])
def test_sentence_transformers_sparse_encoder_reproduces_a_splade_export(model: str, encoder: dict, train_file: Path,
                                                                         tmp_path: Path,
                                                                         request: pytest.FixtureRequest) -> None:
    """Masked-LM SPLADE, a Lion-style decoder (LM head, bidirectional attention, BOS and no EOS) and a causal
    one: sentence-transformers' own SparseEncoder gives llmret's vectors."""
    from sentence_transformers import SparseEncoder as STSparseEncoder

    final = trained(request.getfixturevalue(model), train_file, tmp_path / "run", "sparse", query_prefix="q: ",
                    **encoder)
    exported = export_model(str(final), tmp_path / "exported")
    ours = SparseEncoder.load(EncoderSettings(model=str(final)), "cpu")
    theirs = STSparseEncoder(str(exported), device="cpu")
    assert ours.info.bidirectional is encoder.get("bidirectional", ours.info.bidirectional)
    texts = random_texts(6, seed=8, min_words=2, max_words=12)
    for mine, st in ((ours.encode_queries(texts), theirs.encode_query(texts)),
                     (ours.encode_passages(texts), theirs.encode_document(texts))):
        st = st.to_dense().numpy() if hasattr(st, "to_dense") else np.asarray(st)
        np.testing.assert_allclose(mine.toarray(), st, rtol=1e-4, atol=1e-5)
    meta = card_metadata(exported)
    assert meta["library_name"] == "sentence-transformers" and "sparse-encoder" in meta["tags"]


def test_a_bidirectional_export_past_the_sliding_window_gets_no_sparse_encoder_files(
        tiny_gemma3: Path, train_file: Path, tmp_path: Path) -> None:
    final = trained(tiny_gemma3, train_file, tmp_path / "run", "sparse", **{**LION, "passage_max_length": 96})
    exported = export_model(str(final), tmp_path / "exported")
    assert not (exported / "modules.json").exists()
    assert "bidirectional attention past the 64-token sliding window" in (exported / "README.md").read_text()


def test_the_card_names_the_hub_model_a_zoo_name_stands_for(tmp_path: Path) -> None:
    from llmret.models import zoo

    assert zoo.hub_id("smollm2-135m") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert zoo.hub_id("minilm-l6") == "sentence-transformers/all-MiniLM-L6-v2"
    assert zoo.hub_id("BAAI/bge-base-en-v1.5") == "BAAI/bge-base-en-v1.5"
    assert zoo.hub_id(str(tmp_path)) is None and zoo.hub_id("runs/code/final") is None
    assert all(entry.hub_id.count("/") == 1 for entry in zoo.ZOO.values())


def tei_pooling(folder: Path) -> str:
    """The pooling text-embeddings-inference takes from ``1_Pooling/config.json``, as its source reads it
    (huggingface/text-embeddings-inference, router/src/lib.rs: ``PoolConfig``, whose flags for CLS, mean, max
    and mean-sqrt-len are required, and its conversion: CLS, else mean, else last token, else refused;
    the newest releases first try a ``pooling_mode`` string of cls, mean or lasttoken)."""
    import json

    config = json.loads((folder / "1_Pooling" / "config.json").read_text())
    for flag in ("pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
                 "pooling_mode_mean_sqrt_len_tokens"):
        assert isinstance(config.get(flag), bool), f"TEI's older releases cannot parse a config without {flag}"
    by_string = {"cls": "cls", "mean": "mean", "lasttoken": "last", "last_token": "last"}.get(config.get("pooling_mode"))
    if config["pooling_mode_cls_token"]:
        by_flags = "cls"
    elif config["pooling_mode_mean_tokens"]:
        by_flags = "mean"
    elif config.get("pooling_mode_lasttoken", False):
        by_flags = "last"
    else:
        raise AssertionError(f"TEI refuses the pooling config {config}")
    assert by_string in (None, by_flags), "TEI releases would disagree on this pooling"
    return by_flags


def test_sparse_export_keeps_the_head_and_the_settings(tiny_bert: Path, train_file: Path, tmp_path: Path) -> None:
    final = trained(tiny_bert, train_file, tmp_path / "run", "sparse", logit_scale=0.5)
    exported = export_model(str(final), tmp_path / "exported")
    texts = random_texts(5, seed=6)
    adapter = SparseEncoder.load(EncoderSettings(model=str(final)), "cpu").encode_passages(texts)
    plain = SparseEncoder.load(EncoderSettings(model=str(exported)), "cpu")
    assert plain.settings.logit_scale == 0.5 and not (exported / "adapter_config.json").exists()
    np.testing.assert_allclose(plain.encode_passages(texts).toarray(), adapter.toarray(), atol=1e-5)
    assert "Learned-sparse retriever" in (exported / "README.md").read_text()
    meta = card_metadata(exported)
    assert (meta["library_name"], meta["pipeline_tag"]) == ("transformers", "feature-extraction")
    assert {"llmret", "learned-sparse-retrieval"} <= set(meta["tags"])
    assert "cannot reproduce logits scaled by 0.5" in (exported / "README.md").read_text()
    assert not (exported / "modules.json").exists()  # no SparseEncoder files it would misread
    with pytest.raises(ValueError, match="was trained as a sparse retriever; load it with --retriever sparse"):
        DenseEncoder.load(EncoderSettings(model=str(exported)), "cpu")
