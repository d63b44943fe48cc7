"""InfoNCE with in-batch negatives plus each query's own group of hard negatives.

Passages arrive grouped: for query i, rows ``i*G .. i*G+G-1`` hold its positive first and then its
``G-1`` hard negatives. Every other passage in the batch is a negative for it too (in-batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmret.util.errors import InputError


class InfoNCELoss(torch.nn.Module):
    """Cross-entropy over scaled similarities; the positive of query i sits at column ``i * group_size``.

    ``similarity="cos"`` normalises inside the loss (useful when the encoder does not); ``"dot"``
    uses the vectors as they come (cosine when the encoder L2-normalises, as llmret's do by default).
    """

    def __init__(self, temperature: float = 0.02, similarity: str = "dot") -> None:
        super().__init__()
        if similarity not in ("dot", "cos"):
            raise InputError(f"similarity must be 'dot' or 'cos', not '{similarity}'")
        self.temperature, self.similarity = temperature, similarity

    def scores(self, queries: torch.Tensor, passages: torch.Tensor) -> torch.Tensor:
        if self.similarity == "cos":
            queries, passages = F.normalize(queries, dim=-1), F.normalize(passages, dim=-1)
        return queries @ passages.T / self.temperature

    def forward(self, queries: torch.Tensor, passages: torch.Tensor) -> torch.Tensor:
        if passages.shape[0] % queries.shape[0]:
            raise ValueError(f"{passages.shape[0]} passages do not split into groups for {queries.shape[0]} queries")
        group_size = passages.shape[0] // queries.shape[0]
        target = torch.arange(queries.shape[0], device=queries.device) * group_size
        return F.cross_entropy(self.scores(queries.float(), passages.float()), target)
