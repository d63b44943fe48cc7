"""Power-law fits for scaling studies: quality against model parameters and against training compute.

The scaling study reports how retrieval quality moves with size and compute as y = a * x^b, fitted by
least squares on log y against log x (the form scaling-law papers report exponents in). Written here
rather than taken from a library because what a report needs is small and specific: the exponent's
standard error from the regression's residuals and a 95% interval from Student's t, which is what
tells a reader whether two exponents differ. Checked against ``scipy.stats.linregress`` (tests).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class PowerLaw:
    """y = a * x ** exponent, fitted on ``points`` (x, y) pairs, with a kept as ``log_coefficient`` (ln a):
    points close together in x (two models of nearly one size) give steep exponents whose a overflows a
    float, while ln a and every fitted value stay finite."""

    log_coefficient: float
    exponent: float
    exponent_se: float  # standard error of the exponent (nan with two points: no residual to estimate it)
    ci95: tuple[float, float]
    r2: float
    points: int

    @property
    def coefficient(self) -> float:
        """a itself (inf where it exceeds a float)."""
        return math.exp(self.log_coefficient) if self.log_coefficient < 709 else math.inf

    def __call__(self, x: np.ndarray | float) -> np.ndarray | float:
        return np.exp(self.log_coefficient + self.exponent * np.log(x))

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> PowerLaw:
    """Least squares on (log x, log y). Needs at least two distinct x and only positive values (a zero
    score has no logarithm: such a point is an error, not silently dropped)."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"x and y must be equal-length lists, got {xs.shape} and {ys.shape}")
    if (xs <= 0).any() or (ys <= 0).any():
        raise ValueError("a power law is fitted on logarithms: every x and y must be positive")
    if len(np.unique(xs)) < 2:
        raise ValueError("a power law needs at least two distinct x values")
    lx, ly = np.log(xs), np.log(ys)
    n = len(xs)
    sxx = float(((lx - lx.mean()) ** 2).sum())
    slope = float(((lx - lx.mean()) * (ly - ly.mean())).sum() / sxx)
    intercept = float(ly.mean() - slope * lx.mean())
    residual = ly - (intercept + slope * lx)
    total = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - float((residual ** 2).sum()) / total if total > 0 else 1.0
    if n > 2:
        from scipy.stats import t

        se = math.sqrt(float((residual ** 2).sum()) / (n - 2) / sxx)
        half = float(t.ppf(0.975, n - 2)) * se
    else:
        se = half = float("nan")
    return PowerLaw(intercept, slope, se, (slope - half, slope + half), r2, n)
