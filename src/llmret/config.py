"""Settings as dataclasses; YAML or JSON files map onto them, and unknown keys are errors.

Why strict: a misspelt key in a config (``pooling_mode`` for ``pooling``) would otherwise be ignored
and the run would silently use a default, which is exactly the silent wrong result we refuse.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from llmret.errors import DataError

T = TypeVar("T")


@dataclass
class EncoderSettings:
    """How to turn queries and passages into vectors; ``None`` means the backbone's own default."""

    model: str = "minilm-l6"
    pooling: str | None = None
    normalize: bool | None = None
    append_eos: bool | None = None
    add_bos: bool | None = None
    bidirectional: bool | None = None
    query_prefix: str = ""
    passage_prefix: str = ""
    # A task instruction put before each query (instruction-based retrieval); the same template must
    # be used at training and evaluation time, so it is part of the settings saved with a model.
    instruction: str = ""
    instruction_template: str = "Instruct: {instruction}\nQuery: {query}"
    query_max_length: int = 64
    passage_max_length: int | None = None
    batch_size: int = 32
    dtype: str = "float32"
    # Sparse encoders only (pooling there is "max" or "sum"):
    logit_scale: float = 1.0  # vocabulary logits are multiplied by this before log(1 + ReLU)
    query_top_k: int | None = None  # keep a query's k largest weights (None: all non-zero)
    passage_top_k: int | None = None
    quantize: int | None = None  # store weights rounded to multiples of 1/quantize (e.g. 100)
    # Vocabulary rows projected at once, bounding memory at batch x length x chunk; None: the MLP width,
    # so the chunk's logits are no larger than activations the forward already holds.
    vocab_chunk: int | None = None


SPARSE_ONLY = ("logit_scale", "query_top_k", "passage_top_k", "quantize", "vocab_chunk")


def from_dict(cls: type[T], data: dict[str, Any], source: str | Path | None = None) -> T:
    """Build dataclass ``cls`` from ``data``, rejecting keys it does not have."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise DataError(source, None, f"unknown setting(s) {', '.join(unknown)} for {cls.__name__}; known: {', '.join(sorted(known))}")
    return cls(**data)


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file (JSON is YAML) into a dict."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DataError(path, mark.line + 1 if mark else None, f"invalid YAML/JSON: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise DataError(path, 1, "a config file must hold a mapping of settings")
    return data


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a plain dict (for saving the settings a run actually used)."""
    return dataclasses.asdict(obj)
