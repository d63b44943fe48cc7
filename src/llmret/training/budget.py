"""Training compute: FLOPs per step from parameters touched and tokens processed, and a budget in steps.

The scaling studies compare models of different sizes at equal compute, C = 6 x N x D for full
fine-tuning (forward 2N, backward 4N per token: gradients of activations and of weights). With LoRA
the frozen weights get no weight gradient, so they cost 4N per token (forward and activation
gradients) and only the adapter's N_lora cost 6. Recomputing activations (gradient checkpointing)
or forwarding twice (GradCache) adds one more forward, 2N per token, to whatever is run again.
Tokens are real (unpadded) tokens, as the studies count them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from llmret.util.errors import InputError


@dataclass
class Compute:
    """What one training step costs, and how many steps a budget buys."""

    parameters: int  # every weight a token passes through (embeddings excluded)
    trainable: int
    lora: bool
    extra_forward: bool  # gradient checkpointing or GradCache run the forward again
    flops_per_token: float
    tokens_per_step: float  # estimated from the training data before training
    flops_per_step: float
    budget_flops: float | None = None
    steps: int | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def touched_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters a token's forward multiplies with, trainable ones): input embeddings are a lookup,
    not a matrix product, so they are left out unless they are also the output (LM) head."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    skip = {id(p) for p in embeddings.parameters()} if embeddings is not None else set()
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None:
        skip -= {id(p) for p in output.parameters()}
    seen: set[int] = set()
    total = trainable = 0
    for p in model.parameters():
        if id(p) in seen or id(p) in skip:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return total, trainable


def flops_per_token(parameters: int, trainable: int, lora: bool, extra_forward: bool) -> float:
    """6N for full fine-tuning; 4 N_frozen + 6 N_lora with LoRA; + 2N for a second forward."""
    cost = 4 * (parameters - trainable) + 6 * trainable if lora else 6 * parameters
    return float(cost + (2 * parameters if extra_forward else 0))


def plan(model: torch.nn.Module, lora: bool, extra_forward: bool, tokens_per_step: float,
         budget_flops: float | None = None) -> Compute:
    """The cost of a step and, with ``budget_flops``, the number of steps it buys (at least one)."""
    parameters, trainable = touched_parameters(model)
    per_token = flops_per_token(parameters, trainable, lora, extra_forward)
    per_step = per_token * tokens_per_step
    steps = None
    if budget_flops is not None:
        if budget_flops < per_step:
            raise InputError(f"--budget-flops {budget_flops:.3g} is less than one step ({per_step:.3g} FLOPs)")
        steps = int(budget_flops // per_step)
    return Compute(parameters, trainable, lora, extra_forward, per_token, tokens_per_step, per_step,
                   budget_flops, steps)
