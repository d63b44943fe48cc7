"""Reading a masked-LM or causal-LM head without materialising batch x length x vocabulary logits.

A 152k-256k vocabulary makes the full logits tensor of one batch larger than the model: 32 passages
of 512 tokens over Gemma's 262k vocabulary are 17 GB in float32. So the model runs with its output
projection swapped for an identity (every architecture keeps its own head transform, e.g. BERT's
dense + GELU + LayerNorm, and its own linear scalings), and the projection is applied here, a chunk of
the vocabulary at a time. This is generic across architectures because transformers names the
projection ``get_output_embeddings()`` in every LM class; only a non-linear final soft-cap (Gemma 2/3)
sits after it, and it is turned off during the forward and applied by :meth:`VocabHead.finish`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from llmret.util.errors import InputError


@dataclass
class VocabHead:
    """The output projection (weight [vocab, hidden], optional bias) and the soft-cap after it."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    softcap: float | None

    @property
    def vocab_size(self) -> int:
        return int(self.weight.shape[0])

    def logits(self, hidden: torch.Tensor, rows: slice | torch.Tensor) -> torch.Tensor:
        """Logits of vocabulary ``rows`` (a slice, or the ids of chosen rows) for ``hidden`` [..., hidden],
        before the soft-cap."""
        out = hidden @ self.weight[rows].T.to(hidden.dtype)
        return out + self.bias[rows].to(out.dtype) if self.bias is not None else out

    def finish(self, logits: torch.Tensor) -> torch.Tensor:
        """Apply the soft-cap (monotone, so it may follow a max over tokens)."""
        if self.softcap:
            return torch.tanh(logits / self.softcap) * self.softcap
        return logits


def _parent_of(model: torch.nn.Module, target: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    for module in model.modules():
        for child_name, child in module.named_children():
            if child is target:
                return module, child_name
    raise InputError("the output projection is not a submodule of the model")


def _text_config(model: torch.nn.Module) -> object:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


@contextmanager
def head_detached(model: torch.nn.Module) -> Iterator[VocabHead]:
    """Within the block, ``model(...).logits`` are the hidden states the output projection would take.

    ``model`` may be wrapped (peft, DDP): the projection is found by identity among its submodules.
    """
    inner = model
    for attr in ("module", "base_model", "model"):  # DDP, then peft, down to the transformers LM class
        while not hasattr(inner, "get_output_embeddings") and hasattr(inner, attr):
            inner = getattr(inner, attr)
    projection = inner.get_output_embeddings()
    if projection is None:
        raise InputError(f"{type(inner).__name__} has no output projection; load the backbone with lm_head=True")
    parent, name = _parent_of(model, projection)
    config = _text_config(inner)
    softcap = getattr(config, "final_logit_softcapping", None)
    head = VocabHead(projection.weight, getattr(projection, "bias", None), softcap)
    setattr(parent, name, torch.nn.Identity())
    if softcap is not None:
        config.final_logit_softcapping = None
    try:
        yield head
    finally:
        setattr(parent, name, projection)
        if softcap is not None:
            config.final_logit_softcapping = softcap
