"""Dense encoder: the backbone's token states pooled into one (L2-normalised) vector per text."""

from __future__ import annotations

import numpy as np
import torch

from llmret.config import SPARSE_ONLY, EncoderSettings
from llmret.encoders.base import DTYPES, TextEncoder, bidirectional_mask
from llmret.encoders.pooling import pool

__all__ = ["DTYPES", "DenseEncoder", "bidirectional_mask"]


class DenseEncoder(TextEncoder):
    """Encode queries and passages into float32 vectors [n, hidden size]."""

    paradigm = "dense"

    def __init__(self, backbone, settings: EncoderSettings, device: str | torch.device | None = None) -> None:
        defaults = EncoderSettings()
        changed = [k for k in SPARSE_ONLY if getattr(settings, k) != getattr(defaults, k)]
        if changed:
            raise ValueError(f"setting(s) {', '.join(changed)} apply to sparse encoders only")
        super().__init__(backbone, settings, device)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled (and optionally L2-normalised) vectors."""
        out = self.model(**self.model_inputs(input_ids, attention_mask))
        vectors = pool(out.last_hidden_state, attention_mask, self.info.pooling)
        if self.info.normalize:
            vectors = torch.nn.functional.normalize(vectors.float(), dim=-1)
        return vectors

    def to_output(self, reps: torch.Tensor, query: bool) -> np.ndarray:
        return reps.float().cpu().numpy()

    def stack(self, parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)
