"""How sparse a sparse index is, in the terms a sparse index's speed depends on.

- postings: the index's size, the number of non-zero (term, document) weights;
- average non-zero terms per passage and per query;
- FLOPS (Paria et al., 2020; the regulariser SPLADE trains with, measured here): the expected number
  of multiplications in one query-document product, the sum over terms of P(a query has the term) x
  P(a document has it). Times the corpus size it is the expected work of one exhaustive query.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp


@dataclass
class TermCounts:
    """Per term, in how many rows it is non-zero; and the number of rows."""

    rows: int
    per_term: np.ndarray

    @classmethod
    def of(cls, vectors: sp.csr_matrix, width: int | None = None) -> TermCounts:
        return cls(vectors.shape[0], np.bincount(vectors.indices, minlength=width or vectors.shape[1]))

    def __add__(self, other: TermCounts) -> TermCounts:
        return TermCounts(self.rows + other.rows, self.per_term + other.per_term)


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
