"""Settings as a stack of layers, each value remembered with the layer that set it.

A run's settings come from several places: a named recipe (a published system's values), a config
file, a study's system (a preset or the user's study file), a grid axis, command-line flags, and the
settings' own defaults. They are merged lowest first; a mapping under ``encoder`` merges key by key.
Every value keeps the name of the layer it came from, so ``llmret study plan`` can show where each
setting was decided, and a value that replaces a *recipe's* is reported as an override: a study
that silently ran group size 8 where the recipe says 17 is a different experiment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NESTED = ("encoder",)  # sections merged key by key
RECIPE = "recipe"  # the name of a recipe's layer starts with this


@dataclass
class Override:
    """``key`` set to ``value`` by ``layer``, replacing ``replaced`` from the recipe layer ``recipe``."""

    key: str
    recipe: str
    replaced: Any
    layer: str
    value: Any

    def __str__(self) -> str:
        return f"{self.key}: {self.value!r} from {self.layer} replaces {self.recipe}'s {self.replaced!r}"


@dataclass
class Layered:
    """Merged ``values`` (``encoder`` as a nested mapping), the layer each dotted key came from, and the
    recipe values a later layer replaced."""

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    overrides: list[Override] = field(default_factory=list)


def merge(layers: Sequence[tuple[str, Mapping[str, Any] | None]]) -> Layered:
    """Merge ``(name, values)`` layers, lowest first. ``None`` values in a layer set nothing (a flag not
    given, a key written as null): the value below stays."""
    out = Layered()
    flat: dict[str, Any] = {}
    for name, values in layers:
        for key, value in _flatten(values or {}):
            if value is None:
                continue
            before = out.origins.get(key)
            if before is not None and before.startswith(RECIPE) and not name.startswith(RECIPE) and flat[key] != value:
                out.overrides.append(Override(key, before, flat[key], name, value))
            flat[key], out.origins[key] = value, name
    for key, value in flat.items():
        section, _, rest = key.partition(".")
        if rest and section in NESTED:
            out.values.setdefault(section, {})[rest] = value
        else:
            out.values[key] = value
    return out


def _flatten(values: Mapping[str, Any]) -> list[tuple[str, Any]]:
    items = []
    for key, value in values.items():
        if key in NESTED and isinstance(value, Mapping):
            items += [(f"{key}.{inner}", v) for inner, v in value.items()]
        else:
            items.append((key, value))
    return items
