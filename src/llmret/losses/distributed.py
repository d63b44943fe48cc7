"""Collectives for training on several processes, each keeping the gradient of its own part.

Every process holds a share of the global batch. Contrastive losses should see the whole batch (in
both studies the negatives of a query are all passages of all devices), so vectors are gathered;
``all_gather`` returns tensors without gradient, so each process puts its own share back in its
slot, with gradient. Each process then computes the same global loss, and backpropagation reaches
only its local vectors; DDP averages the gradients of the processes, which would divide the
global gradient by the number of processes, so the loss is scaled by it (:func:`scale_for_ddp`).
The result is the gradient of the single-process loss on the whole batch.
"""

from __future__ import annotations

import atexit

import torch
import torch.distributed as dist

_KEPT: list[dist.ProcessGroup] = []


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def keep_group_until_exit() -> None:
    """Hold the default process group from Python until the interpreter exits (several processes only).

    Written by hand because torch leaves it to the caller. DDP's reducer holds the group too; if its
    reference is the last (the model goes after ``destroy_process_group``, at the end of a run), the
    group's destructor runs holding the GIL and joins gloo's worker threads, one of which may still be
    destroying a finished collective, which needs the GIL (a work keeps its caller's thread-local
    state, Python objects included): the process never exits (3 of ~140 two-process CPU runs of the
    tests' training, more under load). A reference Python drops goes through torch's binding, which
    lets go of the GIL first; so the last one is Python's, dropped at exit, once the run's models are gone.
    """
    if world_size() == 1:
        return
    if not _KEPT:
        atexit.register(_KEPT.clear)
    if dist.group.WORLD not in _KEPT:
        _KEPT.append(dist.group.WORLD)


def gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """Rows of ``local`` from every process, in rank order; gradient flows into this process's rows.

    Every process must pass a tensor of the same shape (the loop splits batches evenly).
    """
    world = world_size()
    if world == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local.detach().contiguous())
    parts[rank()] = local
    return torch.cat(parts)


def global_sum(local: torch.Tensor) -> torch.Tensor:
    """Sum of ``local`` over processes; the gradient flows into this process's part only."""
    if world_size() == 1:
        return local
    total = local.detach().clone()
    dist.all_reduce(total)
    return local + (total - local.detach())


def scale_for_ddp(loss: torch.Tensor) -> torch.Tensor:
    """``loss`` with its value unchanged and its gradient multiplied by the number of processes.

    For a loss every process computes over the global batch from gathered vectors: DDP's average
    of the processes' gradients then equals the single-process gradient.
    """
    world = world_size()
    return loss if world == 1 else world * loss - (world - 1) * loss.detach()
