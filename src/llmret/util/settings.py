"""Settings as dataclasses: fields declared with their help, files read strictly onto them.

Why strict: a misspelt key in a config (``pooling_mode`` for ``pooling``) would otherwise be ignored
and the run would silently use a default, which is exactly the silent wrong result we refuse.
"""

from __future__ import annotations

import dataclasses
import types
import typing
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
    """Build dataclass ``cls`` from ``data``, rejecting keys it does not have, required keys missing,
    values of another type than the field declares (``alpha: "five percent"``) and values outside a
    field's ``choices``: every one an error naming ``source`` before anything runs."""
    if not isinstance(data, dict):
        raise DataError(source, None, f"{cls.__name__} needs a mapping of settings, not {_shown(data)}")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise DataError(source, None, f"unknown setting(s) {', '.join(map(str, unknown))} for {cls.__name__}; known: "
                                      f"{', '.join(sorted(known))}")
    required = [f.name for f in fields(cls) if f.default is dataclasses.MISSING  # type: ignore[arg-type]
                and f.default_factory is dataclasses.MISSING and f.name not in data]
    if required:
        raise DataError(source, None, f"{cls.__name__} needs {', '.join(required)}")
    hints, data = typing.get_type_hints(cls), dict(data)
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        value = data[f.name] = _number(data[f.name], hints[f.name])
        if not _matches(value, hints[f.name]):
            raise DataError(source, None, f"{f.name} must be {_described(hints[f.name])}, not {_shown(value)}")
        choices = f.metadata.get("choices")
        if choices and value is not None and value not in choices:
            raise DataError(source, None, f"{f.name} must be one of {', '.join(map(str, choices))}, not {_shown(value)}")
    return cls(**data)


def _number(value: Any, hint: Any) -> Any:
    """``1e-3`` as a float where a float is declared: YAML 1.1 (PyYAML) reads exponents without a dot as
    strings, and a config writing ``learning_rate: 1e-3`` means the number."""
    wants_float = hint is float or float in typing.get_args(hint)
    if wants_float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _matches(value: Any, hint: Any) -> bool:
    """Whether a value read from YAML/JSON fits a field's declared type (an int fits a float; a mapping fits a
    settings dataclass, whose own keys are checked where it is built)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value) if args else isinstance(value, list)
    if origin is dict:
        return isinstance(value, dict) and (not args or all(_matches(k, args[0]) and _matches(v, args[1])
                                                            for k, v in value.items()))
    if dataclasses.is_dataclass(hint):
        return isinstance(value, (hint, dict))
    return isinstance(value, origin or hint)


def _described(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_described(a) for a in args)
    if hint is type(None):
        return "null"
    if origin is list:
        return f"a list of {_described(args[0])}" if args else "a list"
    if origin is dict:
        return "a mapping"
    names = {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}
    return names.get(hint, f"a {getattr(hint, '__name__', hint)}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
