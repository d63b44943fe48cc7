"""Hybrid retrieval: fuse runs (dense + sparse, or any others) with ranx.

Two methods cover common practice: reciprocal rank fusion (rank-based, no score calibration needed)
and a weighted sum of min-max normalised scores (``linear``; the weights say how much to trust each
run). A document absent from a run contributes nothing from that run.
"""

from __future__ import annotations

import logging
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
    """One run from ``runs``: ``rrf`` (score = sum of 1 / (k + rank)) or ``linear`` (weighted min-max sum)."""
    import ranx  # here: ranx compiles its kernels when first imported and used

    logging.getLogger("numba").setLevel(logging.WARNING)
    if method not in FUSION_METHODS:
        raise InputError(f"fusion method must be one of {', '.join(FUSION_METHODS)}, not '{method}'")
    if len(runs) < 2:
        raise InputError("fusion needs at least two runs")
    if weights is not None and len(weights) != len(runs):
        raise InputError(f"{len(weights)} weights for {len(runs)} runs")
    if method == "rrf":
        # RRF reads ranks: each run's ranks as trec_eval ranks it (ties by descending id), handed to ranx as
        # distinct scores, since ranx orders tied scores its own way and the fused scores would follow it
        runs = [{q: {d: -float(rank) for rank, (d, _) in enumerate(ranked(docs))} for q, docs in run.items()}
                for run in runs]
    weights = list(weights) if weights is not None else [1.0 / len(runs)] * len(runs)
    # A run without a single document (a sparse model that pruned every term) adds nothing to any score,
    # and ranx refuses empty runs: the others are fused; a lone one is fused with an empty copy of itself.
    kept = [(run, w) for run, w in zip(runs, weights) if any(run.values())]
    if len(kept) < 2:  # ranx fuses two runs or more: one alone is its own scores, normalised as ranx would
        return {q: {d: s for d, s in ranked(_alone(docs, method, k, w))[:depth]}
                for run, w in kept or [({q: {} for run in runs for q in run}, 1.0)] for q, docs in run.items()}
    ranx_runs = [ranx.Run({q: dict(docs) for q, docs in run.items() if docs}, name=f"run{i}")
                 for i, (run, _) in enumerate(kept)]
    if method == "rrf":
        fused = ranx.fuse(ranx_runs, method="rrf", params={"k": k})
    else:
        fused = ranx.fuse(ranx_runs, norm="min-max", method="wsum", params={"weights": [w for _, w in kept]})
    out: Run = {}
    for qid, docs in fused.to_dict().items():
        best = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:depth]
        out[qid] = {d: float(s) for d, s in best}
    return out


def _alone(docs: dict[str, float], method: str, k: int, weight: float) -> dict[str, float]:
    """One run's share of a fusion: 1 / (k + rank) for RRF (scores here are already minus ranks), or its
    weighted min-max normalised scores."""
    if method == "rrf":
        return {d: 1.0 / (k + 1 - s) for d, s in docs.items()}
    low, high = min(docs.values(), default=0.0), max(docs.values(), default=0.0)
    return {d: weight * ((s - low) / (high - low) if high > low else 0.0) for d, s in docs.items()}


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
