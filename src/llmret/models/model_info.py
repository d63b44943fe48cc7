"""What llmret must know about a backbone to turn text into a vector: :class:`ModelInfo`."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class ModelInfo:
    """How a backbone turns text into a vector by default; every field can be overridden per run.

    ``pooling`` is one mode or several joined by ``+`` (concatenated, as sentence-transformers does):
    dense ``cls``, ``mean``, ``last``, ``max``, ``weightedmean``, ``mean_sqrt_len``, ``mean_normalized``;
    sparse ``max``, ``sum``, ``last``.
    """

    kind: str = "encoder"  # "encoder" (BERT, T5 encoder) or "decoder" (Llama, Qwen, Gemma, Phi ...)
    pooling: str = "cls"
    normalize: bool = True
    append_eos: bool = False  # decoders: the last token must be EOS for last-token pooling to see it all
    add_bos: bool | None = None  # None: the tokenizer's own habit; False strips BOS (sparse models want that)
    max_length: int = 512
    bidirectional: bool = False  # decoders: let every token see the whole text (LLM2Vec / Lion style)
    lowercase: bool = False  # sentence-transformers' do_lower_case: texts are lowercased before tokenizing

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
