"""Training curves: values from runs' ``log.jsonl`` against steps, one panel per key, one line per run.

A short sparse run is read from its curves (does the FLOPS term fall, do the non-zero counts come
down, does the ranking loss move); a table of final scores cannot show that. Any numeric key of the
log can be drawn (``loss``, ``ranking_loss``, ``reg_loss``, ``q_nonzero``, ``p_nonzero``, ``lr`` ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llmret.util.errors import DataError, InputError
from llmret.util.fileio import atomic_write, iter_jsonl

SPARSITY_KEYS = ("q_nonzero", "p_nonzero")


def default_keys(logs: Sequence[Path]) -> list[str]:
    """What a run is read by: its loss, each named part of it (``ranking_loss``, ``kd_loss``, ``reg_loss``
    ...) and, for sparse runs, the non-zero terms per query and passage; those any of ``logs`` logged."""
    seen: dict[str, None] = {}
    for log in logs:
        for _, record in iter_jsonl(log):
            seen.update(dict.fromkeys(record))
    parts = [key for key in seen if key.endswith("_loss")]
    return ["loss", *parts, *(key for key in SPARSITY_KEYS if key in seen)]


def read_curves(log: Path, keys: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) per key, in the log's order; a record without ``step`` or with a non-number under a
    wanted key is an error naming the file and line (a key a record lacks is skipped there)."""
    curves: dict[str, list[tuple[int, float]]] = {key: [] for key in keys}
    for line, record in iter_jsonl(log):
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise DataError(log, line, "a log record needs an integer 'step'")
        for key in keys:
            if key not in record:
                continue
            value = record[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DataError(log, line, f"'{key}' is not a number: {value!r}")
            curves[key].append((step, float(value)))
    return curves


def _log_of(run: Path) -> Path:
    """A run folder's log (or the log file itself)."""
    log = run / "log.jsonl" if run.is_dir() else run
    if not log.is_file():
        raise DataError(run, None, "no log.jsonl (give a training output folder or its log.jsonl)")
    return log


def plot_curves(runs: Sequence[Path], out: Path, keys: Sequence[str] | None = None,
                labels: Sequence[str] | None = None, log_scale: bool = True) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Draw ``keys`` (by default :func:`default_keys`) against steps for each run into the PNG ``out``;
    return what was drawn, per run label.

    ``log_scale`` puts the values on a log axis: non-zero counts and a FLOPS loss span orders of magnitude.
    A key no run logged is an error (a misspelt key would otherwise give an empty panel).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(labels) if labels else [Path(r).name for r in runs]
    if len(labels) != len(runs):
        raise InputError(f"{len(labels)} labels for {len(runs)} runs")
    logs = [_log_of(Path(run)) for run in runs]
    keys = list(keys) if keys else default_keys(logs)
    drawn = {label: read_curves(log, keys) for label, log in zip(labels, logs)}
    missing = [key for key in keys if not any(curves[key] for curves in drawn.values())]
    if missing:
        raise InputError(f"no run logged {', '.join(missing)}")
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for colour, (label, curves) in enumerate(drawn.items()):  # a run keeps its colour in every panel
            if curves[key]:
                ax.plot([s for s, _ in curves[key]], [v for _, v in curves[key]], marker=".", label=label,
                        color=f"C{colour % 10}")
        ax.set_xlabel("step")
        ax.set_title(key)
        if log_scale:  # symlog where a value is 0 or below (a collapsed vector has no terms)
            positive = all(v > 0 for curves in drawn.values() for _, v in curves[key])
            ax.set_yscale("log") if positive else ax.set_yscale("symlog", linthresh=1.0)
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_lines()}
    axes[0][0].legend(list(handles.values()), list(handles), fontsize=7)
    fig.tight_layout()
    with atomic_write(out, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)
    return drawn
