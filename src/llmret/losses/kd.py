"""Listwise distillation: KL(teacher || student) over the passages the teacher scored for each query.

Those are its own group, its positive and hard negatives (rows ``i*G .. i*G+G-1`` of the passages:
teacher scores [batch, G]), or, with in-batch distillation, every passage of the batch its process
read (teacher scores [batch, b*G] for b queries a process), as Lin et al. 2021 (*In-batch negatives
for knowledge distillation with tightly-coupled teachers for dense retrieval*) distil: a group of 2
gives the student one number a query to follow, a batch of 8 queries 15. Teacher and student scores
are turned into distributions with their own temperatures: a cross-encoder's logits and a
bi-encoder's cosines live on different scales, and the contrastive temperature is not the
distillation one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def group_scores(queries: torch.Tensor, passages: torch.Tensor) -> torch.Tensor:
    """Student scores [batch, group]: each query against its own group of passages (dot products)."""
    if passages.shape[0] % queries.shape[0]:
        raise ValueError(f"{passages.shape[0]} passages do not split into groups for {queries.shape[0]} queries")
    return scored_block(queries, passages, passages.shape[0] // queries.shape[0])


def scored_block(queries: torch.Tensor, passages: torch.Tensor, width: int) -> torch.Tensor:
    """Student scores [batch, width]: each query against the ``width`` passages its teacher row scored.

    The passages are gathered in blocks of ``width``, one block per process's batch (or per group,
    when ``width`` is the group size), the queries in the same order, so query i's block is
    ``i // (queries per block)``."""
    if passages.shape[0] % width or queries.shape[0] % (passages.shape[0] // width):
        raise ValueError(f"teacher rows of {width} scores do not match {queries.shape[0]} queries and "
                         f"{passages.shape[0]} passages")
    blocks = passages.shape[0] // width
    dtype = torch.promote_types(queries.dtype, torch.float32)  # half precision is scored in float32
    # each block's queries against its passages, without copying a block per query (an in-batch block of
    # a large GPU batch would be gigabytes)
    by_block = queries.to(dtype).view(blocks, queries.shape[0] // blocks, -1)
    scores = torch.einsum("kqd,kwd->kqw", by_block, passages.to(dtype).view(blocks, width, -1))
    return scores.reshape(queries.shape[0], width)


class ListwiseKDLoss(torch.nn.Module):
    """KL(softmax(teacher / T_t) || softmax(student / T_s)), averaged over queries; the teacher's rows say
    which passages each query is distilled over (its group, or its process's batch)."""

    def __init__(self, student_temperature: float = 1.0, teacher_temperature: float = 1.0) -> None:
        super().__init__()
        self.student_temperature, self.teacher_temperature = student_temperature, teacher_temperature

    def forward(self, queries: torch.Tensor, passages: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        scores = scored_block(queries, passages, teacher.shape[-1])
        student = F.log_softmax(scores / self.student_temperature, dim=-1)
        target = F.log_softmax(teacher.to(student.device, student.dtype) / self.teacher_temperature, dim=-1)
        return F.kl_div(student, target, reduction="batchmean", log_target=True)
