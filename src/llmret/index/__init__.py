"""Indexes: dense (FAISS); the sparse inverted index mirrors this interface."""

from llmret.index.dense import DenseIndex
from llmret.index.shards import EmbeddingShards, encode_corpus

__all__ = ["DenseIndex", "EmbeddingShards", "encode_corpus"]
