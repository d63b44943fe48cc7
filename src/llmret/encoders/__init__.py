"""Encoders turn text into vectors: dense (pooled hidden states); sparse encoders mirror this interface."""

from llmret.encoders.dense import DenseEncoder
from llmret.encoders.pooling import pool

__all__ = ["DenseEncoder", "pool"]
