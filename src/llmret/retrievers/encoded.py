"""Retrieval with an encoder: encode the corpus into shards, index them, search with encoded queries.

Dense and sparse retrieval differ only in the encoder and the index, so both are this class with
another :meth:`build_index`; everything else (resumable shards, runs, recorded settings) is shared.
"""

from __future__ import annotations

import tempfile
from abc import abstractmethod
from pathlib import Path
from typing import Any, Protocol

from llmret.data.corpus import Corpus
from llmret.data.trec import Run
from llmret.encoders.base import TextEncoder
from llmret.index.shards import SHARD_SIZE, EmbeddingShards, encode_corpus
from llmret.retrievers.base import Retriever


class VectorIndex(Protocol):
    def search(self, queries: Any, k: int) -> tuple[Any, list[list[str]]]: ...


class EncoderRetriever(Retriever):
    """Bi-encoder retrieval. With ``work_dir`` the corpus encodings persist as shards there, so a rerun
    (or a killed run) reuses every shard already encoded."""

    def __init__(self, encoder: TextEncoder, work_dir: str | Path | None = None, shard_size: int = SHARD_SIZE,
                 progress: bool = True) -> None:
        self.encoder, self.shard_size, self.progress = encoder, shard_size, progress
        self.work_dir = Path(work_dir) if work_dir else None
        self.vector_index: VectorIndex | None = None
        self.passages_truncated = self.queries_truncated = 0

    def truncation(self) -> dict[str, int]:
        """Texts cut at the encoder's maximum lengths in the last index() and retrieve()."""
        return {"queries": self.queries_truncated, "passages": self.passages_truncated}

    @abstractmethod
    def build_index(self, shards: EmbeddingShards) -> VectorIndex:
        """An index over the encoded corpus."""

    def index(self, corpus: Corpus) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.work_dir / "embeddings" if self.work_dir else Path(tmp)
            shards = encode_corpus(self.encoder, corpus, folder, shard_size=self.shard_size,
                                   signature=self.encoder.signature(), progress=self.progress, replace_stale=True)
            self.passages_truncated = shards.truncated()
            self.vector_index = self.build_index(shards)

    def observe_queries(self, vectors: Any) -> None:
        """See the encoded queries of a retrieve() (the sparse retriever counts their terms)."""

    def retrieve(self, queries: dict[str, str], k: int = 1000) -> Run:
        if self.vector_index is None:
            raise RuntimeError("call index(corpus) before retrieve()")
        qids = list(queries)
        before = self.encoder.truncated["queries"]
        vectors = self.encoder.encode_queries([queries[q] for q in qids], progress=self.progress)
        self.queries_truncated = self.encoder.truncated["queries"] - before
        self.observe_queries(vectors)
        scores, ids = self.vector_index.search(vectors, k)
        return {qid: dict(zip(row_ids, map(float, row_scores))) for qid, row_ids, row_scores in zip(qids, ids, scores)}
