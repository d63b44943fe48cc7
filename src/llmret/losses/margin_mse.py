"""MarginMSE (Hofstätter et al.): the student's margin s(q, p+) - s(q, p-) regresses on the teacher's.

Each query's positive is paired with each of its hard negatives; scores are raw dot products, so the
student learns the teacher's scale of margins. This is what the Lion "KD" scripts train.
"""

from __future__ import annotations

import torch

from llmret.losses.kd import group_scores


class MarginMSELoss(torch.nn.Module):
    """Mean over (query, negative) pairs of ((s+ - s-) - (t+ - t-))^2."""

    def forward(self, queries: torch.Tensor, passages: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        student = group_scores(queries, passages)
        teacher = teacher.to(student.device, student.dtype)
        if student.shape[1] < 2:
            raise ValueError("MarginMSE needs at least one hard negative per query (group_size >= 2)")
        margins = student[:, :1] - student[:, 1:]
        return ((margins - (teacher[:, :1] - teacher[:, 1:])) ** 2).mean()
