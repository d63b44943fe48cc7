"""Retrievers index a corpus and return a run for a set of queries: BM25, dense and sparse (mirrors)."""

from llmret.retrievers.base import Retriever
from llmret.retrievers.bm25 import BM25Retriever
from llmret.retrievers.dense import DenseRetriever
from llmret.retrievers.sparse import SparseRetriever

__all__ = ["BM25Retriever", "DenseRetriever", "Retriever", "SparseRetriever"]
