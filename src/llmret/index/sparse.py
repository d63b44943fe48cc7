"""Sparse indexes: an exact inverted index (the reference) and Seismic (approximate, much faster).

Both take sparse vectors as CSR matrices over the vocabulary (rows: documents or queries) and return,
per query, document ids with inner-product scores, best first. Documents sharing no term with a query
score 0 and are not returned, as in any inverted index.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from llmret.index.shards import Shards
from llmret.util.errors import DataError, InputError
from llmret.util.fileio import atomic_write, read_ids, write_ids

Hits = tuple[list[np.ndarray], list[list[str]]]  # per query: scores, and document ids in the same order


def _shard_rows(shards: Shards) -> tuple[list[str], list[sp.csr_matrix]]:
    ids: list[str] = []
    parts: list[sp.csr_matrix] = []
    for shard_ids, vectors in shards:
        if not sp.issparse(vectors):
            raise DataError(shards.folder, None, "these are dense embeddings; search them with a dense index")
        ids.extend(shard_ids)
        parts.append(sp.csr_matrix(vectors, dtype=np.float32))
    if not parts:
        raise DataError(shards.folder, None, "no embeddings found")
    return ids, parts


def top_k_rows(scores: sp.csr_matrix, k: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per row of a sparse score matrix, the columns of its ``k`` largest entries and their scores."""
    columns, values = [], []
    for row in range(scores.shape[0]):
        lo, hi = scores.indptr[row], scores.indptr[row + 1]
        data, cols = scores.data[lo:hi], scores.indices[lo:hi]
        keep = data > 0
        data, cols = data[keep], cols[keep]
        if len(data) > k:
            part = np.argpartition(-data, k - 1)[:k]
            data, cols = data[part], cols[part]
        order = np.lexsort((cols, -data))  # ties broken by column, so runs are deterministic
        columns.append(cols[order])
        values.append(data[order])
    return columns, values


class SparseIndex:
    """Exact inverted index: one posting list per vocabulary term (a CSR matrix of terms x documents).

    Scoring a query walks the posting lists of its terms only and accumulates products, which is
    what scipy's sparse-sparse product does row by row (Gustavson's algorithm); it is exact and is
    the reference the approximate index is measured against.
    """

    def __init__(self, ids: list[str], vectors: sp.csr_matrix) -> None:
        if vectors.shape[0] != len(ids):
            raise InputError(f"{len(ids)} ids for {vectors.shape[0]} vectors")
        self.ids = ids
        self.postings = sp.csr_matrix(vectors.T, dtype=np.float32)  # [vocab, docs]
        self.postings.sort_indices()

    @classmethod
    def from_shards(cls, shards: Shards) -> SparseIndex:
        ids, parts = _shard_rows(shards)
        return cls(ids, sp.vstack(parts, format="csr"))

    @property
    def dim(self) -> int:
        return int(self.postings.shape[0])

    def search(self, queries: sp.csr_matrix, k: int, batch: int = 256) -> Hits:
        """Top ``k`` documents per query (fewer where fewer documents share a term with it)."""
        queries = sp.csr_matrix(queries, dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise InputError(f"queries have {queries.shape[1]} dimensions, the index {self.dim}")
        scores: list[np.ndarray] = []
        ids: list[list[str]] = []
        for start in range(0, queries.shape[0], batch):
            columns, values = top_k_rows(queries[start:start + batch] @ self.postings, k)
            scores.extend(values)
            ids.extend([self.ids[c] for c in cols] for cols in columns)
        return scores, ids

    def params(self) -> dict[str, object]:
        return {}

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_write(folder / "postings.npz", "wb") as handle:
            sp.save_npz(handle, self.postings)
        write_ids(folder / "index.ids", self.ids)

    @classmethod
    def load(cls, folder: str | Path) -> SparseIndex:
        folder = Path(folder)
        index = cls.__new__(cls)
        index.postings = sp.load_npz(folder / "postings.npz").tocsr()
        index.ids = read_ids(folder / "index.ids")
        if len(index.ids) != index.postings.shape[1]:
            raise DataError(folder / "index.ids", None, f"{len(index.ids)} ids for {index.postings.shape[1]} documents")
        return index


@dataclass
class SeismicSettings:
    """Seismic's knobs (see its guidelines); the defaults favour recall on corpora up to a few million."""

    n_postings: int = 3500  # documents kept per posting list, on average
    centroid_fraction: float = 0.1  # clusters per posting list, as a fraction of n_postings
    summary_energy: float = 0.4  # share of a cluster summary's L1 mass kept
    query_cut: int = 20  # a query's largest terms that are searched
    heap_factor: float = 0.7  # a cluster is skipped when its summary bound is below this x the k-th score
    threads: int = 0  # 0: all cores


def _components(row: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """A sparse query row as Seismic's (term strings, float32 weights): terms are vocabulary ids as text."""
    from seismic import get_seismic_string

    return row.indices.astype(str).astype(get_seismic_string()), row.data.astype(np.float32)


class SeismicSparseIndex:
    """Approximate search through Seismic (``pyseismic-lsr``): clustered, summarised posting lists."""

    def __init__(self, ids: list[str], vectors: sp.csr_matrix, settings: SeismicSettings | None = None) -> None:
        from seismic import SeismicDataset, SeismicIndex

        self.settings = settings or SeismicSettings()
        self.dim = int(vectors.shape[1])
        vectors = sp.csr_matrix(vectors, dtype=np.float32)
        vectors.sort_indices()  # Seismic wants increasing components within a row
        dataset = SeismicDataset(dim=self.dim)
        # Term ids go in as they are, in CSR layout; queries then name term 42 as "42".
        dataset.add_documents_by_id(list(ids), vectors.indices.astype(np.int64), vectors.data,
                                    vectors.indptr.astype(np.int64))
        s = self.settings
        self.index = SeismicIndex.build_from_dataset(
            dataset, n_postings=s.n_postings, centroid_fraction=s.centroid_fraction,
            summary_energy=s.summary_energy, num_threads=s.threads)

    def params(self) -> dict[str, object]:
        return asdict(self.settings)

    def save(self, folder: str | Path) -> None:
        """Seismic's own binary file (``index.index.seismic``) and the dimension; write into a fresh folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.index.save(str(folder / "index"))

    @classmethod
    def load(cls, folder: str | Path, settings: SeismicSettings | None = None, dim: int = 0) -> SeismicSparseIndex:
        from seismic import SeismicIndex

        index = cls.__new__(cls)
        index.settings, index.dim = settings or SeismicSettings(), dim
        index.index = SeismicIndex.load(str(Path(folder) / "index.index.seismic"))
        return index

    @classmethod
    def from_shards(cls, shards: Shards, settings: SeismicSettings | None = None) -> SeismicSparseIndex:
        ids, parts = _shard_rows(shards)
        return cls(ids, sp.vstack(parts, format="csr"), settings)

    def search(self, queries: sp.csr_matrix, k: int) -> Hits:
        queries = sp.csr_matrix(queries, dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise InputError(f"queries have {queries.shape[1]} dimensions, the index {self.dim}")
        parts = [_components(queries[i]) for i in range(queries.shape[0])]
        names = np.array([str(i) for i in range(len(parts))]).astype(parts[0][0].dtype) if parts else np.array([])
        s = self.settings
        results = self.index.batch_search(names, [p[0] for p in parts], [p[1] for p in parts], k=k,
                                          query_cut=s.query_cut, heap_factor=s.heap_factor, num_threads=s.threads)
        # Results come back in completion order (threads), not query order: place them by query id.
        scores = [np.zeros(0, dtype=np.float32)] * len(parts)
        ids: list[list[str]] = [[] for _ in parts]
        for hits in results:
            if hits:
                row = int(hits[0][0])
                scores[row] = np.array([score for _, score, _ in hits], dtype=np.float32)
                ids[row] = [doc for _, _, doc in hits]
        return scores, ids
