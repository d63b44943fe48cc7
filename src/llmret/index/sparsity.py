"""How sparse a sparse index is, in the terms a sparse index's speed depends on.

- postings: the index's size, the number of non-zero (term, document) weights;
- average non-zero terms per passage and per query;
- FLOPS (Paria et al., 2020; the regulariser SPLADE trains with, measured here): the expected number
  of multiplications in one query-document product, the sum over terms of P(a query has the term) x
  P(a document has it). Times the corpus size it is the expected work of one exhaustive query.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from llmret.util.errors import DataError, InputError
from llmret.util.fileio import atomic_write


@dataclass
class TermCounts:
    """Per term, in how many rows it is non-zero; and the number of rows."""

    rows: int
    per_term: np.ndarray

    @classmethod
    def of(cls, vectors: sp.csr_matrix, width: int | None = None) -> TermCounts:
        return cls(vectors.shape[0], np.bincount(vectors.indices, minlength=width or vectors.shape[1]))

    @classmethod
    def of_shards(cls, shards: Iterable[tuple[list[str], sp.csr_matrix]]) -> TermCounts | None:
        """Counts over every shard of an encoded folder (None for no shard)."""
        total = None
        for _, vectors in shards:
            if not sp.issparse(vectors):
                raise InputError("these are dense embeddings: sparsity is a sparse index's measure")
            counts = cls.of(vectors)
            total = counts if total is None else total + counts
        return total

    def __add__(self, other: TermCounts) -> TermCounts:
        return TermCounts(self.rows + other.rows, self.per_term + other.per_term)

    def save(self, path: Path) -> None:
        """As ``.npy``: the row count first, then the per-term counts (plain numpy for outside tools)."""
        with atomic_write(path, "wb") as handle:
            np.save(handle, np.concatenate([[self.rows], self.per_term]).astype(np.int64))

    @classmethod
    def load(cls, path: Path) -> TermCounts:
        data = np.load(path)
        if data.ndim != 1 or data.size < 2 or data[0] < 0:
            raise DataError(path, None, "not a term-count file (row count, then one count per term)")
        return cls(int(data[0]), data[1:])


@dataclass
class Sparsity:
    postings: int
    passage_nonzero: float
    query_nonzero: float
    flops: float  # expected multiplications per query-document pair
    flops_per_query: float  # ... over the whole corpus

    def to_json(self) -> dict[str, float]:
        return asdict(self)


def sparsity(documents: TermCounts, queries: TermCounts) -> Sparsity:
    postings = int(documents.per_term.sum())
    p_doc = documents.per_term / max(documents.rows, 1)
    p_query = queries.per_term / max(queries.rows, 1)
    flops = float((p_doc * p_query).sum())
    return Sparsity(postings, postings / max(documents.rows, 1), float(queries.per_term.sum()) / max(queries.rows, 1),
                    flops, flops * documents.rows)

