"""trec_eval measures through ir-measures (pytrec_eval underneath), aggregate and per query.

Convention: the mean is taken over every judged query, a query missing from the run scoring 0
(trec_eval's ``-c``). trec_eval's default averages only over the queries a run answers, which rewards
a run for dropping hard queries: a silent wrong result we refuse. Missing queries are reported.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ir_measures

from llmret.data.qrels import Qrels
from llmret.data.trec import Run, ranked
from llmret.util.errors import InputError

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


def _supported_names() -> list[str]:
    def supported(measure: Any) -> bool:
        try:
            return bool(ir_measures.pytrec_eval.supports(measure))
        except AssertionError:  # a measure that needs parameters to be valid
            return False

    return sorted(name for name, measure in ir_measures.measures.registry.items()
                  if name.isascii() and (supported(measure) or supported(measure @ 10)))


def parse_measures(names: Sequence[str], relevance_level: int = 1) -> list[Any]:
    """ir-measures objects for ``names``; binary measures given no ``rel`` get ``relevance_level``.

    ``relevance_level`` is trec_eval's ``-l``: the grade from which a judged document counts as relevant
    for RR, R, P, AP and the other binary measures (2 for TREC DL). A measure written with its own
    ``rel`` (``RR(rel=2)@10``) keeps it. An unknown or unsupported name is a ValueError listing the known ones.
    """
    parsed = []
    for name in names:
        try:
            measure = ir_measures.parse_measure(name)
        except (NameError, ValueError, SyntaxError) as exc:
            raise InputError(f"unknown measure '{name}' ({exc}); known: {', '.join(_supported_names())}, "
                             "with @cutoff and (rel=N) where they apply, e.g. nDCG@10, RR(rel=2)@10, R@1000") from None
        cutoff = measure.params.get("cutoff")
        if cutoff is not None and (not isinstance(cutoff, int) or cutoff < 1):  # trec_eval aborts on @0
            raise InputError(f"measure '{name}': the cutoff after @ must be a whole number of at least 1")
        if relevance_level != 1 and "rel" in measure.SUPPORTED_PARAMS and "rel" not in measure.params:
            measure = measure(rel=relevance_level)
        plain = measure.NAME == "RR" and "cutoff" in measure.params
        if not ir_measures.pytrec_eval.supports(ir_measures.RR(**{k: v for k, v in measure.params.items() if k != "cutoff"})
                                                if plain else measure):
            raise InputError(f"measure '{name}' is not one trec_eval computes; known: {', '.join(_supported_names())}")
        parsed.append(measure)
    return parsed


def evaluate(qrels: Qrels, run: Run, measures: Sequence[str] = DEFAULT_MEASURES, relevance_level: int = 1) -> Evaluation:
    """Score ``run`` against ``qrels`` with the named ir-measures measures (e.g. ``nDCG@10``, ``RR@10``).

    ``relevance_level``: see :func:`parse_measures`.
    """
    parsed = parse_measures(measures, relevance_level)
    names = [str(m) for m in parsed]
    judged = list(qrels)
    per_query: dict[str, dict[str, float]] = {name: dict.fromkeys(judged, 0.0) for name in names}
    answered = {qid: docs for qid, docs in run.items() if qid in qrels and docs}
    # The pytrec_eval provider, pinned: it is trec_eval's own code. ir-measures' automatic choice sends
    # RR@k to providers that break score ties the other way, and pytrec_eval has no cutoff for RR, so
    # RR@k is computed as trec_eval -M k does it: plain RR over the run cut at rank k (with its rel).
    cut_rr = [m for m in parsed if m.NAME == "RR" and "cutoff" in m.params]
    plain = [m for m in parsed if m not in cut_rr]
    if plain:
        for metric in ir_measures.pytrec_eval.iter_calc(plain, qrels, answered):
            per_query[str(metric.measure)][metric.query_id] = float(metric.value)
    for measure in cut_rr:
        cut = {q: dict(ranked(docs)[: measure["cutoff"]]) for q, docs in answered.items()}
        whole = ir_measures.RR(**{k: v for k, v in measure.params.items() if k != "cutoff"})
        for metric in ir_measures.pytrec_eval.iter_calc([whole], qrels, cut):
            per_query[str(measure)][metric.query_id] = float(metric.value)
    missing = [qid for qid in judged if qid not in answered]
    if missing:
        log.warning("%d of %d judged queries have no results in the run; they count as 0", len(missing), len(judged))
    aggregate = {name: sum(values.values()) / max(len(values), 1) for name, values in per_query.items()}
    return Evaluation(aggregate, per_query, missing)
