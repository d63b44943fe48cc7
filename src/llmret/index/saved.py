"""Indexes saved to a folder, opened later and searched with the query encoder they were built with.

A folder holds the index's own files and ``meta.json``: the kind (``faiss``, ``exact``, ``seismic``),
its parameters (FAISS factory string, Seismic's knobs), the number of documents, and the signature of
the encoder that made the corpus vectors (model, every setting, the weights' fingerprint).
:class:`llmret.retrievers.searcher.Searcher` opens the index with that encoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llmret.data.trec import Run
from llmret.index.dense import DenseIndex
from llmret.index.shards import EmbeddingShards, Shards, encoder_signature, open_shards, signature_differences
from llmret.index.sparse import SeismicSettings, SeismicSparseIndex, SparseIndex
from llmret.index.sparsity import Sparsity, TermCounts, sparsity
from llmret.util.errors import DataError, InputError
from llmret.util.fileio import atomic_dir, check_output, read_json, write_json

Index = DenseIndex | SparseIndex | SeismicSparseIndex
SPARSE_KINDS = ("exact", "seismic")


def build(shards: Shards, how: str | None = None) -> tuple[str, Index]:
    """(kind, index) over encoded shards: ``how`` is ``exact`` or ``seismic`` for sparse vectors and a
    FAISS factory string for dense ones (default exact search either way)."""
    sparse = shards.signature().get("retriever") == "sparse"  # the signature says which index fits
    if sparse:
        if how not in (None, *SPARSE_KINDS):
            raise InputError(f"sparse embeddings take --index exact or seismic, not {how}")
        if how == "seismic":
            return "seismic", SeismicSparseIndex.from_shards(shards)
        return "exact", SparseIndex.from_shards(shards)
    if how in SPARSE_KINDS:
        raise InputError(f"{shards.folder}: dense embeddings take a FAISS factory string (Flat, HNSW32 ...), not {how}")
    return "faiss", DenseIndex.from_shards(shards, how or "Flat")


TERMS_FILE = "terms.npy"


def save(index: Index, kind: str, folder: str | Path, signature: dict[str, Any], documents: int,
         terms: TermCounts | None = None) -> Path:
    """Write ``index`` and its meta.json into ``folder`` as one atomic step (a reader never sees half).

    A sparse index also keeps its per-term document counts (``terms.npy``): Seismic's files do not
    give them back, and with them the index's FLOPS against any query set is known without the corpus.
    """
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        index.save(tmp)
        meta = {"kind": kind, "params": index.params(), "documents": documents, "dim": int(index.dim),
                "encoder": signature}
        if terms is not None:
            terms.save(tmp / TERMS_FILE)
            postings = int(terms.per_term.sum())
            meta["sparsity"] = {"postings": postings, "passage_nonzero": postings / max(terms.rows, 1)}
        write_json(tmp / "meta.json", meta)
    return folder


def build_and_save(embeddings: list[str | Path], out: str | Path, how: str | None = None) -> str:
    """Index corpus shard folders (the parts of one corpus) and save the index with its encoder's signature,
    and for a sparse one its term counts; returns the index's kind."""
    check_output(out)
    shards = open_shards(embeddings)
    kind, index = build(shards, how)
    terms = TermCounts.of_shards(shards) if kind in SPARSE_KINDS else None
    save(index, kind, out, shards.signature(), sum(len(ids) for ids, _ in shards), terms)
    return kind


def document_terms(folder: str | Path) -> TermCounts:
    """The per-term document counts a sparse index was saved with."""
    path = Path(folder) / TERMS_FILE
    if not path.is_file():
        raise DataError(path, None, "missing: a sparse index saved by llmret index has it (dense indexes have none)")
    return TermCounts.load(path)


def open_index(folder: str | Path) -> tuple[Index, dict[str, Any]]:
    """The index saved in ``folder`` and its meta.json."""
    folder = Path(folder)
    meta = read_json(folder / "meta.json")
    meta["encoder"] = encoder_signature(meta)
    kind, params = meta.get("kind"), meta.get("params", {})
    if kind == "faiss":
        return DenseIndex.load(folder, params.get("factory", "Flat")), meta
    if kind == "exact":
        return SparseIndex.load(folder), meta
    if kind == "seismic":
        return SeismicSparseIndex.load(folder, SeismicSettings(**params), int(meta.get("dim", 0))), meta
    raise DataError(folder / "meta.json", None, f"unknown index kind {kind!r} (faiss, exact or seismic)")


def to_run(qids: list[str], scores: Any, ids: list[list[str]]) -> Run:
    return {q: dict(zip(row_ids, map(float, row_scores))) for q, row_ids, row_scores in zip(qids, ids, scores)}


def search_all(indexes: list[Index], vectors: Any, k: int) -> tuple[list[np.ndarray], list[list[str]]]:
    """The exact top ``k`` of each query over several indexes (the shards of one corpus): each index's
    own top ``k``, concatenated in index order and stably sorted by score, so that ties keep the order
    one index over the parts in that order gives (documents in corpus order)."""
    answers = [index.search(vectors, k) for index in indexes]
    if len(answers) == 1:
        return answers[0]
    scores_out, ids_out = [], []
    for row in range(len(answers[0][1])):
        ids = [doc for _, found in answers for doc in found[row]]
        scores = np.concatenate([np.asarray(got[row], dtype=np.float64)[:len(found[row])] for got, found in answers])
        order = np.argsort(-scores, kind="stable")[:k]
        scores_out.append(scores[order])
        ids_out.append([ids[i] for i in order])
    return scores_out, ids_out


def search_encoded(queries: str | Path, k: int, *, index_dirs: list[str | Path] | None = None,
                   corpus: list[str | Path] | None = None, how: str | None = None) -> Run:
    """The top ``k`` of encoded queries (a shard folder) over saved indexes (their top ``k`` merged exactly)
    or over corpus shard folders indexed here (``how``: a FAISS factory string, exact or seismic). Vectors
    of another encoder than the index's are refused before any search."""
    vectors = EmbeddingShards(Path(queries))
    if index_dirs:
        indexes = []
        for folder in index_dirs:
            index, meta = open_index(folder)
            if signature_differences(vectors.signature(), meta["encoder"]):
                raise DataError(Path(queries) / "meta.json", None,
                                f"encoded with other settings or weights than the index in {folder}")
            indexes.append(index)
    elif corpus:
        shards = open_shards(corpus)
        shards.signature()  # parts made by other encoders are refused before any work
        indexes = [build(shards, how)[1]]
    else:
        raise InputError("encoded queries are searched in saved indexes or in corpus shards: give one")
    run: Run = {}
    for qids, part in vectors:
        run.update(to_run(qids, *search_all(indexes, part, k)))
    return run


def sparsity_report(*, index_dir: str | Path | None = None, embeddings: str | Path | None = None,
                    queries: str | Path | None = None) -> Sparsity | TermCounts:
    """The sparsity of a saved sparse index or of encoded corpus shards: the passages' term counts, or,
    with encoded ``queries`` (made by the same encoder), the full report with FLOPS."""
    if index_dir is not None:
        documents = document_terms(index_dir)
        signature = encoder_signature(read_json(Path(index_dir) / "meta.json"))
    elif embeddings is not None:
        corpus = EmbeddingShards(Path(embeddings))
        counts, signature = TermCounts.of_shards(corpus), corpus.signature()
        if counts is None:
            raise DataError(embeddings, None, "no embeddings")
        documents = counts
    else:
        raise DataError(None, None, "a sparsity report reads a saved index or corpus embeddings")
    if queries is None:
        return documents
    encoded = EmbeddingShards(Path(queries))
    if signature_differences(encoded.signature(), signature):
        raise DataError(Path(queries) / "meta.json", None, "encoded with other settings or weights than the "
                                                           "passages: their FLOPS would mean nothing")
    counts = TermCounts.of_shards(encoded)
    if counts is None or counts.per_term.shape != documents.per_term.shape:
        raise DataError(Path(queries) / "meta.json", None, "no query vectors, or another vocabulary width")
    return sparsity(documents, counts)
