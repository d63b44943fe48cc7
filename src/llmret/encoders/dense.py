"""Dense encoder: the backbone's token states pooled into one (L2-normalised) vector per text."""

from __future__ import annotations

import numpy as np
import torch

from llmret.encoders.base import DTYPES, TextEncoder, bidirectional_mask
from llmret.encoders.pooling import check_pooling, pool
from llmret.encoders.settings import SPARSE_ONLY, EncoderSettings
from llmret.util.errors import InputError

__all__ = ["DTYPES", "DenseEncoder", "bidirectional_mask"]


class DenseEncoder(TextEncoder):
    """Encode queries and passages into float32 vectors [n, hidden size]."""

    retriever = "dense"

    def __init__(self, backbone, settings: EncoderSettings, device: str | torch.device | None = None,  # noqa: ANN001
                 dataset: dict | None = None) -> None:
        changed = [k for k in SPARSE_ONLY if getattr(settings, k) is not None]
        if changed:
            raise InputError(f"setting(s) {', '.join(changed)} apply to sparse encoders only")
        super().__init__(backbone, settings, device, dataset)
        check_pooling(self.info.pooling)

    @property
    def dim(self) -> int:
        hidden = int(self.model.config.hidden_size) * len(self.info.pooling.split("+"))
        if self.head is not None:
            hidden = int([m for m in self.head.modules() if isinstance(m, torch.nn.Linear)][-1].out_features)
        return hidden

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled vectors, through the model's Dense head if it has one, optionally L2-normalised."""
        out = self.model(**self.model_inputs(input_ids, attention_mask))
        vectors = pool(out.last_hidden_state, attention_mask, self.info.pooling)
        if self.head is not None:
            vectors = self.head(vectors)
        if self.info.normalize:
            vectors = torch.nn.functional.normalize(vectors.float(), dim=-1)
        return vectors

    def to_output(self, reps: torch.Tensor, query: bool) -> np.ndarray:
        return reps.float().cpu().numpy()

    def stack(self, parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)
