"""Dense retrieval: corpus vectors in FAISS (exact inner product by default, any index_factory string)."""

from __future__ import annotations

from pathlib import Path

from llmret.encoders.dense import DenseEncoder
from llmret.index.dense import DenseIndex
from llmret.index.shards import EmbeddingShards
from llmret.retrievers.encoded import EncoderRetriever


class DenseRetriever(EncoderRetriever):
    name = "dense"

    def __init__(self, encoder: DenseEncoder, work_dir: str | Path | None = None, factory: str = "Flat",
                 **kwargs: object) -> None:
        super().__init__(encoder, work_dir, **kwargs)  # type: ignore[arg-type]
        self.factory = factory

    def build_index(self, shards: EmbeddingShards) -> DenseIndex:
        return DenseIndex.from_shards(shards, self.factory)

    def describe(self) -> dict[str, object]:
        return {"retriever": self.name, "index": self.factory, **self.encoder.signature()}
