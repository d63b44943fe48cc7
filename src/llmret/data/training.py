"""Tevatron-style training data: one query per line with positive and negative passages.

Accepted per line: ``query_id``, ``query``, and passages either inline
(``positive_passages`` / ``negative_passages``: objects with ``docid``, ``title``, ``text`` and an
optional teacher ``score``), as objects carrying only ``docid``, or as id lists
(``positive_document_ids`` / ``negative_document_ids``); passages given by id are resolved against a
corpus in one pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmret.data.corpus import Corpus
from llmret.util.errors import DataError
from llmret.util.fileio import atomic_write, iter_jsonl, require_str


@dataclass
class Passage:
    """A training passage; ``score`` is a teacher's score for distillation, when given."""

    docid: str
    text: str = ""
    title: str = ""
    score: float | None = None

    def full_text(self, sep: str = " ") -> str:
        return f"{self.title}{sep}{self.text}" if self.title else self.text


@dataclass
class TrainExample:
    query_id: str
    query: str
    positives: list[Passage]
    negatives: list[Passage] = field(default_factory=list)
    source: str | None = field(default=None, compare=False)  # "file:line" it was read from, for later errors


def require_teacher_scores(examples: list[TrainExample], what: str) -> None:
    """Every passage must carry a teacher score (distillation) and every query a hard negative."""
    for example in examples:
        where = example.source or f"query '{example.query_id}'"  # DataError's own form, path:line
        unscored = [p.docid for p in example.positives + example.negatives if p.score is None]
        if unscored:
            raise DataError(where, None, f"{what} needs a teacher 'score' on every passage; "
                                         f"'{unscored[0]}' has none (add them with a teacher first)")
        if not example.negatives:
            raise DataError(where, None, f"{what} needs scored hard negatives; query '{example.query_id}' has none")


def _passages(obj: dict[str, Any], kind: str, path: Path, line: int) -> list[Passage]:
    out: list[Passage] = []
    if f"{kind}_document_ids" in obj:
        ids = obj[f"{kind}_document_ids"]
        if not isinstance(ids, list):
            raise DataError(path, line, f"'{kind}_document_ids' must be a list")
        return [Passage(str(i)) for i in ids]
    items = obj.get(f"{kind}_passages", [])
    if not isinstance(items, list):
        raise DataError(path, line, f"'{kind}_passages' must be a list")
    for item in items:
        if not isinstance(item, dict):
            raise DataError(path, line, f"each of '{kind}_passages' must be an object")
        docid = require_str(item, "docid", path, line)
        text, title = item.get("text", ""), item.get("title", "") or ""
        if not isinstance(text, str) or not isinstance(title, str):
            raise DataError(path, line, f"passage '{docid}': 'title' and 'text' must be strings")
        score = item.get("score")
        if score is not None and not isinstance(score, (int, float)):
            raise DataError(path, line, f"passage '{docid}': 'score' must be a number")
        out.append(Passage(docid, text, title, None if score is None else float(score)))
    return out


def example_from_json(obj: dict[str, Any], path: str | Path, line: int) -> TrainExample:
    """One training example in Tevatron's form (a JSONL line, or a dataset row), checked."""
    qid = require_str(obj, "query_id", path, line)
    query = require_str(obj, "query", path, line)
    pos = _passages(obj, "positive", path, line)
    if not pos:
        raise DataError(path, line, f"query '{qid}' has no positive passage")
    return TrainExample(qid, query, pos, _passages(obj, "negative", path, line), f"{path}:{line}")


def read_training(path: str | Path, corpus: Corpus | None = None) -> list[TrainExample]:
    """Read training examples; passages without text are filled from ``corpus``."""
    path = Path(path)
    examples: list[TrainExample] = []
    lines: list[int] = []
    for line, obj in iter_jsonl(path):
        examples.append(example_from_json(obj, path, line))
        lines.append(line)
    if not examples:
        raise DataError(path, None, "no training examples found")
    return resolve_passages(examples, corpus, path, lines)


def resolve_passages(examples: list[TrainExample], corpus: Corpus | None, path: str | Path | None = None,
                     lines: list[int] | None = None) -> list[TrainExample]:
    """Fill in the text of passages given by id only, from ``corpus`` in one pass."""
    missing = {p.docid for ex in examples for p in ex.positives + ex.negatives if not (p.text or p.title)}
    if not missing:
        return examples
    if corpus is None:
        raise DataError(path, None, f"{len(missing)} passages are given by id only; pass the corpus they come from")
    found = corpus.lookup(missing)
    for number, ex in enumerate(examples):
        for p in ex.positives + ex.negatives:
            if not (p.text or p.title):
                doc = found.get(p.docid)
                if doc is None:
                    raise DataError(path, lines[number] if lines else None, f"passage '{p.docid}' is not in corpus {corpus.name}")
                p.text, p.title = doc.text, doc.title
    return examples


def example_json(example: TrainExample, *, by_id: bool = False) -> dict[str, Any]:
    """One Tevatron JSONL row; with ``by_id`` passages carry only ids (and scores) to keep files small."""

    def dump(p: Passage) -> dict[str, Any]:
        obj: dict[str, Any] = {"docid": p.docid} if by_id else {"docid": p.docid, "title": p.title, "text": p.text}
        if p.score is not None:
            obj["score"] = p.score
        return obj

    return {"query_id": example.query_id, "query": example.query,
            "positive_passages": [dump(p) for p in example.positives],
            "negative_passages": [dump(p) for p in example.negatives]}


def write_training(path: str | Path, examples: list[TrainExample], *, by_id: bool = False,
                   extra: dict[str, Any] | None = None) -> None:
    """Write Tevatron JSONL atomically; ``extra`` keys (e.g. the teacher's name) go on every row."""
    with atomic_write(path) as handle:
        for ex in examples:
            handle.write(json.dumps({**example_json(ex, by_id=by_id), **(extra or {})}, ensure_ascii=False) + "\n")
