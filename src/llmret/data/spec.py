"""The one parser of data names: ``builtin:TASK`` (the built-in dataset), ``irds:ID`` (an ir_datasets id,
converted once into a BEIR folder) or a path (a BEIR folder, or a corpus JSONL file)."""

from __future__ import annotations

from pathlib import Path

from llmret.data import builtin, irds
from llmret.data.corpus import Corpus


def resolve_folder(spec: str, split: str) -> Path:
    """A data spec to a BEIR folder: ``builtin:TASK``, ``irds:ID`` or a path."""
    if spec.startswith("builtin:"):
        return builtin.task_folder(spec.split(":", 1)[1], split)
    if spec.startswith(irds.PREFIX):
        return irds.folder(spec.removeprefix(irds.PREFIX), split)
    return Path(spec).expanduser()


def load_corpus(spec: str, split: str = "test") -> Corpus:
    """The corpus of a data spec: ``builtin:TASK``, a BEIR folder, or a corpus JSONL file."""
    path = resolve_folder(spec, split)
    return Corpus.from_file(path / "corpus.jsonl" if path.is_dir() else path)
