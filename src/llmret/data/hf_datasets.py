"""Training data from a Hugging Face ``datasets`` dataset, the way sentence-transformers' trainer and
Tevatron take it: a folder written by ``save_to_disk`` (a Dataset, or a DatasetDict whose ``train`` split
is read) or, online, ``hf:ID`` (``hf:ID:SPLIT`` for another split than train).

Two column conventions are read:

- Tevatron's: ``query`` (and ``query_id``), ``positive_passages`` and ``negative_passages`` as lists of
  ``{docid, title, text}`` (with ``score`` for distillation), exactly as llmret's own JSONL lines;
- sentence-transformers': text columns in order, the anchor (query) first, its positive second, any
  further ones hard negatives (``anchor, positive, negative`` or ``query, positive, negative_1 ...``).
  Passage ids are the sha1 of their text, so a passage met twice is one passage.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

from llmret.data.training import Passage, TrainExample, example_from_json
from llmret.util.errors import DataError, InputError

PREFIX = "hf:"


def is_dataset(spec: str) -> bool:
    """``hf:ID``, or a folder ``save_to_disk`` wrote (a Dataset or a DatasetDict)."""
    path = Path(spec).expanduser()
    return spec.startswith(PREFIX) or (path / "dataset_dict.json").is_file() or (path / "state.json").is_file() \
        and (path / "dataset_info.json").is_file()


def _load(spec: str) -> tuple[Any, str]:
    """The dataset's rows and a name for errors."""
    if importlib.util.find_spec("datasets") is None:
        raise InputError(f"{spec}: reading a Hugging Face dataset needs the datasets package: pip install datasets")
    import datasets

    if spec.startswith(PREFIX):
        name, _, split = spec.removeprefix(PREFIX).partition(":")
        return datasets.load_dataset(name, split=split or "train"), spec
    loaded = datasets.load_from_disk(str(Path(spec).expanduser()))
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise DataError(spec, None, f"a DatasetDict without a 'train' split (it has {', '.join(loaded)})")
        loaded = loaded["train"]
    return loaded, spec


def read_dataset(spec: str) -> list[TrainExample]:
    """The training examples of dataset ``spec``; a row that fits neither convention is an error naming
    the dataset and the row."""
    rows, name = _load(spec)
    columns = list(rows.column_names)
    tevatron = "query" in columns and "positive_passages" in columns
    texts = [c for c in columns if rows.features[c].dtype == "string"] if not tevatron else []
    if not tevatron and len(texts) < 2:
        raise DataError(name, None, f"columns {columns}: neither Tevatron's (query, positive_passages, "
                                    "negative_passages) nor sentence-transformers' (anchor, positive, negatives...)")
    examples = []
    for row_number, row in enumerate(rows, start=1):
        where = f"{name} row {row_number}"
        if tevatron:
            examples.append(example_from_json({"query_id": str(row.get("query_id", row_number)), **row}, name,
                                              row_number))
            continue
        values = [row[c] for c in texts]
        if not all(isinstance(v, str) and v.strip() for v in values):
            raise DataError(name, row_number, f"an empty or missing text in columns {texts}")
        query, positive, *negatives = values
        examples.append(TrainExample(f"row{row_number}", query, [_passage(positive)], [_passage(n) for n in negatives],
                                     where))
    if not examples:
        raise DataError(name, None, "no training examples found")
    return examples


def _passage(text: str) -> Passage:
    return Passage(hashlib.sha1(text.encode()).hexdigest()[:16], text)
