"""Pooling token states into one vector, correct under left and right padding alike.

Positions come from the attention mask, never from the padding side: the first real token (CLS)
under left padding is not position 0, and the last real token under right padding is not position -1.
The modes are sentence-transformers' (so that its folders are reproduced exactly), plus
``mean_normalized``, Lion's dense pooling: the mean of the L2-normalised token states (each token
weighs the same whatever its norm; no sentence-transformers module does it). Several modes joined by
``+`` are concatenated in the order given.
"""

from __future__ import annotations

import torch

from llmret.util.errors import InputError

DENSE_POOLINGS = ("cls", "mean", "last", "max", "weightedmean", "mean_sqrt_len", "mean_normalized")


def first_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the first real token of each row."""
    return mask.int().argmax(dim=1)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row."""
    length = mask.shape[1]
    return length - 1 - mask.int().flip(dims=[1]).argmax(dim=1)


def check_pooling(how: str) -> None:
    unknown = [m for m in how.split("+") if m not in DENSE_POOLINGS]
    if unknown:
        raise InputError(f"unknown pooling '{'+'.join(unknown)}' (use {', '.join(DENSE_POOLINGS)}, or several joined by +)")


def _pool_one(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if how == "cls":
        return hidden[rows, first_token_index(mask)]
    if how == "last":
        return hidden[rows, last_token_index(mask)]
    if how == "max":
        return hidden.masked_fill(~mask.bool().unsqueeze(-1), float("-inf")).max(dim=1).values
    if how == "weightedmean":  # weights 1, 2, 3 ... from the first real token (later tokens count more)
        weights = (mask.cumsum(dim=1) * mask).to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    if how == "mean_normalized":
        hidden = torch.nn.functional.normalize(hidden.float(), dim=-1).to(hidden.dtype)
        how = "mean"
    if how in ("mean", "mean_sqrt_len"):
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        count = weights.sum(dim=1).clamp(min=1.0)
        return (hidden * weights).sum(dim=1) / (count if how == "mean" else count.sqrt())
    raise InputError(f"unknown pooling '{how}' (use {', '.join(DENSE_POOLINGS)})")


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Pool ``hidden`` [batch, length, dim] under ``mask`` [batch, length] by one mode or ``+``-joined modes."""
    parts = [_pool_one(hidden, mask, mode) for mode in how.split("+")]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
