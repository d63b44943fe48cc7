"""One evaluation end to end: index, retrieve, write the run, score it, write the metrics.

The output folder gets ``run.trec`` (TREC run), ``metrics.json`` (aggregate and per-query values)
and ``settings.json`` (what produced them), each written atomically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from llmret.data.dataset import RetrievalData
from llmret.data.qrels import read_qrels
from llmret.data.spec import resolve_folder
from llmret.data.trec import Run, read_run, write_run
from llmret.evaluation.conventions import CONVENTIONS, DatasetRules, load, rules_for, rules_for_qrels
from llmret.evaluation.measures import Evaluation, parse_measures
from llmret.retrievers.base import Retriever
from llmret.retrievers.factory import make_retriever
from llmret.util.errors import InputError
from llmret.util.fileio import check_output, write_json

LAZY_IMPORTS = "scoring a run file or a saved run loads no encoder (torch); searching does"

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    name: str
    evaluation: Evaluation
    run: Run
    index_seconds: float
    search_seconds: float

    def row(self) -> dict[str, object]:
        return {"system": self.name, **self.evaluation.aggregate,
                "index s": self.index_seconds, "search s": self.search_seconds}


def evaluate_retriever(retriever: Retriever, data: RetrievalData, out_dir: str | Path | None = None, *,
                       name: str | None = None, k: int = 1000, rules: DatasetRules | None = None,
                       measures: Sequence[str] | None = None) -> EvalResult:
    """Index ``data.corpus``, retrieve the top ``k`` for ``data.queries``, score against ``data.qrels``.

    ``rules`` (the dataset's evaluation convention, default ``plain``) decide whether a query's own id
    is dropped, the relevance level of binary measures and the measures reported unless ``measures``
    names others; the encoder must have been built with the same rules' lengths and instruction.
    """
    if k < 1:
        raise InputError(f"k must be at least 1, not {k}")
    rules = rules or CONVENTIONS["plain"]
    name = name or retriever.name
    start = time.perf_counter()
    retriever.index(data.corpus)
    indexed = time.perf_counter()
    run = rules.apply(retriever.retrieve(data.queries, k=k + 1 if rules.exclude_self else k))
    searched = time.perf_counter()
    evaluation = rules.evaluate(data.qrels, run, measures)
    result = EvalResult(name, evaluation, run, indexed - start, searched - indexed)
    truncated = retriever.truncation()
    if any(truncated.values()):
        log.warning("%s: %d of %d queries and %d passages were longer than the maximum length and were cut",
                    name, truncated["queries"], len(data.queries), truncated["passages"])
    if out_dir is not None:
        out = Path(out_dir)
        write_run(out / "run.trec", run, tag=name, depth=k)
        write_json(out / "metrics.json", {"system": name, "dataset": data.name, **evaluation.to_json(),
                                          "index_seconds": result.index_seconds,
                                          "search_seconds": result.search_seconds})
        write_json(out / "settings.json", {"system": name, "dataset": data.name, "k": k, "rules": rules.describe(),
                                           "truncated": truncated, **retriever.describe()})
        log.info("%s: run and metrics written to %s", name, out)
    return result


def search_saved(index_dirs: list[str | Path], data: str, split: str = "test", k: int = 1000,
                 convention: str | None = None) -> Run:
    """The top ``k`` of ``data``'s queries (a data spec and split) as text, encoded by the saved indexes'
    own encoder, under the data's evaluation rules (a query's own id dropped where they say so)."""
    from llmret.retrievers.searcher import Searcher  # loads an encoder (torch): only when searching

    queries, rules = load(data, split, convention)
    searcher = Searcher.open(list(index_dirs))
    return rules.apply(searcher.search(queries.queries, k + 1 if rules.exclude_self else k))


def score_run_file(run: str | Path, *, qrels: str | Path | None = None, data: str | None = None, split: str = "test",
                   convention: str | None = None, exclude_self: bool = False,
                   measures: Sequence[str] | None = None, out: str | Path | None = None) -> tuple[Evaluation, DatasetRules]:
    """Score a TREC run file by the rules of the dataset its judgments belong to: ``data``'s (its
    ``split``'s judgments, or ``qrels``), else those of the folder ``qrels`` sits in (``DIR/qrels/SPLIT.tsv``),
    else trec_eval's plain rules. ``out`` gets ``metrics.json`` and ``settings.json``."""
    if data:
        folder = resolve_folder(data, split)
        qrels_path = Path(qrels) if qrels else folder / "qrels" / f"{split}.tsv"
        rules = rules_for(folder, convention, spec=data)
    elif qrels:
        qrels_path, rules = Path(qrels), rules_for_qrels(qrels, convention)
    else:
        raise InputError("a run is scored against --qrels or the judgments of --data")
    if exclude_self:
        rules = replace(rules, exclude_self=True)
    evaluation = rules.evaluate(read_qrels(qrels_path), read_run(run), measures)
    if out:
        write_json(Path(out) / "metrics.json", {"run": str(run), **evaluation.to_json()})
        write_json(Path(out) / "settings.json", {"run": str(run), "qrels": str(qrels_path), "rules": rules.describe()})
    return evaluation, rules


def evaluate_on(retriever: str, data: str, split: str = "test", *, settings: Any = None, convention: str | None = None,
                exclude_self: bool = False, measures: Sequence[str] | None = None, out: str | Path | None = None,
                name: str | None = None, k: int = 1000, index: str | None = None,
                bm25: dict[str, float] | None = None) -> tuple[EvalResult, Retriever, Path]:
    """Evaluate a ``retriever`` (bm25, dense, sparse; ``settings``: its encoder's) on ``data``'s ``split``
    under the data's rules (or the named ``convention``), what ``llmret evaluate`` does: a bad measure name
    fails before any work; results go to ``out`` (default ``results/DATA-RETRIEVER``)."""
    loaded, rules = load(data, split, convention)
    if exclude_self:
        rules = replace(rules, exclude_self=True)
    parse_measures(measures or rules.measures, rules.relevance_level)
    if out is not None:
        check_output(out)
    made = make_retriever(retriever, settings, rules=rules, work_dir=out, index=index, bm25=bm25)
    folder = check_output(Path(out) if out else Path("results") / f"{loaded.name}-{made.name}")
    return evaluate_retriever(made, loaded, folder, name=name, k=k, rules=rules, measures=measures), made, folder
