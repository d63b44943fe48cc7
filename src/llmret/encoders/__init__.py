"""Text to vectors: dense (pooled token states) and learned-sparse (vocabulary term weights)."""

from llmret.util.lazy import lazy_exports

__all__ = ["DenseEncoder", "SparseEncoder", "pool"]
__getattr__, __dir__ = lazy_exports(__name__, {"DenseEncoder": "dense", "SparseEncoder": "sparse", "pool": "pooling"})
