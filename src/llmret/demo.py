"""The main job: BM25 and zero-shot LLM retrievers side by side on the built-in tasks.

Runs on a laptop CPU in minutes: the zoo models install and convert on first use, the built-in
dataset builds from this Python's standard library, and every system writes its run and metrics
under the output folder next to a summary table.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from llmret.config import EncoderSettings
from llmret.data import builtin
from llmret.fileio import atomic_write, write_json
from llmret.pipeline import evaluate_retriever
from llmret.registry import load
from llmret.report import format_table
from llmret.retrievers.base import Retriever
from llmret.retrievers.bm25 import BM25Retriever

log = logging.getLogger(__name__)

COLUMNS = ["task", "system", "nDCG@10", "RR@10", "R@100", "seconds"]
METRICS = ["nDCG@10", "RR@10", "R@100"]
# CPU-friendly passage length for the demo; real runs set --passage-max-length as they need.
DEMO_PASSAGE_MAX_LENGTH = 256


def _dense(model: str) -> Retriever:
    from llmret.encoders.dense import DenseEncoder
    from llmret.retrievers.dense import DenseRetriever

    settings = EncoderSettings(model=model, passage_max_length=DEMO_PASSAGE_MAX_LENGTH, batch_size=16)
    return DenseRetriever(DenseEncoder.load(settings), progress=False)


def run_demo(out: Path, models: list[str], tasks: list[str], max_queries: int | None = None) -> list[dict[str, object]]:
    """Evaluate BM25 and each model zero-shot on each built-in task's test split; write and print the table."""
    builtin.builtin_root()
    systems: list[tuple[str, Retriever]] = [("bm25", BM25Retriever())]
    for model in models:
        start = time.perf_counter()
        systems.append((f"{model} (zero-shot)", _dense(model)))
        log.info("%s loaded in %.1f s", model, time.perf_counter() - start)
    rows: list[dict[str, object]] = []
    for task in tasks:
        data, rules = load(f"builtin:{task}", "test")
        if max_queries:
            data.queries = dict(list(data.queries.items())[:max_queries])
            data.qrels = {q: data.qrels[q] for q in data.queries}
        for name, retriever in systems:
            start = time.perf_counter()
            slug = name.split(" ")[0]
            result = evaluate_retriever(retriever, data, out / task / slug, name=name, exclude_self=rules.exclude_self)
            rows.append({"task": task, "system": name, **{m: result.evaluation.aggregate[m] for m in METRICS},
                         "seconds": time.perf_counter() - start})
            log.info("%s / %s: nDCG@10 %.4f", task, name, result.evaluation.aggregate["nDCG@10"])
    table = format_table(rows, COLUMNS, percent=METRICS)
    write_json(out / "results.json", rows)
    with atomic_write(out / "results.md") as handle:
        handle.write("Built-in test splits (metrics x100)\n\n```\n" + table + "\n```\n")
    print(table)
    print(f"\nruns, metrics and this table are in {out}")
    return rows
