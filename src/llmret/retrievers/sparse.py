"""Sparse retrieval: corpus term weights in an exact inverted index or in Seismic (approximate)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import scipy.sparse as sp

from llmret.encoders.sparse import SparseEncoder
from llmret.index.shards import EmbeddingShards
from llmret.index.sparse import SeismicSettings, SeismicSparseIndex, SparseIndex
from llmret.index.sparsity import Sparsity, TermCounts, sparsity
from llmret.retrievers.encoded import EncoderRetriever
from llmret.util.errors import InputError

SPARSE_INDEXES = ("exact", "seismic")


class SparseRetriever(EncoderRetriever):
    name = "sparse"

    def __init__(self, encoder: SparseEncoder, work_dir: str | Path | None = None, index: str = "exact",
                 seismic: SeismicSettings | None = None, **kwargs: object) -> None:
        if index not in SPARSE_INDEXES:
            raise InputError(f"sparse index must be one of {', '.join(SPARSE_INDEXES)}, not '{index}'")
        super().__init__(encoder, work_dir, **kwargs)  # type: ignore[arg-type]
        self.kind = index
        self.seismic = seismic or SeismicSettings()
        self.document_terms: TermCounts | None = None
        self.query_terms: TermCounts | None = None

    def build_index(self, shards: EmbeddingShards) -> SparseIndex | SeismicSparseIndex:
        self.document_terms = TermCounts.of_shards(shards)
        if self.kind == "seismic":
            return SeismicSparseIndex.from_shards(shards, self.seismic)
        return SparseIndex.from_shards(shards)

    def observe_queries(self, vectors: sp.csr_matrix) -> None:
        self.query_terms = TermCounts.of(vectors)

    def sparsity(self) -> Sparsity | None:
        """Index size, non-zeros and FLOPS of the last index() and retrieve()."""
        if self.document_terms is None or self.query_terms is None:
            return None
        return sparsity(self.document_terms, self.query_terms)

    def describe(self) -> dict[str, object]:
        index = {"index": self.kind, **({"seismic": asdict(self.seismic)} if self.kind == "seismic" else {})}
        report = self.sparsity()
        return {"retriever": self.name, **index, **({"sparsity": report.to_json()} if report else {}),
                **self.encoder.signature()}
