"""Retrievers index a corpus and return a run for a set of queries: BM25, dense and sparse (mirrors)."""

from llmret.util.lazy import lazy_exports

__all__ = ["BM25Retriever", "DenseRetriever", "Retriever", "SparseRetriever"]
__getattr__, __dir__ = lazy_exports(__name__, {"BM25Retriever": "bm25", "DenseRetriever": "dense", "Retriever": "base",
                                               "SparseRetriever": "sparse"})
