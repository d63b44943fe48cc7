"""Encode, index, search and evaluate end to end with a tiny random Llama, through the API and the CLI."""

import json
from pathlib import Path

import numpy as np
import pytest

from llmret.cli import main
from llmret.data import Corpus, Document, load_dataset, read_run
from llmret.encoders.dense import DenseEncoder
from llmret.encoders.settings import EncoderSettings
from llmret.evaluation.pipeline import evaluate_retriever
from llmret.index.dense import DenseIndex
from llmret.index.shards import EmbeddingShards, encode_corpus
from llmret.models.backbone import load_backbone
from llmret.retrievers import BM25Retriever, DenseRetriever

from helpers import SCIFACT, random_texts, write_beir_folder


@pytest.fixture()
def copy_dataset(tmp_path: Path) -> Path:
    """Queries that are copies of their documents: any encoder must rank the copy first."""
    docs = {f"d{i}": t for i, t in enumerate(random_texts(40, seed=3, min_words=8))}
    queries = {f"q{i}": docs[f"d{i}"] for i in range(0, 40, 2)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(0, 40, 2)}
    return write_beir_folder(tmp_path / "copies", docs, queries, qrels)


def test_dense_pipeline_finds_exact_copies(tiny_llama: Path, copy_dataset: Path, tmp_path: Path) -> None:
    encoder = DenseEncoder(load_backbone(str(tiny_llama)), EncoderSettings(model=str(tiny_llama), query_max_length=128), "cpu")
    result = evaluate_retriever(DenseRetriever(encoder, progress=False), load_dataset(copy_dataset), tmp_path / "out", k=10)
    assert result.evaluation.aggregate["nDCG@10"] == pytest.approx(1.0)
    run = read_run(tmp_path / "out" / "run.trec")
    assert all(len(docs) == 10 for docs in run.values())
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["aggregate"]["RR@10"] == pytest.approx(1.0) and len(metrics["per_query"]["AP"]) == 20
    settings = json.loads((tmp_path / "out" / "settings.json").read_text())
    assert settings["pooling"] == "last" and settings["append_eos"] is True


def test_cli_stages_agree_with_one_shot_evaluate(tiny_llama: Path, copy_dataset: Path, tmp_path: Path) -> None:
    common = ["--model", str(tiny_llama), "--query-max-length", "128"]
    assert main(["evaluate", "--retriever", "dense", "--data", str(copy_dataset), "--out", str(tmp_path / "one"),
                 "--k", "5", *common]) == 0
    assert main(["encode", "--data", str(copy_dataset), "--out", str(tmp_path / "emb"), "--shard-size", "7", *common]) == 0
    assert len(list((tmp_path / "emb" / "corpus").glob("shard-*.npy"))) == 6
    assert main(["search", "--corpus", str(tmp_path / "emb" / "corpus"), "--queries", str(tmp_path / "emb" / "queries"),
                 "--out", str(tmp_path / "staged.trec"), "--k", "5"]) == 0
    staged, one = read_run(tmp_path / "staged.trec"), read_run(tmp_path / "one" / "run.trec")
    assert staged.keys() == one.keys()
    for qid in one:
        assert list(staged[qid]) == list(one[qid])
        np.testing.assert_allclose(list(staged[qid].values()), list(one[qid].values()), atol=1e-5)
    assert main(["evaluate", "--run", str(tmp_path / "staged.trec"), "--qrels", str(copy_dataset / "qrels" / "test.tsv"),
                 "--out", str(tmp_path / "scored")]) == 0
    assert json.loads((tmp_path / "scored" / "metrics.json").read_text())["aggregate"]["nDCG@10"] == pytest.approx(1.0)


class CountingEncoder:
    """A real encoder that counts the passages it encodes (to see what resume skips)."""

    def __init__(self, encoder: DenseEncoder) -> None:
        self.encoder, self.encoded = encoder, 0

    def encode_passages(self, texts: list[str], **kwargs: object) -> np.ndarray:
        self.encoded += len(texts)
        return self.encoder.encode_passages(texts)


def test_encoding_resumes_from_finished_shards(tiny_llama: Path, tmp_path: Path) -> None:
    corpus = Corpus.from_documents([Document(f"d{i}", t) for i, t in enumerate(random_texts(25, seed=5))])
    encoder = CountingEncoder(DenseEncoder(load_backbone(str(tiny_llama)), EncoderSettings(model=str(tiny_llama)), "cpu"))
    folder = tmp_path / "emb"
    encode_corpus(encoder, corpus, folder, shard_size=10, signature={"m": 1}, progress=False)
    assert encoder.encoded == 25
    full = DenseIndex.from_shards(EmbeddingShards(folder))
    (folder / "shard-00001.npy").unlink()  # as if killed while writing the second shard
    encode_corpus(encoder, corpus, folder, shard_size=10, signature={"m": 1}, progress=False)
    assert encoder.encoded == 25 + 10
    again = DenseIndex.from_shards(EmbeddingShards(folder))
    assert again.ids == full.ids
    with pytest.raises(ValueError, match="made with other settings"):
        encode_corpus(encoder, corpus, folder, shard_size=10, signature={"m": 2}, progress=False)


def test_stored_vectors_survive_a_new_setting_that_is_off(tiny_llama: Path, tmp_path: Path) -> None:
    """Shards written before a setting existed (their signature lacks it) are reused while the setting is
    off, and re-encoded once it is on: the older encoder behaved as the setting's off state."""
    corpus = Corpus.from_documents([Document(f"d{i}", t) for i, t in enumerate(random_texts(12, seed=6))])
    dense = DenseEncoder(load_backbone(str(tiny_llama)), EncoderSettings(model=str(tiny_llama)), "cpu")
    encoder, folder, signature = CountingEncoder(dense), tmp_path / "emb", dense.signature()
    off = sorted(k for k, v in signature.items() if v is False or v is None)
    assert off, "the signature has settings that are off"
    encode_corpus(encoder, corpus, folder, signature=signature, progress=False)
    meta = json.loads((folder / "meta.json").read_text())
    meta["signature"] = {k: v for k, v in meta["signature"].items() if k not in off}  # as an older llmret wrote it
    (folder / "meta.json").write_text(json.dumps(meta))
    encode_corpus(encoder, corpus, folder, signature=signature, progress=False, replace_stale=True)
    assert encoder.encoded == 12
    encode_corpus(encoder, corpus, folder, signature={**signature, off[0]: True}, progress=False, replace_stale=True)
    assert encoder.encoded == 24
    with pytest.raises(ValueError, match="made with other settings"):  # a setting missing but on: not the same space
        encode_corpus(encoder, corpus, folder, signature={**signature, off[0]: True, "new_setting": "on"},
                      progress=False)


def test_dense_index_save_load_and_approximate(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((500, 16)).astype(np.float32)
    ids = [f"d{i}" for i in range(500)]
    exact = DenseIndex(16)
    exact.add(ids, vectors)
    exact.save(tmp_path / "idx")
    loaded = DenseIndex.load(tmp_path / "idx")
    s1, r1 = exact.search(vectors[:5], 3)
    s2, r2 = loaded.search(vectors[:5], 3)
    assert r1 == r2 and np.allclose(s1, s2)
    hnsw = DenseIndex(16, "HNSW32")
    hnsw.add(ids, vectors)
    assert hnsw.search(vectors[:5], 1)[1] == [r[:1] for r in r1]


def test_bm25_on_scifact_matches_pyserini(tmp_path: Path) -> None:
    result = evaluate_retriever(BM25Retriever(k1=0.9, b=0.4), load_dataset(SCIFACT, "test"), tmp_path)
    assert abs(100 * result.evaluation.aggregate["nDCG@10"] - 67.89) < 1.0  # Pyserini 2CR, flat index


def test_cli_reports_bad_input_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_beir_folder(tmp_path / "bad", {"d1": "x"}, {"q1": "y"}, {"q1": {"d1": 1}})
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n{"_id": "d1", "text": "z"}\n')
    assert main(["evaluate", "--retriever", "bm25", "--data", str(folder), "--out", str(tmp_path / "o")]) == 2
    assert "corpus.jsonl:2: duplicate document id 'd1'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_unknown_model_name_is_a_clear_error(copy_dataset: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--retriever", "dense", "--model", "no-such-model-x", "--data", str(copy_dataset),
                 "--out", str(tmp_path / "o")]) == 2
    assert "'no-such-model-x' is not a zoo model (smollm2-135m" in capsys.readouterr().err
