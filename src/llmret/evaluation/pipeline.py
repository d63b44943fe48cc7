"""One evaluation end to end: index, retrieve, write the run, score it, write the metrics.

The output folder gets ``run.trec`` (TREC run), ``metrics.json`` (aggregate and per-query values)
and ``settings.json`` (what produced them), each written atomically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llmret.data.dataset import RetrievalData
from llmret.data.trec import Run, write_run
from llmret.evaluation.measures import Evaluation
from llmret.util.fileio import write_json
from llmret.evaluation.conventions import CONVENTIONS, DatasetRules
from llmret.retrievers.base import Retriever

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
        raise ValueError(f"k must be at least 1, not {k}")
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
