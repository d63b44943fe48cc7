"""Lazy re-exports for package namespaces (PEP 562): ``from llmret.encoders import DenseEncoder`` works,
while importing the package itself loads nothing heavy.

Why: a package's ``__init__`` runs whenever any module inside it is imported, so eager re-exports would
make reading a light module (``llmret.encoders.settings``, what the CLI's parser needs) load torch.
"""

from __future__ import annotations

import importlib

# typing and collections.abc only for the checker: importing them would cost ``import llmret`` most of its time
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def lazy_exports(package: str, names: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` exporting each of ``names`` (name -> module, relative
    to the package) on first access."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{names[name]}"), name)

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
