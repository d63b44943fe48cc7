"""Sparse retrieval: corpus term weights in an exact inverted index or in Seismic (approximate)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from llmret.encoders.sparse import SparseEncoder
from llmret.index.shards import EmbeddingShards
from llmret.index.sparse import SeismicSettings, SeismicSparseIndex, SparseIndex
from llmret.retrievers.encoded import EncoderRetriever

SPARSE_INDEXES = ("exact", "seismic")


class SparseRetriever(EncoderRetriever):
    name = "sparse"

    def __init__(self, encoder: SparseEncoder, work_dir: str | Path | None = None, index: str = "exact",
                 seismic: SeismicSettings | None = None, **kwargs: object) -> None:
        if index not in SPARSE_INDEXES:
            raise ValueError(f"sparse index must be one of {', '.join(SPARSE_INDEXES)}, not '{index}'")
        super().__init__(encoder, work_dir, **kwargs)  # type: ignore[arg-type]
        self.kind = index
        self.seismic = seismic or SeismicSettings()

    def build_index(self, shards: EmbeddingShards) -> SparseIndex | SeismicSparseIndex:
        if self.kind == "seismic":
            return SeismicSparseIndex.from_shards(shards, self.seismic)
        return SparseIndex.from_shards(shards)

    def describe(self) -> dict[str, object]:
        index = {"index": self.kind, **({"seismic": asdict(self.seismic)} if self.kind == "seismic" else {})}
        return {"retriever": self.name, **index, **self.encoder.signature()}
