"""llmret's measures agree with NIST trec_eval on the real MS MARCO dev, DL19 and DL20 judgments.

The golden values come from trec_eval 10 itself (tests/data/make_trec_eval_golden.py) on synthetic
runs that tests/helpers.py rebuilds deterministically, ties and unjudged documents included.
"""

import json
from pathlib import Path

import pytest

from llmret.data.qrels import read_qrels
from llmret.data.trec import read_run, write_run
from llmret.evaluation.measures import DEFAULT_MEASURES, evaluate, parse_measures

from helpers import MSMARCO_EVAL, synthetic_run

GOLDEN = json.loads((Path(__file__).parent / "data" / "trec_eval_golden.json").read_text())


MEASURES = (*DEFAULT_MEASURES, "RR", "P@10")


@pytest.mark.parametrize("level", [1, 2])
@pytest.mark.parametrize("name", ["dl19", "dl20", "dev-small"])
def test_measures_match_trec_eval(name: str, level: int, tmp_path: Path) -> None:
    """Per query, every measure equals trec_eval's with -l 1 and with -l 2 (TREC DL's binary convention)."""
    entry = GOLDEN[name]
    qrels = read_qrels(MSMARCO_EVAL / name / "qrels" / "test.tsv")
    qrels = {q: qrels[q] for q in sorted(qrels)[: entry["max_queries"]]}
    # Through a run file, as a user would hand one over.
    write_run(tmp_path / "run.trec", synthetic_run(qrels, name, entry["max_queries"]))
    run = read_run(tmp_path / "run.trec")
    golden = entry["per_query" if level == 1 else "per_query_l2"]
    result = evaluate(qrels, run, MEASURES, relevance_level=level)
    for measure, parsed in zip(MEASURES, parse_measures(MEASURES, level)):
        expected = golden[measure]
        for qid, value in result.per_query[str(parsed)].items():
            assert value == pytest.approx(expected[qid], abs=1e-4), (measure, qid)
        assert result.aggregate[str(parsed)] == pytest.approx(expected["all"], abs=1e-4), measure
    if level == 2:  # the same through explicit measure names
        explicit = evaluate(qrels, run, ["RR(rel=2)@10", "R(rel=2)@1000", "AP(rel=2)"])
        for name_, key in (("RR(rel=2)@10", "RR@10"), ("R(rel=2)@1000", "R@1000"), ("AP(rel=2)", "AP")):
            assert explicit.aggregate[name_] == pytest.approx(golden[key]["all"], abs=1e-4), name_
        assert "nDCG@10" in result.aggregate  # graded: no rel parameter


def test_unknown_measure_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown measure 'FOO@10'.*known: AP, .*nDCG"):
        evaluate({"q": {"d": 1}}, {"q": {"d": 1.0}}, ["FOO@10"])
    with pytest.raises(ValueError, match="'Judged@10' is not one trec_eval computes"):
        evaluate({"q": {"d": 1}}, {"q": {"d": 1.0}}, ["Judged@10"])


def test_missing_queries_count_as_zero() -> None:
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    result = evaluate(qrels, {"q1": {"d1": 1.0}}, ["RR@10"])
    assert result.aggregate["RR@10"] == pytest.approx(0.5)
    assert result.missing_queries == ["q2"]


def test_graded_ndcg_by_hand() -> None:
    # Two relevant documents (grades 2 and 1) ranked 2nd and 1st: DCG = 1/log2(2) + 3/log2(3) with gains
    # 2^rel - 1? trec_eval uses linear gains: DCG = 1 + 2/log2(3); ideal = 2 + 1/log2(3).
    import math

    qrels = {"q": {"a": 2, "b": 1}}
    run = {"q": {"b": 2.0, "a": 1.0, "x": 0.5}}
    got = evaluate(qrels, run, ["nDCG@10"]).aggregate["nDCG@10"]
    assert got == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))
