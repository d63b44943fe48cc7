"""Indexes: dense (FAISS) and sparse (an exact inverted index, Seismic), over encoded shards."""

from llmret.util.lazy import lazy_exports

__all__ = ["DenseIndex", "EmbeddingShards", "encode_corpus"]
__getattr__, __dir__ = lazy_exports(__name__, {"DenseIndex": "dense", "EmbeddingShards": "shards",
                                               "encode_corpus": "shards"})
