"""Saved indexes: built, saved, opened in a new process and searched, they give the in-memory run (FAISS Flat
and HNSW, exact sparse, Seismic); a saved index with its query encoder answers text queries as the
one-shot evaluation does; a changed model is refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmret.cli import main
from llmret.data.trec import read_run

from helpers import random_texts, write_beir_folder


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    docs = {f"d{i}": t for i, t in enumerate(random_texts(60, seed=7, min_words=8))}
    queries = {f"q{i}": " ".join(docs[f"d{i}"].split()[:4]) for i in range(0, 60, 4)}
    return write_beir_folder(tmp_path / "data", docs, queries, {q: {f"d{q[1:]}": 1} for q in queries})


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for qid in a:
        assert list(a[qid]) == list(b[qid]), qid
        assert list(a[qid].values()) == pytest.approx(list(b[qid].values()), rel=1e-5)


@pytest.mark.parametrize("retriever,how", [("dense", "Flat"), ("dense", "HNSW32"), ("sparse", "exact"),
                                           ("sparse", "seismic")])
def test_saved_index_opened_elsewhere_searches_as_in_memory(tiny_bert: Path, dataset: Path, tmp_path: Path,
                                                            retriever: str, how: str) -> None:
    emb = tmp_path / "emb"
    assert main(["encode", "--retriever", retriever, "--data", str(dataset), "--model", str(tiny_bert),
                 "--out", str(emb), "--shard-size", "25"]) == 0
    memory = tmp_path / "memory.trec"
    assert main(["search", "--corpus", str(emb / "corpus"), "--queries", str(emb / "queries"), "--index", how,
                 "--out", str(memory), "--k", "10"]) == 0
    assert main(["index", "--embeddings", str(emb / "corpus"), "--index", how, "--out", str(tmp_path / "idx")]) == 0
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert meta["documents"] == 60 and meta["encoder"]["model"] == str(tiny_bert)
    assert meta["kind"] == ("faiss" if retriever == "dense" else how)
    opened = tmp_path / "opened.trec"
    done = subprocess.run([sys.executable, "-m", "llmret.cli", "search", "--index-dir", str(tmp_path / "idx"),
                           "--queries", str(emb / "queries"), "--out", str(opened), "--k", "10"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    _same(read_run(opened), read_run(memory))


def test_searcher_encodes_text_queries_as_the_index_was_built(tiny_bert: Path, dataset: Path, tmp_path: Path) -> None:
    from llmret.retrievers.searcher import Searcher

    assert main(["evaluate", "--retriever", "dense", "--data", str(dataset), "--model", str(tiny_bert), "--k", "10",
                 "--out", str(tmp_path / "eval")]) == 0
    emb = tmp_path / "emb"
    assert main(["encode", "--data", str(dataset), "--model", str(tiny_bert), "--out", str(emb), "--what", "corpus"]) == 0
    assert main(["index", "--embeddings", str(emb / "corpus"), "--out", str(tmp_path / "idx")]) == 0
    assert main(["search", "--index-dir", str(tmp_path / "idx"), "--data", str(dataset), "--k", "10",
                 "--out", str(tmp_path / "text.trec")]) == 0
    _same(read_run(tmp_path / "text.trec"), read_run(tmp_path / "eval" / "run.trec"))

    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    meta["encoder"]["weights"] = "0" * 64  # as if the model had been retrained since
    (tmp_path / "idx" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match="differs from the one the index was built with \\(weights\\)"):
        Searcher.open(tmp_path / "idx")
