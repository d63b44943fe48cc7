"""A study's figures: a measure against each grid axis, and the scaling fits on log-log axes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmret.studies.scaling import HELDOUT, SCALES, PowerLaw
from llmret.studies.spec import slug
from llmret.util.fileio import atomic_write


def plot_fits(root: Path, scale: str, fits: list[dict[str, Any]], quantity: str) -> Path | None:
    if not fits:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    fig, ax = plt.subplots(figsize=(6, 4))
    for colour, f in enumerate(fits):
        xs = np.array([x for x, _, _ in f["data"]])
        law = PowerLaw(f["log_coefficient"], f["exponent"], f["exponent_se"], tuple(f["ci95"]), f["r2"], f["points"])
        grid = np.geomspace(xs.min(), xs.max(), 50)
        ax.plot(xs, [y for _, y, _ in f["data"]], "o", color=f"C{colour}")
        ax.plot(grid, law(grid), "-", color=f"C{colour}",
                label=f"{f['group'].split(': ', 1)[1]}: b = {f['exponent']:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(SCALES[scale])
    ax.set_ylabel(quantity if quantity == HELDOUT else f"{quantity} (mean over datasets)")
    ax.legend(fontsize=7)
    return save_figure(fig, root / f"scaling-{slug(quantity)}-vs-{scale}.png")

def save_figure(fig: Any, path: Path) -> Path:
    """Lay out, write atomically as PNG, and free the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)
    return path

def _value_label(value: Any) -> str:
    """An axis value as a figure shows it: null is the default, an empty string is none."""
    if value is None:
        return "default"
    if value == "":
        return "none"
    text = str(value)
    return text if len(text) <= 28 else text[:25] + "..."

def axis_series(axis: str, values: list[Any], rows: list[dict[str, Any]], measure: str,
                datasets: list[str]) -> tuple[bool, list[str], dict[str, list[tuple[Any, float]]]]:
    """What the figure of ``axis`` draws: whether the axis is numeric, its value labels, and per series
    (a system with its other axis values) the (value, dataset-mean ``measure``) points of cells
    finished on every dataset; null values of a numeric axis are left out."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values if v is not None)
    keys = [_value_label(v) for v in values]
    points: dict[str, dict[Any, list[float]]] = {}
    for r in rows:
        if axis not in r["axes"] or (numeric and r["axes"][axis] is None):
            continue
        value = r["axes"][axis]
        rest = tuple(sorted((a, str(v)) for a, v in r["axes"].items() if a != axis))
        name = r["system"] + (" [" + ", ".join(f"{a.split('.', 1)[1]}={v}" for a, v in rest) + "]" if rest else "")
        key = float(value) if numeric else _value_label(value)
        points.setdefault(name, {}).setdefault(key, []).append(r["aggregate"][measure])
    series = {name: sorted(((x, sum(v) / len(v)) for x, v in by_x.items() if len(v) == len(datasets)),
                           key=lambda p: p[0] if numeric else keys.index(p[0]))
              for name, by_x in points.items()}
    return numeric, keys, {name: line for name, line in series.items() if line}

def plot_axis(root: Path, axis: str, values: list[Any], rows: list[dict[str, Any]], measure: str,
          datasets: list[str]) -> Path | None:
    """The measure's dataset mean against an axis, one series per system: lines over a numeric axis,
    grouped bars over any other (instructions on, off, unseen ...)."""
    numeric, keys, series = axis_series(axis, values, rows, measure, datasets)
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / len(series)
    for number, (name, line) in enumerate(series.items()):
        if numeric:
            ax.plot([x for x, _ in line], [100 * y for _, y in line], marker="o", label=name)
        else:
            ax.bar([keys.index(x) + (number - (len(series) - 1) / 2) * width for x, _ in line],
                   [100 * y for _, y in line], width, label=name)
    if not numeric:
        ax.set_xticks(range(len(keys)), keys, fontsize=7)
    elif all(x > 0 for line in series.values() for x, _ in line) and \
            max(x for line in series.values() for x, _ in line) >= 16 * min(x for line in series.values() for x, _ in line):
        ax.set_xscale("log", base=2)  # lengths, steps, data sizes: doublings are evenly spaced
    ax.set_xlabel(axis)
    ax.set_ylabel(f"{measure} x100 (mean over {len(datasets)} dataset{'s' if len(datasets) > 1 else ''})")
    ax.legend(fontsize=7)
    return save_figure(fig, root / f"{slug(measure)}-vs-{slug(axis)}.png")
