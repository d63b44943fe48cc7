"""trec_eval measures through ir-measures (pytrec_eval underneath), aggregate and per query.

Convention: the mean is taken over every judged query, a query missing from the run scoring 0
(trec_eval's ``-c``). trec_eval's default averages only over the queries a run answers, which rewards
a run for dropping hard queries: a silent wrong result we refuse. Missing queries are reported.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import ir_measures

from llmret.data.qrels import Qrels
from llmret.data.trec import Run, ranked

log = logging.getLogger(__name__)

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "R@10", "R@100", "R@1000", "AP")


@dataclass
class Evaluation:
    """Aggregate values by measure name, and per-query values for significance tests."""

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)  # measure -> query id -> value
    missing_queries: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"aggregate": self.aggregate, "queries": len(next(iter(self.per_query.values()), {})),
                "missing_queries": self.missing_queries, "per_query": self.per_query}


def evaluate(qrels: Qrels, run: Run, measures: Sequence[str] = DEFAULT_MEASURES) -> Evaluation:
    """Score ``run`` against ``qrels`` with the named ir-measures measures (e.g. ``nDCG@10``, ``RR@10``)."""
    parsed = [ir_measures.parse_measure(m) for m in measures]
    names = [str(m) for m in parsed]
    judged = list(qrels)
    per_query: dict[str, dict[str, float]] = {name: dict.fromkeys(judged, 0.0) for name in names}
    answered = {qid: docs for qid, docs in run.items() if qid in qrels and docs}
    # The pytrec_eval provider, pinned: it is trec_eval's own code. ir-measures' automatic choice sends
    # RR@k to providers that break score ties the other way, and pytrec_eval has no cutoff for RR, so
    # RR@k is computed as trec_eval -M k does it: plain RR over the run cut at rank k.
    plain = [m for m in parsed if m.NAME != "RR" or m["cutoff"] is None]
    for metric in ir_measures.pytrec_eval.iter_calc(plain, qrels, answered):
        per_query[str(metric.measure)][metric.query_id] = float(metric.value)
    for measure in parsed:
        if measure.NAME == "RR" and measure["cutoff"] is not None:
            cut = {q: dict(ranked(docs)[: measure["cutoff"]]) for q, docs in answered.items()}
            for metric in ir_measures.pytrec_eval.iter_calc([ir_measures.RR], qrels, cut):
                per_query[str(measure)][metric.query_id] = float(metric.value)
    missing = [qid for qid in judged if qid not in answered]
    if missing:
        log.warning("%d of %d judged queries have no results in the run; they count as 0", len(missing), len(judged))
    aggregate = {name: sum(values.values()) / max(len(values), 1) for name, values in per_query.items()}
    return Evaluation(aggregate, per_query, missing)
