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

SCALES = {"parameters": "parameters (compute.json)", "compute": "training FLOPs (compute.json: per step x steps)"}
HELDOUT = "held-out loss"  # the quantity fitted beside the first measure when a study measures it


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


@dataclass
class OffsetPowerLaw:
    """y = irreducible + a * x ** -alpha: a loss that falls as a power of x towards a floor it never
    crosses (the form dense-retrieval scaling laws fit contrastive losses with). ``scale`` is the x the
    fit was made at (the points' geometric mean), so ``a`` is the excess loss there: fitted on x / scale,
    the three parameters are of like size and their standard errors mean something."""

    irreducible: float
    a: float
    alpha: float
    scale: float
    irreducible_se: float
    a_se: float
    alpha_se: float
    r2: float
    points: int

    def __call__(self, x: np.ndarray | float) -> np.ndarray | float:
        return self.irreducible + self.a * (np.asarray(x, dtype=float) / self.scale) ** -self.alpha

    def to_json(self) -> dict[str, object]:
        return asdict(self)


OFFSET_MIN_POINTS = 4  # three parameters and at least one degree of freedom for their errors


def fit_offset_power_law(x: Sequence[float], y: Sequence[float]) -> OffsetPowerLaw:
    """Non-linear least squares (scipy's ``curve_fit``) of y = E + a (x / s)^-alpha with E >= 0, a > 0,
    alpha > 0, standard errors from the fit's covariance. Needs ``OFFSET_MIN_POINTS`` points."""
    from scipy.optimize import curve_fit

    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise ValueError(f"x and y must be equal-length lists, got {xs.shape} and {ys.shape}")
    if len(np.unique(xs)) < OFFSET_MIN_POINTS or (xs <= 0).any():
        raise ValueError(f"y = E + a x^-alpha needs {OFFSET_MIN_POINTS} distinct positive x values")
    scale = float(np.exp(np.log(xs).mean()))

    def law(z: np.ndarray, e: float, a: float, alpha: float) -> np.ndarray:
        return e + a * z ** -alpha

    start = (max(float(ys.min()) * 0.5, 0.0), max(float(ys.max() - ys.min()), 1e-6), 0.5)
    params, cov = curve_fit(law, xs / scale, ys, p0=start, bounds=([0, 0, 0], [np.inf, np.inf, 10]), maxfev=20000)
    errors = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.isfinite(cov).all() else np.full(3, np.nan)
    residual = ys - law(xs / scale, *params)
    total = float(((ys - ys.mean()) ** 2).sum())
    r2 = 1.0 - float((residual ** 2).sum()) / total if total > 0 else 1.0
    return OffsetPowerLaw(float(params[0]), float(params[1]), float(params[2]), scale, float(errors[0]),
                          float(errors[1]), float(errors[2]), r2, len(xs))
