"""Training objectives: named loss parts, weighted and summed, so the loop logs each part.

``cl`` is InfoNCE (in-batch and hard negatives); ``kd`` listwise KL from teacher scores; ``cl+kd`` the
Lion recipe's (InfoNCE + KL) / 2 (``kd_weight`` moves the balance); ``marginmse`` MarginMSE (what the
Lion "KD" scripts train).
"""

from __future__ import annotations

import torch

from llmret.losses.infonce import InfoNCELoss
from llmret.losses.kd import ListwiseKDLoss
from llmret.losses.margin_mse import MarginMSELoss
from llmret.util.errors import InputError

OBJECTIVES = ("cl", "kd", "cl+kd", "marginmse")


class Objective(torch.nn.Module):
    """The parts an objective is made of, with their weights; :meth:`forward` returns every part and ``loss``."""

    def __init__(self, kind: str, infonce: InfoNCELoss, kd: ListwiseKDLoss, kd_weight: float = 0.5,
                 margin: MarginMSELoss | None = None) -> None:
        super().__init__()
        if kind not in OBJECTIVES:
            raise InputError(f"objective must be one of {', '.join(OBJECTIVES)}, not '{kind}'")
        self.kind = kind
        self.parts: dict[str, tuple[torch.nn.Module, float]] = {
            "cl": {"ranking": (infonce, 1.0)},
            "kd": {"kd": (kd, 1.0)},
            "cl+kd": {"ranking": (infonce, 1.0 - kd_weight), "kd": (kd, kd_weight)},
            "marginmse": {"margin_mse": (margin or MarginMSELoss(), 1.0)},
        }[kind]

    @property
    def needs_teacher(self) -> bool:
        return self.kind != "cl"

    def forward(self, queries: torch.Tensor, passages: torch.Tensor,
                teacher: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if self.needs_teacher and teacher is None:
            raise InputError(f"objective '{self.kind}' needs teacher scores")
        values = {name: (fn(queries, passages) if name == "ranking" else fn(queries, passages, teacher))
                  for name, (fn, _) in self.parts.items()}
        values["loss"] = sum(weight * values[name] for name, (_, weight) in self.parts.items())
        return values
