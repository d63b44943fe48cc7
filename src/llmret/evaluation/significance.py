"""Paired significance tests between systems on the same queries, with multiple-comparison correction.

Two systems' per-query values (nDCG@10 of each query, as ``metrics.json`` stores them) are compared
by the paired t-test and by the paired randomisation test (Fisher's sign-flip test: under the null
hypothesis each query's difference is as likely negative as positive), the two tests IR papers
use (Smucker et al., 2007). Comparing several systems with one baseline makes several tests, so the
p-values are corrected: Holm-Bonferroni by default (controls the family-wise error, and is never
less powerful than Bonferroni), or Bonferroni, or none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from llmret.util.errors import DataError, InputError
from llmret.util.fileio import read_json

CORRECTIONS = ("holm", "bonferroni", "none")


@dataclass
class Comparison:
    """One system against the baseline on one measure."""

    system: str
    baseline: str
    measure: str
    queries: int
    mean: float
    baseline_mean: float
    p_t: float  # paired t-test, two-sided
    p_randomization: float  # paired randomisation (sign-flip) test, two-sided
    p_t_corrected: float = float("nan")
    p_randomization_corrected: float = float("nan")
    significant: bool = False  # both corrected p-values below alpha

    @property
    def delta(self) -> float:
        return self.mean - self.baseline_mean

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "delta": self.delta}


def paired_values(system: Mapping[str, float], baseline: Mapping[str, float], names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """The two systems' values on the same queries, in one order; different query sets are an error
    (a query one system was not scored on would silently count as a difference)."""
    if set(system) != set(baseline):
        only = sorted(set(system) ^ set(baseline))
        raise InputError(f"{names[0]} and {names[1]} were scored on different queries ({len(only)} differ, e.g. "
                         f"'{only[0]}'); compare runs evaluated on the same judgments")
    queries = sorted(system)
    return np.array([system[q] for q in queries]), np.array([baseline[q] for q in queries])


def paired_tests(a: np.ndarray, b: np.ndarray, trials: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """(paired t-test p, randomisation test p), both two-sided. With 2^n <= trials the randomisation
    test enumerates every sign assignment (exact); otherwise it samples ``trials`` of them."""
    from scipy import stats

    diff = a - b
    if not np.any(diff):
        return 1.0, 1.0  # identical systems: no evidence of a difference (the t statistic is undefined)
    p_t = float(stats.ttest_rel(a, b).pvalue)
    if np.all(diff == diff[0]):
        p_t = 0.0  # every query moved by the same amount: zero variance, the t statistic is infinite
    result = stats.permutation_test((a, b), lambda x, y: np.mean(x - y), permutation_type="samples",
                                    n_resamples=trials, alternative="two-sided", rng=np.random.default_rng(seed))
    return p_t, float(result.pvalue)


def correct(pvalues: Sequence[float], method: str = "holm") -> list[float]:
    """Corrected p-values for a family of tests (Holm-Bonferroni, Bonferroni, or none)."""
    if method not in CORRECTIONS:
        raise InputError(f"correction must be one of {', '.join(CORRECTIONS)}, not '{method}'")
    m = len(pvalues)
    if method == "none" or m == 0:
        return list(pvalues)
    if method == "bonferroni":
        return [min(1.0, p * m) for p in pvalues]
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):  # step-down: the k-th smallest is multiplied by (m - k), kept monotone
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def compare(per_query: Mapping[str, Mapping[str, float]], baseline: str, measure: str, *, alpha: float = 0.05,
            correction: str = "holm", trials: int = 10_000, seed: int = 0) -> list[Comparison]:
    """Every system of ``per_query`` (system -> query -> value) against ``baseline``, corrected as one family."""
    if baseline not in per_query:
        raise InputError(f"baseline '{baseline}' is not among the systems: {', '.join(per_query)}")
    base = per_query[baseline]
    rows = []
    for name, values in per_query.items():
        if name == baseline:
            continue
        a, b = paired_values(values, base, (name, baseline))
        p_t, p_r = paired_tests(a, b, trials, seed)
        rows.append(Comparison(name, baseline, measure, len(a), float(a.mean()), float(b.mean()), p_t, p_r))
    for key in ("p_t", "p_randomization"):
        for row, p in zip(rows, correct([getattr(r, key) for r in rows], correction)):
            setattr(row, f"{key}_corrected", p)
    for row in rows:
        row.significant = row.p_t_corrected < alpha and row.p_randomization_corrected < alpha
    return rows


def compare_files(paths: Sequence[str | Path], measure: str, baseline: str | None = None, *, alpha: float = 0.05,
                  correction: str = "holm", trials: int = 10_000) -> tuple[str, list[Comparison]]:
    """:func:`compare` over ``metrics.json`` files of ``llmret evaluate`` (named by their ``system``, else
    their folder); the baseline is the system named ``baseline``, else the first file's."""
    if len(paths) < 2:
        raise InputError(f"compare needs at least two metrics.json files (a baseline and a system), not {len(paths)}")
    per_query: dict[str, Mapping[str, float]] = {}
    for path in paths:
        data = read_json(path)
        name = str(data.get("system") or Path(path).parent.name) if isinstance(data, dict) else str(path)
        values = data.get("per_query", {}).get(measure) if isinstance(data, dict) else None
        if values is None:
            raise DataError(path, None, f"no per-query '{measure}' values (a metrics.json of llmret evaluate, "
                                        "evaluated with that measure)")
        if name in per_query:
            raise DataError(path, None, f"a second system named '{name}'")
        per_query[name] = values
    baseline = baseline or next(iter(per_query))
    return baseline, compare(per_query, baseline, measure, alpha=alpha, correction=correction, trials=trials)
