"""The scaling section of a study's report: power laws of quality and held-out loss against parameters and
compute, each factor with the other held fixed, from each training's ``compute.json``."""

from __future__ import annotations

from typing import Any

from llmret.studies.plots import plot_fits
from llmret.studies.scaling import HELDOUT, OFFSET_MIN_POINTS, SCALES, fit_offset_power_law, fit_power_law
from llmret.studies.spec import StudySpec, cells, heldout_file, train_folder
from llmret.util.errors import DataError
from llmret.util.fileio import read_json, write_json


def scaling_points(spec: StudySpec, rows: list[dict[str, Any]], measure: str,
                   datasets: list[str]) -> dict[str, dict[str, list[tuple[float, float, str]]]]:
    """Per group and scale (parameters, compute): (x, y, cell) for every trained cell, x read from its
    training's ``compute.json``; y is the dataset-mean ``measure`` (cells finished on every dataset) and,
    when the study has ``heldout``, the cell's held-out loss. A group holds the other factor fixed, so a
    fit measures one factor alone: against parameters, cells of one retriever and objective that share
    every other grid value (one budget); against compute, the cells of one system (one model)."""
    by_cell = {c.label: c for c in cells(spec)}
    points: dict[str, dict[str, list[tuple[float, float, str]]]] = {}
    for label in dict.fromkeys(r["cell"] for r in rows):
        cell = by_cell[label]
        compute_file = train_folder(spec, cell) / "compute.json"
        if cell.system.train is None or not compute_file.is_file():
            continue
        compute = read_json(compute_file)
        try:
            xs = {"parameters": float(compute["parameters"]),
                  "compute": float(compute["flops_per_step"]) * float(compute["steps"])}
        except (KeyError, TypeError, ValueError):
            raise DataError(compute_file, None, "needs numeric parameters, flops_per_step and steps") from None
        kind = f"{cell.system.retriever}, {cell.system.train.get('objective', 'cl')}"
        held = ", ".join(f"{a.split('.', 1)[-1]}={v}" for a, v in cell.axes.items() if a != "train.objective")
        groups = {"parameters": f"{kind}, {held}" if held else kind, "compute": f"{kind}, {cell.base}"}
        values = [r["aggregate"][measure] for r in rows if r["cell"] == label]
        ys = {measure: sum(values) / len(values)} if len(values) == len(datasets) else {}
        if spec.heldout is not None and heldout_file(spec, cell).is_file():
            ys[HELDOUT] = float(read_json(heldout_file(spec, cell))["loss"])
        for quantity, y in ys.items():
            for scale, x in xs.items():
                points.setdefault(f"{quantity}: {groups[scale]}", {}).setdefault(scale, []).append((x, y, label))
    return points

MIN_SPAN = 1.5  # the least ratio of largest to smallest x a power law is fitted over

def _not_fitted(xs: list[float], ys: list[float]) -> tuple[str, str] | None:
    """Why a group gets no power law (the reason, and a detail for the group), or None: one point,
    values without a logarithm, or x values so close that they are one point on a log scale (two
    decoders of nearly one size, several models' steps rounded from one budget: the exponent would be
    rounding noise)."""
    if len(set(xs)) < 2:
        return ("one point", "") if len(xs) == 1 else ("one distinct x", "")
    if any(y <= 0 for y in ys):
        return "a value at or below 0, which has no logarithm", ""
    if max(xs) / min(xs) < MIN_SPAN:
        return f"x spanning less than {MIN_SPAN}x", f" ({max(xs) / min(xs):.2f}x)"
    return None

def scaling_section(spec: StudySpec, rows: list[dict[str, Any]], measure: str, datasets: list[str]) -> list[str]:
    """Fits of the dataset-mean ``measure`` and of the held-out loss against parameters and compute, each
    factor in groups that hold the other fixed (:func:`scaling_points`): y = a x^b on log-log values for
    both, and for the held-out loss also y = E + a x^-alpha (a floor it never crosses) where a group has
    enough points. Every group not fitted is named with its reason. Fits go to ``scaling.json``, log-log
    PNGs per scale and quantity."""
    fits, offsets = [], []
    skipped: dict[str, list[str]] = {}  # reason -> the groups it left unfitted
    for group, scales in scaling_points(spec, rows, measure, datasets).items():
        for scale, pts in scales.items():
            xs, ys = [x for x, _, _ in pts], [y for _, y, _ in pts]
            why = _not_fitted(xs, ys)
            if why is not None:
                skipped.setdefault(why[0], []).append(f"{group} against {scale}{why[1]}")
                continue
            fits.append({"group": group, "against": scale, "form": "power", **fit_power_law(xs, ys).to_json(),
                         "data": pts})
            if group.startswith(f"{HELDOUT}: ") and len(set(xs)) >= OFFSET_MIN_POINTS:
                offsets.append({"group": group, "against": scale, "form": "offset",
                                **fit_offset_power_law(xs, ys).to_json(), "data": pts})
    for stale in spec.folder.glob("scaling-*.png"):  # a figure of an earlier report that has no fit now
        stale.unlink()
    if not fits and not skipped:
        return []
    write_json(spec.folder / "scaling.json", fits + offsets)
    lines = ["", f"## Scaling: y the {measure} mean over datasets"
             + (f" or the {HELDOUT} on {spec.heldout.data} ({spec.heldout.split})" if spec.heldout else ""), "",
             "Each fit holds the other factor fixed: against parameters, the cells of one retriever and "
             "objective at one setting of the other grid axes (one budget); against compute, one system's cells.", ""]
    for reason, groups in skipped.items():
        lines += [f"Not fitted, {reason}: {'; '.join(groups)}.", ""]
    if fits:
        lines += ["y = a x^b, least squares on log-log values; the standard error of b from the residuals, the "
                  "interval from Student's t with points - 2 degrees of freedom (none with two points).", "",
                  "| y: group | against | points | b | SE of b | 95% interval | R^2 |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for f in fits:
            low, high = f["ci95"]
            lines.append(f"| {f['group']} | {SCALES[f['against']]} | {f['points']} | {f['exponent']:.4f} | "
                         f"{f['exponent_se']:.4f} | [{low:.4f}, {high:.4f}] | {f['r2']:.3f} |")
    if offsets:
        lines += ["", "y = E + a (x / s)^-alpha, non-linear least squares (s the points' geometric mean, E the loss "
                      "no scale removes); standard errors from the fit's covariance.", "",
                  "| y: group | against | points | E (SE) | a (SE) | alpha (SE) | R^2 |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for f in offsets:
            lines.append(f"| {f['group']} | {SCALES[f['against']]} | {f['points']} | {f['irreducible']:.4f} "
                         f"({f['irreducible_se']:.4f}) | {f['a']:.4f} ({f['a_se']:.4f}) | {f['alpha']:.4f} "
                         f"({f['alpha_se']:.4f}) | {f['r2']:.3f} |")
    for quantity in (measure, HELDOUT):
        for scale in SCALES:
            chosen = [f for f in fits if f["against"] == scale and f["group"].startswith(f"{quantity}: ")]
            figure = plot_fits(spec.folder, scale, chosen, quantity)
            if figure is not None:
                lines += ["", f"![{quantity} against {scale}]({figure.name})"]
    return lines
