"""Each paper preset against its recipe card (docs/recipes/*.md), a table written by hand from the papers
and the authors' code: every row's value must be what the preset resolves to in every cell it applies
to, every value a recipe or the preset sets must have a row, and no preset value may replace a recipe's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmret import studies
from llmret.studies import presets

CARDS = Path(__file__).resolve().parents[1] / "docs" / "recipes"
BOOKKEEPING = {"save_steps", "logging_steps", "chunk_size", "eval_steps"}  # how a run is logged, not what it trains
ROW = re.compile(r"^\| `([^`]+)` \| ([^|]+) \| ([^|]+) \| (.+) \|$")


def _rows(preset: str) -> list[tuple[str, list[str], Any]]:
    rows = []
    for line in (CARDS / f"{preset}.md").read_text().splitlines():
        match = ROW.match(line.strip())
        if match:
            key, applies, value, source = match.groups()
            assert source.strip(), f"{key}: a row needs its source"
            rows.append((key, applies.split(), yaml.safe_load(value.strip())))
    assert rows, f"no rows in the {preset} card"
    return rows


def _matches(words: list[str], study_name: str, cell: dict[str, Any]) -> bool:
    objective = cell.get("train", {}).get("objective", {}).get("value")
    tokens = {cell["retriever"], objective, study_name, *cell["system"].replace(",", " ").split(),
              *re.findall(r"-(\d+b)\b", cell["system"])}
    return words == ["all"] or all(word in tokens for word in words)


def _value(key: str, cell: dict[str, Any]) -> Any:
    if key == "datasets":
        return len(cell["datasets"])
    section, _, rest = key.partition(".")
    if section == "train":
        return cell["train"][rest]["value"] if rest in cell["train"] else None
    if section == "mntp":
        return cell["stage"]["mntp"][rest]["value"]
    dataset, name = rest.rsplit(".", 1)
    return cell.get("dataset_encoder", {}).get(dataset, {}).get(name)


@pytest.mark.parametrize("preset", ["paper-scaling", "paper-dense"])
def test_the_preset_runs_its_recipe_card(preset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMRET_DATA", raising=False)  # paths as the card writes them
    rows = _rows(preset)
    plans = [(spec.name, cell) for spec in presets.load(preset).studies for cell in studies.plan(spec)]
    for key, words, expected in rows:
        section = {"train": "train", "mntp": "stage"}.get(key.split(".", 1)[0])
        matched = [(name, cell) for name, cell in plans if _matches(words, name, cell)
                   and (section is None or section in cell)]  # training keys: trained cells only
        assert matched, f"card row {key} ({' '.join(words)}) applies to no cell"
        seen = []
        for name, cell in matched:
            value = _value(key, cell)
            seen.append(value)
            if isinstance(expected, list) and not isinstance(value, list):
                assert value in expected, f"{name}: {cell['cell']}: {key} is {value!r}, the card allows {expected}"
            else:
                assert value == expected, f"{name}: {cell['cell']}: {key} is {value!r}, the card says {expected!r}"
        if isinstance(expected, list) and not isinstance(seen[0], list):
            assert set(map(repr, seen)) == set(map(repr, expected)), f"{key}: the card's values {expected} are not all run"
    for name, cell in plans:
        assert cell.get("recipe_overrides", []) == [], f"{name}: {cell['cell']} replaces its recipe's values"
        covered = {key for key, words, _ in rows if _matches(words, name, cell)}
        for key, entry in cell.get("train", {}).items():
            decided = entry["from"].startswith(("recipe", "preset"))
            if decided and key not in BOOKKEEPING and f"train.{key}" not in covered:
                raise AssertionError(f"{name}: {cell['cell']}: train.{key} = {entry['value']!r} ({entry['from']}) "
                                     "has no row in the card")
        for key, entry in cell.get("stage", {}).get("mntp", {}).items():
            if entry["from"] != "default" and key not in BOOKKEEPING | {"output_dir"} and f"mntp.{key}" not in covered:
                raise AssertionError(f"{name}: {cell['cell']}: mntp.{key} has no row in the card")
