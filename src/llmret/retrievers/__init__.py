"""Retrievers index a corpus and return a run for a set of queries: BM25, dense (sparse mirrors dense)."""

from llmret.retrievers.base import Retriever
from llmret.retrievers.bm25 import BM25Retriever
from llmret.retrievers.dense import DenseRetriever

__all__ = ["BM25Retriever", "DenseRetriever", "Retriever"]
