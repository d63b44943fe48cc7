"""Dense index over FAISS: exact inner product by default, any ``index_factory`` string if asked.

FAISS on GPU when present: with a GPU build of FAISS (``pip install faiss-gpu-cu12`` in place of
``faiss-cpu``) and a visible GPU, searches run on a copy of the index sharded over every GPU, as llmret
uses the GPU for encoding whenever torch sees one; ``LLMRET_FAISS_GPU=0`` keeps them on the CPU. Index
types FAISS cannot move (HNSW) stay on the CPU. The CPU index is what is built and saved.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from llmret.index.shards import Shards
from llmret.util.errors import DataError, InputError
from llmret.util.fileio import atomic_write, read_ids, write_ids

log = logging.getLogger(__name__)


def faiss_gpus() -> int:
    """GPUs FAISS can search on: 0 with faiss-cpu, without a GPU, or with ``LLMRET_FAISS_GPU=0``."""
    if os.environ.get("LLMRET_FAISS_GPU", "1") == "0" or not hasattr(faiss, "index_cpu_to_all_gpus"):
        return 0
    return int(faiss.get_num_gpus())


def to_gpus(index: Any) -> Any | None:
    """A copy of ``index`` sharded over every GPU, or None where FAISS cannot move this index type."""
    options = faiss.GpuMultipleClonerOptions()
    options.shard = True  # each GPU holds a part of the vectors; results are merged by FAISS
    try:
        return faiss.index_cpu_to_all_gpus(index, co=options)
    except RuntimeError as exc:  # e.g. HNSW has no GPU implementation
        log.info("searching on the CPU: FAISS cannot move this index to GPUs (%s)", str(exc).splitlines()[0])
        return None


def make_faiss_index(dim: int, factory: str) -> Any:
    """FAISS's inner-product index for a factory string; a string FAISS cannot read (or one that does not
    fit ``dim``) is an InputError naming it, not FAISS's C++ traceback."""
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "not a factory string"
        raise InputError(f"FAISS cannot make an index '{factory}' for {dim}-dimensional vectors: {reason} "
                         "(see FAISS's index_factory: Flat, HNSW32, IVF1024,Flat, IVF1024,PQ48 ...)") from None


def check_factory(factory: str) -> None:
    """Refuse a factory string FAISS cannot read before any encoding: tried on a dimension that every
    usual sub-quantizer count divides (the real dimension is checked again when the index is made)."""
    make_faiss_index(3840, factory)


class DenseIndex:
    """Vectors and their ids in a FAISS inner-product index.

    ``factory`` is FAISS's own description string: ``Flat`` (exact, the default), ``HNSW32``,
    ``IVF4096,Flat`` ... so that approximate indexes need no code here.
    """

    def __init__(self, dim: int, factory: str = "Flat") -> None:
        self.dim = dim
        self.factory = factory
        self.index = make_faiss_index(dim, factory)
        self.ids: list[str] = []
        self._gpu: Any | None = None  # the GPU copy searches use, made at the first search after a change

    def add(self, ids: list[str], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise InputError(f"expected {len(ids)} vectors of dimension {self.dim}, got {vectors.shape}")
        if not self.index.is_trained:
            self.index.train(vectors)
        self.index.add(vectors)
        self.ids.extend(ids)
        self._gpu = None

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
        if self._gpu is None and faiss_gpus():
            self._gpu = to_gpus(self.index) or False
        searcher = self._gpu or self.index
        scores, rows = searcher.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, [[self.ids[r] for r in row if r >= 0] for row in rows]

    def set_parameter(self, name: str, value: float) -> None:
        """A FAISS search parameter (``efSearch``, ``nprobe`` ...) for the searches that follow."""
        faiss.ParameterSpace().set_index_parameter(self.index, name, value)
        self._gpu = None  # copied again, with the parameter, at the next search

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
        index.index, index.dim, index.factory, index._gpu = raw, raw.d, factory, None
        index.ids = read_ids(folder / "index.ids")
        if len(index.ids) != raw.ntotal:
            raise DataError(folder / "index.ids", None, f"{len(index.ids)} ids for {raw.ntotal} vectors")
        return index
