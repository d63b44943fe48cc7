"""The main job: the ``demo`` study preset, with a table for the terminal.

``llmret demo`` runs ``llmret/presets/demo.yaml`` like any study (one way to run a grid): BM25, a
zero-shot retriever, and ``smollm2-135m`` trained briefly on the built-in code task's train split,
once dense and once sparse on the same batches, each evaluated on every task's test split. It runs
on a laptop CPU in about ten minutes and 4 GB; the zoo models install and convert on first use, and
the built-in dataset builds from this Python's standard library. The options replace parts of the
preset (which models run zero-shot, which is fine-tuned, as what, for how many steps, on which
tasks). Finished cells are skipped and a killed training resumes, as in every study; the table goes
to ``results.md`` and ``results.json``, the study's report beside them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from llmret.studies.presets import PRESETS
from llmret.studies.reporting import report
from llmret.studies.runner import run
from llmret.studies.spec import StudySpec
from llmret.studies.systems import SystemSpec
from llmret.util.errors import InputError
from llmret.util.fileio import atomic_write, write_json
from llmret.util.tables import format_table

COLUMNS = ["task", "system", "nDCG@10", "RR@10", "R@100", "terms/q", "terms/p", "seconds"]
METRICS = ["nDCG@10", "RR@10", "R@100"]
FINETUNE_AS = ("dense", "sparse")


def demo_study(out: Path, models: Sequence[str] | None = None, tasks: Sequence[str] | None = None,
               finetune: str | None = None, train_steps: int | None = None,
               finetune_as: Sequence[str] | None = None) -> StudySpec:
    """The demo preset with the options applied (None keeps the preset's choice; ``finetune=""``
    trains nothing)."""
    spec = StudySpec.read(PRESETS / "demo.yaml")
    unknown = set(finetune_as or ()) - set(FINETUNE_AS)
    if unknown:
        raise InputError(f"finetune_as takes {', '.join(FINETUNE_AS)}, not {', '.join(sorted(unknown))}")
    zero_shot = [s for s in spec.systems if s.train is None and s.retriever != "bm25"]
    trained = [s for s in spec.systems if s.train is not None]
    if models is not None:
        template = zero_shot[0]
        zero_shot = [replace(template, name=f"{m} (zero-shot)", encoder={**template.encoder, "model": m}) for m in models]
    if finetune == "":
        trained = []
    trained = [_fine_tuned(s, finetune, train_steps) for s in trained
               if finetune_as is None or s.retriever in finetune_as]
    systems = [s for s in spec.systems if s.retriever == "bm25"] + zero_shot + trained
    datasets = spec.datasets
    if tasks is not None:
        known = {d.data.removeprefix("builtin:"): d for d in spec.datasets}
        if not tasks or set(tasks) - set(known):
            raise InputError(f"tasks are among {', '.join(known)}, not {', '.join(tasks) or 'none'}")
        datasets = [known[t] for t in tasks]
    return spec.changed(systems=systems, datasets=datasets, out=str(out))


def _fine_tuned(system: SystemSpec, model: str | None, steps: int | None) -> SystemSpec:
    """A trained system of the preset with another backbone (named in its label) or step count."""
    if model is None and steps is None:
        return system
    train = copy.deepcopy(system.train or {})
    if steps is not None:
        train["max_steps"] = steps
    encoder = system.encoder if model is None else {**system.encoder, "model": model}
    name = system.name
    if model is not None:  # the label names the backbone: swap it in, or put it first if the label lacks it
        preset_model = system.encoder["model"]
        name = name.replace(preset_model, model, 1) if preset_model in name else f"{model} ({name})"
    return replace(system, name=name, encoder=encoder, train=train)


def run_demo(out: str | Path, **options: Any) -> list[dict[str, object]]:
    """Run the demo study (``options``: those of :func:`demo_study`), write its report and the table,
    print the table and return its rows."""
    out = Path(out)
    spec = demo_study(out, **options)
    records = run(spec)
    report(spec)
    tasks = {d.label: d.data.removeprefix("builtin:") for d in spec.datasets}
    rows: list[dict[str, object]] = []
    for r in sorted(records, key=lambda r: list(tasks).index(r["dataset"])):
        row: dict[str, object] = {"task": tasks[r["dataset"]], "system": r["cell"],
                                  **{m: r["metrics"][m] for m in METRICS}}
        if "terms_per_query" in r:
            row.update({"terms/q": r["terms_per_query"], "terms/p": r["terms_per_passage"]})
        row["seconds"] = r["seconds"]
        rows.append(row)
    table = format_table(rows, COLUMNS, percent=METRICS)
    write_json(out / "results.json", rows)
    with atomic_write(out / "results.md") as handle:
        handle.write("Built-in test splits (metrics x100; terms/q, terms/p: a sparse row's average non-zero terms per "
                     "query and per passage; seconds include loading, and training on the first task)\n\n"
                     "```\n" + table + "\n```\n")
    print(table)
    print(f"\nruns, metrics, the trained models, the study report and this table are in {out}")
    return rows
