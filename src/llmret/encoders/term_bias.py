"""A calibrated zero point per vocabulary term, for sparse encoders over a decoder's LM head.

A decoder's head has no bias and was trained through a softmax, which ignores a constant shift of the
logits, so where a term's logit crosses zero is arbitrary and nearly every max-pooled logit is
positive. A per-term bias b, added to the (scaled) logits before log(1 + ReLU), puts the zero point
where a calibration batch says: each term's mean pooled logit over the calibration passages moves to
zero, then one margin shared by all terms is chosen so that those passages average the wanted number
of non-zero terms. The bias is a parameter: training moves it with the rest, and it is saved with the
model (``term_bias.safetensors``) and applied whenever the model is loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from llmret.util.errors import InputError

FILE = "term_bias.safetensors"
CALIBRATION_TEXTS = 256  # passages the zero points are set from (a seeded sample of the training data)


class TermBias(torch.nn.Module):
    """The bias vector [vocab] as a module, so that it trains, checkpoints and syncs across processes
    as a part of the model it is attached to."""

    def __init__(self, bias: torch.Tensor) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(bias.detach().float().clone())


def zero_points(pooled: torch.Tensor, terms: int) -> torch.Tensor:
    """The bias b [vocab] that leaves ``terms`` non-zero weights per row of ``pooled`` on average.

    ``pooled`` [texts, vocab] are the calibration passages' pooled, scaled logits (before the
    activation). b = -(mean over texts + margin): exactly ``terms x texts`` entries of pooled + b are
    positive (ties aside).
    """
    texts, vocab = pooled.shape
    if not 0 < terms < vocab:
        raise InputError(f"the number of terms to calibrate for must be between 1 and {vocab - 1}, not {terms}")
    mean = pooled.float().mean(dim=0)
    centred = (pooled.float() - mean).flatten()
    margin = centred.kthvalue(centred.numel() - terms * texts).values
    return -(mean + margin)


def save(bias: torch.Tensor, folder: Path) -> None:
    from safetensors.torch import save_file

    save_file({"bias": bias.detach().float().cpu().contiguous()}, str(folder / FILE))


def load(folder: Path) -> torch.Tensor | None:
    """The bias saved in ``folder``, or None when the model has none."""
    path = folder / FILE
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    return load_file(str(path))["bias"]
