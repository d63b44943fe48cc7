"""MarginMSE (Hofstätter et al.): the student's margin s(q, p+) - s(q, p-) regresses on the teacher's.

Each query's positive is paired with its hard negatives: with ``negatives="all"`` every negative of
the group (the mean over pairs), with ``"one"`` only the group's first negative, itself a uniform draw
from the query's negatives each epoch (see :mod:`llmret.data.sampling`): the Lion "KD" scripts train
on such triples, one sampled negative per query. The student's margin is divided by
``student_temperature`` before it is compared: Lion divides a dense student's cosine margin (within
[-2, 2]) by T = 0.01 so that it can reach a cross-encoder's margins, and leaves a sparse student's dot
products as they are. The teacher's margin is used as it comes.
"""

from __future__ import annotations

import torch

from llmret.losses.kd import group_scores
from llmret.util.errors import InputError

NEGATIVES = ("all", "one")


class MarginMSELoss(torch.nn.Module):
    """Mean over (query, negative) pairs of ((s+ - s-) / T - (t+ - t-))^2."""

    def __init__(self, student_temperature: float = 1.0, negatives: str = "all") -> None:
        super().__init__()
        if negatives not in NEGATIVES:
            raise InputError(f"margin negatives must be one of {', '.join(NEGATIVES)}, not '{negatives}'")
        self.student_temperature, self.negatives = student_temperature, negatives

    def forward(self, queries: torch.Tensor, passages: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        student = group_scores(queries, passages)
        teacher = teacher.to(student.device, student.dtype)
        if student.shape[1] < 2:
            raise InputError("MarginMSE needs at least one hard negative per query (group_size >= 2)")
        last = 2 if self.negatives == "one" else student.shape[1]
        margins = (student[:, :1] - student[:, 1:last]) / self.student_temperature
        return ((margins - (teacher[:, :1] - teacher[:, 1:last])) ** 2).mean()
