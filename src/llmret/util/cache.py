"""Where llmret keeps what it builds once: converted models, the built-in dataset."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$LLMRET_CACHE`` or ``~/.cache/llmret``, joined with ``parts`` (created on demand)."""
    root = Path(os.environ.get("LLMRET_CACHE") or Path.home() / ".cache" / "llmret")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
