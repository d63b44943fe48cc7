"""A study's report: tables per measure with significance marks, the axis figures and the scaling fits, all
read back from the cells' metrics files; ``results.csv`` and ``results.json`` beside them."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path
from typing import Any

from llmret.evaluation.significance import compare
from llmret.studies.fits import scaling_section
from llmret.studies.plots import plot_axis
from llmret.studies.spec import StudySpec, eval_folder, status
from llmret.util.errors import InputError
from llmret.util.fileio import atomic_write, read_json

SEED = "train.seed"  # the grid axis whose values are repeats of one training, summarised by seed_section


def finished_rows(spec: StudySpec) -> list[dict[str, Any]]:
    """One row per finished (cell, dataset): its labels and its metrics file's aggregate and per-query values."""
    rows = []
    for cell, dataset, finished in status(spec):
        if not finished:
            continue
        metrics = read_json(eval_folder(spec.folder, cell, dataset, spec.measures) / "metrics.json")
        rows.append({"cell": cell.label, "system": cell.base, "axes": cell.axes, "dataset": dataset.label,
                     "aggregate": metrics["aggregate"], "per_query": metrics["per_query"]})
    if not rows:
        raise InputError(f"no finished cells in {spec.folder}: run the study first (llmret study run)")
    return rows


def measure_table(spec: StudySpec, rows: list[dict[str, Any]], measure: str,
                  marks: dict[tuple[str, str, str], str]) -> list[str]:
    """The Markdown table of one measure (x100): a row per cell, a column per dataset and their mean."""
    datasets = [d.label for d in spec.datasets]
    lines = [f"## {measure} (x100)", "", "| system | " + " | ".join(datasets) + " | mean |",
             "| --- |" + " --- |" * (len(datasets) + 1)]
    for label in dict.fromkeys(r["cell"] for r in rows):
        values = {r["dataset"]: r["aggregate"][measure] for r in rows if r["cell"] == label}
        shown = [f"{100 * values[d]:.2f}{marks.get((label, d, measure), '')}" if d in values else "-" for d in datasets]
        mean = f"{100 * sum(values.values()) / len(values):.2f}" if len(values) == len(datasets) else "-"
        lines.append(f"| {label} | " + " | ".join(shown) + f" | {mean} |")
    return [*lines, ""]


def main_table(spec: StudySpec) -> list[str]:
    """The table of the study's first measure, with its significance marks: what a suite's report shows."""
    rows = finished_rows(spec)
    measure = next(iter(rows[0]["aggregate"]))
    return measure_table(spec, rows, measure, significance_marks(spec, rows, [measure]))


def report(spec: StudySpec) -> Path:
    """Write report.md, results.csv, results.json and a PNG per numeric grid axis from the finished cells'
    metrics files; significance against ``baseline`` is tested on their per-query values."""
    root = spec.folder
    rows = finished_rows(spec)
    measures = list(rows[0]["aggregate"])
    marks = significance_marks(spec, rows, measures)
    with atomic_write(root / "results.json") as handle:
        json.dump([{k: r[k] for k in ("cell", "system", "axes", "dataset", "aggregate")} for r in rows], handle, indent=1)
    with atomic_write(root / "results.csv") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cell", "system", "dataset", *spec.grid, *measures])
        for r in rows:
            writer.writerow([r["cell"], r["system"], r["dataset"], *(r["axes"].get(a, "") for a in spec.grid),
                             *(r["aggregate"][m] for m in measures)])
    lines = [f"# Study: {spec.name}", ""]
    for measure in measures:
        lines += measure_table(spec, rows, measure, marks)
    if spec.baseline:
        lines.append(f"\\* differs from `{spec.baseline}` on that dataset: paired t-test and randomisation test "
                     f"both below {spec.alpha} after {spec.correction} correction over the systems compared.")
    datasets = [d.label for d in spec.datasets]
    for axis in spec.grid:
        figure = plot_axis(root, axis, spec.grid[axis], rows, measures[0], datasets)
        if figure is not None:
            lines += ["", f"![{measures[0]} against {axis}]({figure.name})"]
    lines += seed_section(spec, rows, measures[0])
    if spec.fits:
        lines += scaling_section(spec, rows, measures[0], datasets)
    with atomic_write(root / "report.md") as handle:
        handle.write("\n".join(lines) + "\n")
    return root / "report.md"


def seed_section(spec: StudySpec, rows: list[dict[str, Any]], measure: str) -> list[str]:
    """With a ``train.seed`` axis: each system's mean and sample standard deviation over the seeds, per
    dataset and for the mean over datasets, so that a difference can be read against the noise of
    training alone (the seed draws the adapters and the batches)."""
    if SEED not in spec.grid:
        return []
    datasets = [d.label for d in spec.datasets]
    groups: dict[str, dict[Any, dict[str, float]]] = {}
    for r in rows:
        rest = ", ".join(f"{a}={v}" for a, v in r["axes"].items() if a != SEED)
        label = r["system"] + (f" ({rest})" if rest else "")
        groups.setdefault(label, {}).setdefault(r["axes"].get(SEED), {})[r["dataset"]] = 100 * r["aggregate"][measure]

    def spread(values: list[float]) -> str:
        sd = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        return f"{statistics.fmean(values):.2f}{sd}" if values else "-"

    lines = ["", f"## {measure} (x100) over seeds: mean ± sample standard deviation", "",
             "| system | seeds | " + " | ".join(datasets) + " | mean |", "| --- | --- |" + " --- |" * (len(datasets) + 1)]
    for label, by_seed in groups.items():
        shown = [spread([v[d] for v in by_seed.values() if d in v]) for d in datasets]
        means = [statistics.fmean(v[d] for d in datasets) for v in by_seed.values() if len(v) == len(datasets)]
        lines.append(f"| {label} | {len(by_seed)} | " + " | ".join(shown) + f" | {spread(means)} |")
    return lines


def significance_marks(spec: StudySpec, rows: list[dict[str, Any]], measures: list[str]) -> dict[tuple[str, str, str], str]:
    """(cell, dataset, measure) -> '*' where the cell differs significantly from the baseline's cell."""
    if spec.baseline is None:
        return {}
    marks = {}
    for dataset in {r["dataset"] for r in rows}:
        here = [r for r in rows if r["dataset"] == dataset]
        base = [r for r in here if r["system"] == spec.baseline]
        if len(base) != 1:
            continue  # the baseline must be one cell (no grid over it) to be compared against
        for measure in measures:
            per_query = {r["cell"]: r["per_query"][measure] for r in here}
            for c in compare(per_query, base[0]["cell"], measure, alpha=spec.alpha, correction=spec.correction):
                if c.significant:
                    marks[(c.system, dataset, measure)] = "*"
    return marks
