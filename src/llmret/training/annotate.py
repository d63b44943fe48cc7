"""``llmret annotate``: a teacher's score on every (query, passage) of a training file.

The output is the input with a ``score`` on each passage and the teacher's name on each row.
Scoring is batched over pairs across queries. It is resumable: rows are appended to ``OUT.partial``
a block of queries at a time and flushed to disk; a killed run keeps every complete row, drops a
half-written last one, checks that what is there is the start of this input under this teacher,
and scores only the rest, so nothing is scored twice. The finished file replaces ``OUT`` at once.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

from llmret.data.corpus import Corpus
from llmret.data.training import TrainExample, example_json, read_training
from llmret.training.settings import TeacherSettings
from llmret.training.teachers import Teacher, load_teacher, score_pairs
from llmret.util.cache import cache_dir
from llmret.util.errors import DataError, InputError
from llmret.util.fileio import atomic_write, check_output

log = logging.getLogger(__name__)


def _done_rows(partial: Path, examples: list[TrainExample], teacher: str) -> int:
    """How many leading rows of a previous run's partial file are complete and belong to this job.

    Whatever follows the last newline (the run died while writing that row) is cut off the file.
    """
    if not partial.is_file():
        return 0
    lines = partial.read_bytes().split(b"\n")[:-1]  # what follows the last newline was cut off mid-write
    good, size = 0, 0
    for number, raw in enumerate(lines, start=1):
        try:
            row = json.loads(raw)
        except json.JSONDecodeError:
            raise DataError(partial, number, "invalid JSON in a partial annotation file") from None
        if row.get("teacher") != teacher:
            raise DataError(partial, number, f"scored by {row.get('teacher')!r}, not {teacher!r}: remove the "
                                             "partial file or annotate with that teacher")
        if good >= len(examples) or row.get("query_id") != examples[good].query_id:
            raise DataError(partial, number, "does not match the input file (another input was being annotated): "
                                             "remove the partial file to start over")
        good, size = good + 1, size + len(raw) + 1
    with open(partial, "r+b") as handle:  # drop the cut-off tail, if any
        handle.truncate(size)
    return good


def _blocks(examples: list[TrainExample], start: int, size: int) -> Iterator[list[TrainExample]]:
    for begin in range(start, len(examples), size):
        yield examples[begin:begin + size]


def annotate(source: str | Path, out: str | Path, teacher: Teacher, *, corpus: Corpus | None = None,
             batch_size: int = 32, block_queries: int = 64, by_id: bool = False) -> Path:
    """Write ``out``: ``source`` with ``teacher``'s score on every passage. Returns ``out``."""
    if batch_size < 1 or block_queries < 1:
        raise InputError("batch_size and block_queries must be at least 1")
    out = Path(out)
    examples = read_training(source, corpus)
    partial = out.with_name(out.name + ".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    start = _done_rows(partial, examples, teacher.name)
    if start:
        log.info("%s: %d of %d queries already scored; continuing", partial, start, len(examples))
    pairs = [sum(len(ex.positives) + len(ex.negatives) for ex in examples[:start]),
             sum(len(ex.positives) + len(ex.negatives) for ex in examples)]
    bar = tqdm(total=pairs[1], initial=pairs[0], desc=f"scoring with {teacher.name}", unit="pair")
    with open(partial, "a", encoding="utf-8") as handle:
        for block in _blocks(examples, start, block_queries):
            score_pairs(teacher, [(ex.query, p) for ex in block for p in ex.positives + ex.negatives], batch_size,
                        bar.update)
            handle.write("".join(json.dumps({**example_json(ex, by_id=by_id), "teacher": teacher.name},
                                            ensure_ascii=False) + "\n" for ex in block))
            handle.flush()
            os.fsync(handle.fileno())
    bar.close()
    os.replace(partial, out)
    return out


def scored_by(examples: list[TrainExample], teacher: str, max_length: int | None = None) -> list[TrainExample]:
    """``examples`` with ``teacher``'s score on every passage (``train --teacher``; ``max_length`` as
    :func:`llmret.training.teachers.load_teacher` takes it), annotated once: the scored file is kept in llmret's
    cache under a digest of the teacher, its length and the examples' content,
    so runs that share the data (a study's objectives and backbones) share the scoring, and a killed
    scoring resumes."""
    import hashlib

    rows = "".join(json.dumps(example_json(ex), ensure_ascii=False, sort_keys=True) + "\n" for ex in examples)
    digest = hashlib.sha256(f"{teacher}\n{max_length}\n{rows}".encode()).hexdigest()[:16]
    folder = cache_dir("annotations")
    out = folder / f"{digest}.jsonl"
    if not out.is_file():
        source = folder / f"{digest}.input.jsonl"
        with atomic_write(source) as handle:
            handle.write(rows)
        log.info("scoring %d training queries' passages with %s (cached as %s)", len(examples), teacher, out)
        annotate(source, out, load_teacher(teacher, max_length=max_length))
        source.unlink()
    return read_training(out)


def annotate_file(source: str | Path, out: str | Path, teacher: str, *, corpus: str | Path | None = None,
                  scoring: TeacherSettings | None = None, by_id: bool = False) -> tuple[str, Path]:
    """``llmret annotate``: ``source`` scored by the ``teacher`` spec into ``out``; the teacher's name and
    ``out``. A missing input fails before the teacher loads (minutes for an LLM judge)."""
    scoring = scoring or TeacherSettings()
    if not Path(source).is_file():
        raise DataError(source, None, "file not found")
    check_output(out, folder=False)
    judge = load_teacher(teacher, prompt=scoring.prompt, max_length=scoring.max_length)
    passages = Corpus.from_file(corpus) if corpus else None
    return judge.name, annotate(source, out, judge, corpus=passages, batch_size=scoring.batch_size, by_id=by_id)
