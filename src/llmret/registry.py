"""Named evaluation data: a new benchmark is one entry here.

``--data`` takes a BEIR folder or a name: ``builtin:code`` (``docs``, ``long``) for the built-in
dataset. Per-dataset evaluation rules live here too, keyed by the folder name, so that e.g. ArguAna
and Quora drop a query's own id from its results wherever they are evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmret.data import builtin
from llmret.data.dataset import RetrievalData, load_dataset
from llmret.fileio import read_json


@dataclass(frozen=True)
class DatasetRules:
    """How a dataset must be evaluated to match its published numbers."""

    exclude_self: bool = False  # the corpus holds the queries themselves
    instruction: str = ""  # a one-line task description, for instruction-based retrieval


RULES: dict[str, DatasetRules] = {
    "arguana": DatasetRules(exclude_self=True),
    "quora": DatasetRules(exclude_self=True),
}


def resolve_folder(spec: str, split: str) -> Path:
    """A data spec to a BEIR folder: ``builtin:TASK`` or a path."""
    if spec.startswith("builtin:"):
        return builtin.task_folder(spec.split(":", 1)[1], split)
    return Path(spec).expanduser()


def rules_for(folder: Path) -> DatasetRules:
    """Rules by folder name, with the instruction from a ``task.json`` next to the data if present."""
    task_file = folder / "task.json"
    base = RULES.get(folder.name.lower(), DatasetRules())
    if task_file.is_file():
        return DatasetRules(base.exclude_self, read_json(task_file).get("instruction", ""))
    return base


def load(spec: str, split: str = "test") -> tuple[RetrievalData, DatasetRules]:
    """Load evaluation data and its rules from a spec."""
    folder = resolve_folder(spec, split)
    data = load_dataset(folder, split)
    if spec.startswith("builtin:"):
        data.name = f"{spec.split(':', 1)[1]}-{split}"
    return data, rules_for(folder)
