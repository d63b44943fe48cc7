"""Paired t-test and randomisation test by hand (the t formula, every sign flip enumerated), Holm by hand,
and ``llmret compare`` on metrics files written by real evaluations."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from llmret.cli import main
from llmret.evaluation.significance import compare, correct, paired_tests

from helpers import random_texts, write_beir_folder


def test_paired_tests_by_hand() -> None:
    rng = np.random.default_rng(1)
    b = rng.random(12)
    a = b + rng.normal(0.05, 0.1, 12)
    p_t, p_r = paired_tests(a, b, trials=10_000)
    d = a - b
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    assert p_t == pytest.approx(2 * stats.t.sf(abs(t), len(d) - 1), rel=1e-9)
    observed = abs(d.mean())  # 2^12 = 4096 sign assignments <= 10,000 trials: the test is exact
    flips = [abs(np.mean(d * np.array(signs))) for signs in itertools.product((1, -1), repeat=len(d))]
    assert p_r == pytest.approx(sum(f >= observed - 1e-12 for f in flips) / len(flips), rel=1e-9)
    assert paired_tests(b, b) == (1.0, 1.0)


def test_holm_and_bonferroni_by_hand() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> kept monotone: 0.06
    assert correct(p, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert correct(p, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert correct(p, "none") == p
    with pytest.raises(ValueError, match="correction"):
        correct(p, "sidak")


def test_compare_refuses_different_query_sets() -> None:
    with pytest.raises(ValueError, match="different queries"):
        compare({"a": {"q1": 1.0, "q2": 0.5}, "b": {"q1": 1.0}}, "a", "nDCG@10")


def test_compare_cli_on_real_evaluations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    texts = random_texts(40, seed=3, min_words=8)
    folder = write_beir_folder(tmp_path / "data", {f"d{i}": t for i, t in enumerate(texts)},
                               {f"q{i}": " ".join(t.split()[2:5]) for i, t in enumerate(texts[:20])},
                               {f"q{i}": {f"d{i}": 1} for i in range(20)})
    files = []
    for name, k1 in (("bm25-a", "0.9"), ("bm25-b", "0.1"), ("bm25-c", "3.0")):
        out = tmp_path / name
        assert main(["evaluate", "--data", str(folder), "--k1", k1, "--name", name, "--out", str(out)]) == 0
        files.append(str(out / "metrics.json"))
    capsys.readouterr()
    assert main(["compare", *files, "--measure", "nDCG@10", "--trials", "2000"]) == 0
    out = capsys.readouterr().out
    assert "baseline bm25-a" in out and "bm25-b" in out and "bm25-c" in out and "holm" in out
    per_query = {Path(f).parent.name: json.loads(Path(f).read_text())["per_query"]["nDCG@10"] for f in files}
    rows = compare(per_query, "bm25-a", "nDCG@10", trials=2000)
    raw = [paired_tests(np.array([per_query[r.system][q] for q in sorted(per_query["bm25-a"])]),
                        np.array([per_query["bm25-a"][q] for q in sorted(per_query["bm25-a"])]), 2000)[0] for r in rows]
    assert [r.p_t_corrected for r in rows] == pytest.approx(correct(raw, "holm"))
    assert main(["compare", files[0], "--measure", "P@7"]) == 2  # not evaluated with that measure: clear error
