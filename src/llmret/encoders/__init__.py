"""Text to vectors: dense (pooled token states) and learned-sparse (vocabulary term weights)."""

from llmret.encoders.dense import DenseEncoder
from llmret.encoders.pooling import pool
from llmret.encoders.sparse import SparseEncoder

__all__ = ["DenseEncoder", "SparseEncoder", "pool"]
