"""Hybrid retrieval: fuse runs (dense + sparse, or any others) with ranx.

Two methods cover common practice: reciprocal rank fusion (rank-based, no score calibration needed)
and a weighted sum of min-max normalised scores (``linear``; the weights say how much to trust each
run). A document absent from a run contributes nothing from that run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from llmret.data.trec import Run

FUSION_METHODS = ("rrf", "linear")


def fuse(runs: Sequence[Run], method: str = "rrf", *, weights: Sequence[float] | None = None, k: int = 60,
         depth: int = 1000) -> Run:
    """One run from ``runs``: ``rrf`` (score = sum of 1 / (k + rank)) or ``linear`` (weighted min-max sum)."""
    import ranx

    logging.getLogger("numba").setLevel(logging.WARNING)
    if method not in FUSION_METHODS:
        raise ValueError(f"fusion method must be one of {', '.join(FUSION_METHODS)}, not '{method}'")
    if len(runs) < 2:
        raise ValueError("fusion needs at least two runs")
    if weights is not None and len(weights) != len(runs):
        raise ValueError(f"{len(weights)} weights for {len(runs)} runs")
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
