"""Hybrid retrieval: fuse runs (dense + sparse, or any others).

Two methods cover common practice: reciprocal rank fusion (rank-based, no score calibration needed)
and a weighted sum of min-max normalised scores (``linear``; the weights say how much to trust each
run). A document absent from a run contributes nothing from that run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llmret.data.qrels import read_qrels
from llmret.data.trec import Run, ranked, read_run, write_run
from llmret.evaluation.conventions import rules_for_qrels
from llmret.evaluation.measures import Evaluation
from llmret.retrievers.base import Retriever
from llmret.util.errors import InputError
from llmret.util.fileio import check_output

FUSION_METHODS = ("rrf", "linear")


def fuse(runs: Sequence[Run], method: str = "rrf", *, weights: Sequence[float] | None = None, k: int = 60,
         depth: int = 1000) -> Run:
    """One run from ``runs``: ``rrf`` (score = sum over runs of 1 / (k + rank)) or ``linear`` (the weighted
    sum of each run's min-max normalised scores, per query; ranx's formula, its 1e-9 floor on the range
    included). A document a run lacks gets nothing from it.

    Written here rather than through ranx's ``fuse``: ranx refuses a run in which some query found no
    document (a sparse model that pruned every term of a query) and ranks tied scores its own way; here
    each run is ranked as trec_eval ranks it (ties by descending id)."""
    if method not in FUSION_METHODS:
        raise InputError(f"fusion method must be one of {', '.join(FUSION_METHODS)}, not '{method}'")
    if len(runs) < 2:
        raise InputError("fusion needs at least two runs")
    if weights is not None and len(weights) != len(runs):
        raise InputError(f"{len(weights)} weights for {len(runs)} runs")
    weights = list(weights) if weights is not None else [1.0 / len(runs)] * len(runs)
    out: Run = {}
    for qid in dict.fromkeys(q for run in runs for q in run):
        scores: dict[str, float] = {}
        for run, weight in zip(runs, weights):
            docs = ranked(run.get(qid, {}))
            if not docs:
                continue
            low, high = docs[-1][1], docs[0][1]
            for rank, (doc, score) in enumerate(docs, start=1):
                share = 1.0 / (k + rank) if method == "rrf" else weight * (score - low) / max(high - low, 1e-9)
                scores[doc] = scores.get(doc, 0.0) + share
        out[qid] = dict(sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:depth])
    return out


class FusedRuns(Retriever):
    """A hybrid of systems that have already run: it fuses their saved runs of the same queries, so a
    study's hybrid row costs no encoding and is scored like any other system (``evaluate_retriever``)."""

    name = "fusion"

    def __init__(self, runs: Sequence[str | Path], method: str = "rrf", *, weights: Sequence[float] | None = None,
                 k: int = 60) -> None:
        if method not in FUSION_METHODS:
            raise InputError(f"fusion method must be one of {', '.join(FUSION_METHODS)}, not '{method}'")
        self.runs, self.method, self.weights, self.k = [Path(r) for r in runs], method, weights, k

    def index(self, corpus: object) -> None:
        """Nothing to index: the fused systems searched the corpus."""

    def retrieve(self, queries: dict[str, str], k: int = 1000) -> Run:
        fused = fuse([read_run(r) for r in self.runs], self.method, weights=self.weights, k=self.k, depth=k)
        return {qid: fused.get(qid, {}) for qid in queries}

    def describe(self) -> dict[str, object]:
        return {"retriever": self.name, "method": self.method, "weights": self.weights, "rrf_k": self.k,
                "runs": [str(r) for r in self.runs]}


def fuse_files(runs: Sequence[str | Path], out: str | Path, method: str = "rrf", *, weights: Sequence[float] | None = None,
               rrf_k: int = 60, depth: int = 1000, qrels: str | Path | None = None, convention: str | None = None,
               measures: Sequence[str] | None = None) -> Evaluation | None:
    """Fuse TREC run files into ``out``; with ``qrels``, the fused run's scores by its dataset's rules."""
    check_output(out, folder=False)
    run = fuse([read_run(r) for r in runs], method, weights=weights, k=rrf_k, depth=depth)
    write_run(out, run, tag=f"fused-{method}", depth=depth)
    if qrels is None:
        return None
    return rules_for_qrels(qrels, convention).evaluate(read_qrels(qrels), run, measures)
