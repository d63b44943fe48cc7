"""Pooling token states into one vector, correct under left and right padding alike.

Positions come from the attention mask, never from the padding side: the first real token (CLS)
under left padding is not position 0, and the last real token under right padding is not position -1.
"""

from __future__ import annotations

import torch


def first_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the first real token of each row."""
    return mask.int().argmax(dim=1)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row."""
    length = mask.shape[1]
    return length - 1 - mask.int().flip(dims=[1]).argmax(dim=1)


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Pool ``hidden`` [batch, length, dim] under ``mask`` [batch, length] by ``cls``, ``mean`` or ``last``."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if how == "cls":
        return hidden[rows, first_token_index(mask)]
    if how == "last":
        return hidden[rows, last_token_index(mask)]
    if how == "mean":
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
    raise ValueError(f"unknown pooling '{how}' (use cls, mean or last)")
