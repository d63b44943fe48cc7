"""One training step over a batch: the loss from vectors, and two ways to get the gradient.

:class:`Criterion` turns query and passage vectors (this process's share) into named loss parts:
the objective over the global batch (vectors gathered from every process, see
:mod:`llmret.losses.distributed`) plus, for sparse models, the FLOPS/L1 regulariser. The loop sums nothing
itself: ``loss`` is in the parts, and every part is logged.

:func:`plain_step` forwards the whole batch with gradient. :func:`cached_step` is GradCache (Gao et
al., 2021): forward every chunk without gradient, take the gradient of the loss with respect to the
vectors, then forward each chunk again with gradient and backpropagate those vector gradients. The
result is the gradient of the same loss, but activation memory depends on the chunk, not the batch.
The random state of each chunk's first forward is replayed in its second, so dropout (LoRA's
included) draws the same masks in both passes and the gradient is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import torch

from llmret.encoders.base import TextEncoder
from llmret.encoders.sparse import keep_top_k
from llmret.losses.distributed import gather_with_grad, scale_for_ddp
from llmret.losses.objective import Objective
from llmret.losses.regularizers import nonzero, regularization, warmup_weight
from llmret.util.errors import InputError

COLLAPSE_STEPS = 3  # consecutive all-empty steps after which a sparse run stops (Criterion.check_alive)


@dataclass
class Batch:
    """This process's share of a batch: token ids of queries and of their passage groups (positive
    first), and the teacher's scores of each group [queries, group] when the objective uses them."""

    queries: list[list[int]]
    passages: list[list[int]]
    teacher: torch.Tensor | None = None

    @property
    def tokens(self) -> int:
        return sum(map(len, self.queries)) + sum(map(len, self.passages))


@dataclass
class Regularizer:
    """Sparse models' term-weight regulariser, its query and passage weights and their warm-up; and the
    top-k cut of queries and passages applied in training as at encoding (None: no cut)."""

    kind: str
    query_weight: float
    passage_weight: float
    warmup_steps: int
    query_top_k: int | None = None
    passage_top_k: int | None = None


class Criterion:
    """Loss parts from vectors: the objective over the gathered global batch, and the regulariser."""

    def __init__(self, objective: Objective, regularizer: Regularizer | None = None) -> None:
        self.objective, self.regularizer = objective, regularizer
        self.empty_steps = 0  # consecutive steps whose every query and passage vector was empty

    def check_alive(self, queries: float, passages: float, step: int) -> None:
        """Stop a sparse run whose vectors all went to zero: log(1 + ReLU) passes no gradient back from
        zero weights, so such a model never recovers, and the rest of the run would only save a model
        that retrieves nothing. Three steps in a row, so that one batch of odd texts does not stop it."""
        self.empty_steps = self.empty_steps + 1 if queries == 0 and passages == 0 else 0
        if self.empty_steps >= COLLAPSE_STEPS:
            raise InputError(
                f"sparse training collapsed at step {step}: every query and passage vector has been empty for "
                f"{COLLAPSE_STEPS} steps, and a zero term weight gets no gradient back; lower the FLOPS weights "
                "(--query-reg-weight, --passage-reg-weight) or the learning rate, or warm them up over more steps "
                "(--reg-warmup-ratio)")

    def __call__(self, queries: torch.Tensor, passages: torch.Tensor, teacher: torch.Tensor | None,
                 step: int) -> dict[str, torch.Tensor]:
        reg = self.regularizer
        if reg is not None:
            queries, passages = keep_top_k(queries, reg.query_top_k), keep_top_k(passages, reg.passage_top_k)
        if teacher is not None:
            teacher = gather_with_grad(teacher.to(queries.device))
        parts = self.objective(gather_with_grad(queries), gather_with_grad(passages), teacher)
        loss = scale_for_ddp(parts.pop("loss"))
        out = {f"{name}_loss": value for name, value in parts.items()}
        if reg is not None:
            value = warmup_weight(reg.query_weight, step, reg.warmup_steps) * regularization(queries, reg.kind) \
                + warmup_weight(reg.passage_weight, step, reg.warmup_steps) * regularization(passages, reg.kind)
            q_nonzero, p_nonzero = nonzero(queries), nonzero(passages)
            self.check_alive(q_nonzero, p_nonzero, step)
            out |= {"reg_loss": value, "q_nonzero": torch.tensor(q_nonzero), "p_nonzero": torch.tensor(p_nonzero)}
            loss = loss + value
        return {"loss": loss, **out}


def _sorted_chunks(ids: list[list[int]], chunk: int) -> tuple[list[list[int]], torch.Tensor]:
    """Index chunks of ``ids`` sorted by length (less padding), and the permutation that restores order."""
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return [order[s:s + chunk] for s in range(0, len(ids), chunk)], inverse


def forward_sorted(encoder: TextEncoder, ids: list[list[int]], chunk: int) -> torch.Tensor:
    """Vectors for ``ids`` in their order, forwarded in length-sorted chunks of ``chunk`` sequences.

    Sequences do not interact, so this gives the same vectors as one padded batch while padding far
    less: the gain is largest for passage groups, whose lengths vary most.
    """
    chunks, inverse = _sorted_chunks(ids, chunk)
    parts = [encoder.forward(**encoder.collate([ids[i] for i in c])) for c in chunks]
    return torch.cat(parts)[inverse.to(parts[0].device)]


def _floats(parts: dict[str, torch.Tensor]) -> dict[str, float]:
    return {name: float(value.detach()) for name, value in parts.items()}


def plain_step(encoder: TextEncoder, batch: Batch, criterion: Criterion, step: int, chunk: int,
               backward: Callable[[torch.Tensor], None]) -> dict[str, float]:
    """Forward the batch with gradient, backpropagate the loss, return the parts' values."""
    parts = criterion(forward_sorted(encoder, batch.queries, chunk), forward_sorted(encoder, batch.passages, chunk),
                      batch.teacher, step)
    backward(parts["loss"])
    return _floats(parts)


class RandContext:
    """The random state at the moment it is made, to be replayed later (CPU and the model's GPU)."""

    def __init__(self, device: torch.device) -> None:
        self.devices = [device] if device.type == "cuda" else []
        self.cpu = torch.get_rng_state()
        self.gpu = [torch.cuda.get_rng_state(d) for d in self.devices]

    @contextmanager
    def replay(self) -> Iterator[None]:
        """Run the body from the saved state; the state afterwards is what it was before the body."""
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu)
            for d, state in zip(self.devices, self.gpu):
                torch.cuda.set_rng_state(state, d)
            yield


def cached_step(encoder: TextEncoder, batch: Batch, criterion: Criterion, step: int, chunk: int,
                backward: Callable[[torch.Tensor], None],
                no_sync: Callable[[], AbstractContextManager[None]] = nullcontext) -> dict[str, float]:
    """GradCache: the gradient of :func:`plain_step`'s loss with the memory of one ``chunk``.

    ``backward`` runs on the loss over the cached vectors (so loss scaling and accumulation apply as
    in the plain step); ``no_sync`` suppresses DDP's gradient reduction for all but the last chunk.
    Chunks are formed and forwarded in the order :func:`forward_sorted` uses, so both steps draw the
    same random numbers and leave the random state the same.
    """
    plans: list[list[tuple[list[list[int]], RandContext, list[int]]]] = []
    vectors: list[torch.Tensor] = []
    for ids in (batch.queries, batch.passages):
        chunks, inverse = _sorted_chunks(ids, chunk)
        side, reps = [], []
        with torch.no_grad():
            for rows in chunks:
                texts = [ids[i] for i in rows]
                side.append((texts, RandContext(encoder.device), rows))
                reps.append(encoder.forward(**encoder.collate(texts)))
        plans.append(side)
        vectors.append(torch.cat(reps)[inverse.to(reps[0].device)].detach().requires_grad_())
    parts = criterion(vectors[0], vectors[1], batch.teacher, step)
    backward(parts["loss"])
    work = [(texts, state, v.grad[torch.tensor(rows, device=v.grad.device)])
            for side, v in zip(plans, vectors) for texts, state, rows in side]
    for number, (texts, state, grad) in enumerate(work):
        with state.replay(), (no_sync() if number < len(work) - 1 else nullcontext()):
            reps = encoder.forward(**encoder.collate(texts))
            torch.autograd.backward(reps, grad.to(reps.dtype))
    return _floats(parts)
