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
from llmret.data.trec import Run, read_run, write_run
from llmret.evaluation.conventions import rules_for_qrels
from llmret.evaluation.measures import Evaluation
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
    ranx_runs = [ranx.Run({q: dict(docs) for q, docs in run.items() if docs}, name=f"run{i}") for i, run in enumerate(runs)]
    if method == "rrf":
        fused = ranx.fuse(ranx_runs, method="rrf", params={"k": k})
    else:
        weights = list(weights) if weights is not None else [1.0 / len(runs)] * len(runs)
        fused = ranx.fuse(ranx_runs, norm="min-max", method="wsum", params={"weights": weights})
    out: Run = {}
    for qid, docs in fused.to_dict().items():
        best = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:depth]
        out[qid] = {d: float(s) for d, s in best}
    return out


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
