"""``llmret mine``: hard negatives from a run (BM25 or any trained retriever), without likely false negatives.

For each judged query, candidates are the run's documents ranked within a window (skipping the top
ranks avoids unjudged relevant documents, which crowd the very top of good runs), judged positives
are skipped, and candidates that look relevant are dropped as likely false negatives:

- ``max_teacher_score``: a teacher scores every candidate; those scoring above it are dropped;
- ``margin``: candidates scored above (weakest positive's score - margin) are dropped; scores come
  from the teacher when there is one, else from the run (a query none of whose positives the run
  retrieved then cannot be filtered this way; it is counted and reported).

With a teacher the output carries its scores on every passage (positives included), ready for
distillation. Mining lives outside ``llmret.data`` because it runs retrievers.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from pathlib import Path

from llmret.data.dataset import RetrievalData, load_dataset
from llmret.data.spec import resolve_folder
from llmret.data.training import Passage, TrainExample, read_training, resolve_passages, write_training
from llmret.data.trec import Run, read_run
from llmret.retrievers.bm25 import BM25Retriever
from llmret.training.settings import MiningSettings, TeacherSettings
from llmret.training.teachers import Teacher, load_teacher, score_pairs
from llmret.util.cache import cache_dir
from llmret.util.errors import InputError
from llmret.util.fileio import build_once, check_output

log = logging.getLogger(__name__)


def mine(data: RetrievalData, run: Run, settings: MiningSettings, teacher: Teacher | None = None,
         batch_size: int = 32) -> tuple[list[TrainExample], Counter[str]]:
    """Training examples (passages with text) and counts of what was dropped and why."""
    if not 0 <= settings.depth_from < settings.depth_to:
        raise InputError(f"rank window [{settings.depth_from}, {settings.depth_to}) is empty")
    if settings.count < 1:
        raise InputError(f"count must be at least 1, not {settings.count}")
    if settings.max_teacher_score is not None and teacher is None:
        raise InputError("max_teacher_score needs a teacher")
    stats: Counter[str] = Counter()
    examples = []
    for qid, query in data.queries.items():
        judged = data.qrels.get(qid, {})
        positives = [Passage(d) for d, rel in judged.items() if rel > 0]
        if not positives:
            stats["queries without a judged positive"] += 1
            continue
        # Ties keep the run's own order (a run file's rank order), as retrievers return them.
        window = sorted(run.get(qid, {}).items(), key=lambda kv: -kv[1])[settings.depth_from:settings.depth_to]
        candidates = [Passage(d, score=s) for d, s in window if judged.get(d, 0) <= 0]
        stats["judged positives skipped"] += len(window) - len(candidates)
        examples.append(TrainExample(qid, query, positives, candidates))
    resolve_passages(examples, data.corpus)
    if teacher is not None:
        _score(examples, teacher, batch_size)
    for example in examples:
        example.negatives = _filter(example, run.get(example.query_id, {}), settings, teacher is not None, stats)
        if teacher is None:
            for passage in example.negatives:
                passage.score = None  # run scores are no teacher scores: distilling from them would be wrong
    stats["queries"] = len(examples)
    return examples, stats


def _score(examples: list[TrainExample], teacher: Teacher, batch_size: int) -> None:
    from tqdm.auto import tqdm

    pairs = [(ex.query, p) for ex in examples for p in ex.positives + ex.negatives]
    with tqdm(total=len(pairs), desc=f"scoring with {teacher.name}", unit="pair") as bar:
        score_pairs(teacher, pairs, batch_size, bar.update)


def _filter(example: TrainExample, scores: dict[str, float], settings: MiningSettings, by_teacher: bool,
            stats: Counter[str]) -> list[Passage]:
    """The first ``count`` candidates (in rank order) that do not look relevant."""
    kept = example.negatives
    if settings.max_teacher_score is not None:
        kept = [p for p in kept if p.score <= settings.max_teacher_score]  # type: ignore[operator]
        stats["dropped: teacher score above the maximum"] += len(example.negatives) - len(kept)
    if settings.margin is not None:
        positive = [p.score if by_teacher else scores.get(p.docid) for p in example.positives]
        known = [s for s in positive if s is not None]
        if known:
            before = len(kept)
            kept = [p for p in kept if p.score <= min(known) - settings.margin]  # type: ignore[operator]
            stats["dropped: within the margin of a positive"] += before - len(kept)
        else:
            stats["queries not margin-filtered (no positive in the run)"] += 1
    if len(kept) < settings.count:
        stats["queries with fewer negatives than asked"] += 1
    return kept[: settings.count]


MINED_VERSION = 1  # bump when mine_bm25_negatives would mine otherwise, so cached files are made again


def mined_examples(folder: Path, split: str = "train", count: int = 20) -> list[TrainExample]:
    """The judged queries of a BEIR folder's ``split`` with the top BM25 hits that are not judged relevant
    as negatives, mined once per folder content and cached (a built-in task is mined once, not at every
    training)."""
    data = load_dataset(folder, split)
    digest = hashlib.sha256(f"{MINED_VERSION}:{split}:{count}".encode())
    for name in ("corpus.jsonl", "corpus.jsonl.gz", "queries.jsonl", f"qrels/{split}.tsv"):
        if (folder / name).is_file():
            digest.update(name.encode() + (folder / name).read_bytes())
    cached = build_once(cache_dir("mined") / digest.hexdigest()[:20],
                        lambda tmp: write_training(tmp / "train.jsonl", mine_bm25_negatives(data, count), by_id=True),
                        done="train.jsonl")
    return read_training(cached / "train.jsonl", data.corpus)


def mine_bm25_negatives(data: RetrievalData, count: int = 20) -> list[TrainExample]:
    """One example per judged query: its relevant documents and the top BM25 hits that are not."""
    bm25 = BM25Retriever()
    bm25.index(data.corpus)
    examples, _ = mine(data, bm25.retrieve(data.queries, k=count + 10), MiningSettings(0, count + 10, count))
    return examples


def mine_file(data: str, split: str, run: str | Path, out: str | Path, settings: MiningSettings, *,
              teacher: str | None = None, scoring: TeacherSettings | None = None,
              by_id: bool = False) -> tuple[int, Counter[str]]:
    """``llmret mine``: a training file of ``data``'s judged queries (its ``split``) with negatives mined
    from a TREC ``run`` (scored by the ``teacher`` spec when given); the number of queries written and
    the counts of what was dropped and why. Bad input fails before a teacher loads."""
    scoring = scoring or TeacherSettings()
    check_output(out, folder=False)
    dataset = load_dataset(resolve_folder(data, split), split)
    ranked = read_run(run)
    judge = load_teacher(teacher, prompt=scoring.prompt, max_length=scoring.max_length) if teacher else None
    examples, stats = mine(dataset, ranked, settings, judge, scoring.batch_size)
    if not examples:
        raise InputError(f"{data}: no query of split '{split}' has a judged positive")
    write_training(out, examples, by_id=by_id, extra={"teacher": judge.name} if judge else None)
    return len(examples), stats
