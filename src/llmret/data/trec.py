"""TREC run files: ``qid Q0 docid rank score tag``, the lingua franca of trec_eval and every toolkit."""

from __future__ import annotations

import math
from pathlib import Path

from llmret.util.errors import DataError
from llmret.util.fileio import atomic_write, iter_lines

Run = dict[str, dict[str, float]]
"""query id -> document id -> score (higher is better)."""


def ranked(docs: dict[str, float]) -> list[tuple[str, float]]:
    """Documents by descending score, ties by descending id: the order trec_eval itself uses."""
    return sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)


def read_run(path: str | Path) -> Run:
    """Read a TREC run; a repeated document for a query or a non-numeric score is an error."""
    path = Path(path)
    run: Run = {}
    for line, row in iter_lines(path):
        fields = row.split()
        if len(fields) != 6:
            raise DataError(path, line, f"expected 6 fields 'qid Q0 docid rank score tag', found {len(fields)}")
        qid, _, did, _, score, _ = fields
        try:
            value = float(score)
        except ValueError:
            raise DataError(path, line, f"score '{score}' is not a number") from None
        if math.isnan(value):
            raise DataError(path, line, "score is NaN")
        docs = run.setdefault(qid, {})
        if did in docs:
            raise DataError(path, line, f"document '{did}' appears twice for query '{qid}'")
        docs[did] = value
    return run


def write_run(path: str | Path, run: Run, tag: str = "llmret", depth: int | None = None) -> None:
    """Write a TREC run atomically, ranked as trec_eval would rank it, optionally cut at ``depth``. The tag
    is one field (white space in it, as in a study's system names, becomes '_'): a sixth and seventh
    field would make the file unreadable to trec_eval and to :func:`read_run`."""
    tag = "_".join(tag.split()) or "llmret"
    with atomic_write(path) as handle:
        for qid, docs in run.items():
            for rank, (did, score) in enumerate(ranked(docs)[:depth], start=1):
                handle.write(f"{qid} Q0 {did} {rank} {score:.6f} {tag}\n")
