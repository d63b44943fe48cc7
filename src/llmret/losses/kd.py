"""Listwise distillation: KL(teacher || student) over each query's own group of passages.

For query i the group is its positive and its hard negatives (rows ``i*G .. i*G+G-1`` of the
passages), and the teacher scored exactly those passages; in-batch passages of other queries have
no teacher score for query i, so they are not part of this loss. Teacher and student scores are
turned into distributions with their own temperatures: a cross-encoder's logits and a bi-encoder's
cosines live on different scales, and the contrastive temperature is not the distillation one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def group_scores(queries: torch.Tensor, passages: torch.Tensor) -> torch.Tensor:
    """Student scores [batch, group]: each query against its own group of passages (dot products)."""
    if passages.shape[0] % queries.shape[0]:
        raise ValueError(f"{passages.shape[0]} passages do not split into groups for {queries.shape[0]} queries")
    groups = passages.view(queries.shape[0], -1, passages.shape[-1])
    dtype = torch.promote_types(queries.dtype, torch.float32)  # half precision is scored in float32
    return torch.einsum("bd,bgd->bg", queries.to(dtype), groups.to(dtype))


class ListwiseKDLoss(torch.nn.Module):
    """KL(softmax(teacher / T_t) || softmax(student / T_s)), averaged over queries."""

    def __init__(self, student_temperature: float = 1.0, teacher_temperature: float = 1.0) -> None:
        super().__init__()
        self.student_temperature, self.teacher_temperature = student_temperature, teacher_temperature

    def forward(self, queries: torch.Tensor, passages: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        student = F.log_softmax(group_scores(queries, passages) / self.student_temperature, dim=-1)
        target = F.log_softmax(teacher.to(student.device, student.dtype) / self.teacher_temperature, dim=-1)
        return F.kl_div(student, target, reduction="batchmean", log_target=True)
