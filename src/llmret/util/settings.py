"""Settings as dataclasses: fields declared with their help, files read strictly onto them.

Why strict: a misspelt key in a config (``pooling_mode`` for ``pooling``) would otherwise be ignored
and the run would silently use a default, which is exactly the silent wrong result we refuse.
"""

from __future__ import annotations

import dataclasses
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from llmret.util.errors import DataError

T = TypeVar("T")


def option(default: Any, help: str, **extra: Any) -> Any:  # noqa: A002 - argparse's word
    """A settings field declared once: its default, the help text (and ``choices``) its command-line flag
    shows, and whatever else its users read from the field's metadata (``fallback``: the value used when
    no layer sets one; ``sparse``: a sparse encoder's only; ``bookkeeping``: changes what is logged, not
    what is trained). Flags, config keys, study keys and saved settings are all made from the fields."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help, **extra})
    return dataclasses.field(default=default, metadata={"help": help, **extra})


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


def with_defaults(cls: type[T], name: str, **defaults: Any) -> type[T]:
    """A subclass of settings dataclass ``cls`` named ``name`` whose listed fields have other defaults, their
    help and choices kept: one part's declaration, other defaults for another user of it (MNTP's loop)."""
    changed = []
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in defaults:
            changed.append((f.name, f.type, dataclasses.field(default=defaults.pop(f.name), metadata=f.metadata)))
    if defaults:
        raise TypeError(f"{cls.__name__} has no field(s) {', '.join(defaults)}")
    return dataclasses.make_dataclass(name, changed, bases=(cls,))


def bookkeeping(cls: type) -> set[str]:
    """The fields of ``cls`` that change what is logged or saved, not what is computed: a resumed run may
    change them."""
    return {f.name for f in fields(cls) if f.metadata.get("bookkeeping")}
