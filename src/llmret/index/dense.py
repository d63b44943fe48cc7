"""Dense index over FAISS: exact inner product by default, any ``index_factory`` string if asked."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from llmret.errors import DataError
from llmret.fileio import atomic_write, read_ids, write_ids
from llmret.index.shards import Shards


class DenseIndex:
    """Vectors and their ids in a FAISS inner-product index.

    ``factory`` is FAISS's own description string: ``Flat`` (exact, the default), ``HNSW32``,
    ``IVF4096,Flat`` ... so that approximate indexes need no code here.
    """

    def __init__(self, dim: int, factory: str = "Flat") -> None:
        self.dim = dim
        self.factory = factory
        self.index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
        self.ids: list[str] = []

    def add(self, ids: list[str], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"expected {len(ids)} vectors of dimension {self.dim}, got {vectors.shape}")
        if not self.index.is_trained:
            self.index.train(vectors)
        self.index.add(vectors)
        self.ids.extend(ids)

    @classmethod
    def from_shards(cls, shards: Shards, factory: str = "Flat") -> DenseIndex:
        index: DenseIndex | None = None
        for ids, vectors in shards:
            if not isinstance(vectors, np.ndarray):
                raise DataError(shards.folder, None, "these are sparse embeddings; search them with a sparse index")
            if index is None:
                index = cls(vectors.shape[1], factory)
            index.add(ids, vectors)
        if index is None:
            raise DataError(shards.folder, None, "no embeddings found")
        return index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """Top ``k`` scores [n, k] and document ids per query (fewer where the index is smaller)."""
        k = min(k, len(self.ids))
        scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, [[self.ids[r] for r in row if r >= 0] for row in rows]

    def params(self) -> dict[str, object]:
        return {"factory": self.factory}

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(folder / "index.faiss", "wb") as handle:
            faiss.write_index(self.index, faiss.PyCallbackIOWriter(handle.write))
        write_ids(folder / "index.ids", self.ids)

    @classmethod
    def load(cls, folder: str | Path, factory: str = "Flat") -> DenseIndex:
        """An index saved by :meth:`save`; ``factory`` is what it was built with (kept in meta.json)."""
        folder = Path(folder)
        raw = faiss.read_index(str(folder / "index.faiss"))
        index = cls.__new__(cls)
        index.index, index.dim, index.factory = raw, raw.d, factory
        index.ids = read_ids(folder / "index.ids")
        if len(index.ids) != raw.ntotal:
            raise DataError(folder / "index.ids", None, f"{len(index.ids)} ids for {raw.ntotal} vectors")
        return index
