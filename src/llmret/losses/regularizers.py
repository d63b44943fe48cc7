"""Sparsity regularisers for learned-sparse training: FLOPS (SPLADE) and L1, with a quadratic warm-up.

FLOPS = sum over terms of (mean activation of the term over the batch)^2: it penalises terms that
are active in many texts, which is what makes posting lists long and search slow.

The batch mean is taken over the global batch, across devices, so the loss and its gradient do not
depend on how many processes share the batch: each process adds its own rows' sums (with gradient)
to the other processes' sums (gathered without gradient). Because DDP averages gradients over
processes, the local gradient is multiplied by the number of processes (the value is not), which
makes the averaged gradient exactly that of the single-process loss on the whole batch.
"""

from __future__ import annotations

import torch

from llmret.losses.distributed import global_sum, scale_for_ddp
from llmret.util.errors import InputError

REGULARIZERS = ("flops", "l1")


def regularization(reps: torch.Tensor, kind: str = "flops") -> torch.Tensor:
    """FLOPS or L1 of term weights ``reps`` [batch, vocab] (non-negative), over the global batch."""
    if kind not in REGULARIZERS:
        raise InputError(f"regularizer must be one of {', '.join(REGULARIZERS)}, not '{kind}'")
    reps = reps.float()
    count = global_sum(torch.tensor(float(reps.shape[0]), device=reps.device))
    if kind == "l1":
        value = global_sum(reps.abs().sum()) / count
    else:
        value = ((global_sum(reps.abs().sum(dim=0)) / count) ** 2).sum()
    return scale_for_ddp(value)  # value unchanged, gradient x world (see above)


def warmup_weight(weight: float, step: int, warmup_steps: int) -> float:
    """The regulariser weight at ``step``: rising as (step / warmup)^2 to ``weight``, as in SPLADE."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return weight
    return weight * (step / warmup_steps) ** 2


def nonzero(reps: torch.Tensor) -> float:
    """Average number of non-zero terms per row (logged during training)."""
    return float((reps.detach() > 0).sum(dim=-1).float().mean())
