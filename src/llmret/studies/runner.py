"""Running a study: each cell's stage and training (once, resumable), then its evaluation on every dataset.

A finished evaluation writes ``done.json`` last, so a killed study rerun skips every finished cell and
resumes a half-trained one from its checkpoint; a changed setting reruns only the cells it changes.
Cells run here one work unit after another, or as Ray tasks (``executor="ray"``).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from llmret.evaluation.conventions import load
from llmret.evaluation.pipeline import evaluate_retriever
from llmret.models.backbone import Backbone, handing_over, shared_loads
from llmret.retrievers.sparse import SparseRetriever
from llmret.studies.heldout import heldout_loss
from llmret.studies.prefetch import prefetching
from llmret.studies.spec import (
    CHECKPOINT,
    Cell,
    DatasetSpec,
    StudySpec,
    cells,
    eval_folder,
    heldout_file,
    stage_folder,
    status,
    train_folder,
)
from llmret.studies.systems import build
from llmret.training.mntp import run_mntp
from llmret.training.settings import TrainSettings
from llmret.training.train import train
from llmret.util.errors import InputError
from llmret.util.fileio import check_output, file_lock, held_alone, read_json, write_json

log = logging.getLogger(__name__)

def run_stage(spec: StudySpec, cell: Cell) -> str | None:
    """Run the cell's MNTP stage unless it finished (resuming a killed one); its model folder, or None."""
    folder = stage_folder(spec, cell)
    if folder is None:
        return None
    final = folder / "final"
    if not (final / "llmret.json").is_file():
        log.info("MNTP stage of %s into %s", cell.label, folder)
        run_mntp(cell.system.mntp_settings(folder), resume=(folder / "mntp_config.yaml").is_file())
    return str(final)

def trained_model(spec: StudySpec, cell: Cell, loads: dict[tuple[str, Any, bool], Backbone] | None = None) -> str | None:
    """Train the cell's system (resuming a killed run) unless an identical training finished already,
    after its MNTP stage if it has one; then measure its held-out loss, once, if the study asks.
    A training run here puts its final model into ``loads`` (see :func:`handing_over`)."""
    if cell.system.train is None:
        return None
    folder = train_folder(spec, cell)
    final = folder / "final"
    # studies of one suite share trainings: one that finds another process training the same folder
    # waits for it and uses its model (the lock lives inside the folder, so a listing shows trainings only)
    with file_lock(folder / ".lock"):
        if not (final / "llmret.json").is_file():
            stage = run_stage(spec, cell)
            log.info("training %s into %s", cell.label, folder)
            with handing_over(loads) if loads is not None else nullcontext():  # else nothing merges it
                train(cell.train_settings(folder, stage), resume=(folder / "train_config.yaml").is_file())
    if spec.heldout is not None and not heldout_file(spec, cell).is_file():
        h = spec.heldout
        result = heldout_loss(final, h.data, h.split, TrainSettings.saved(folder), h.queries)
        write_json(heldout_file(spec, cell), result)
        log.info("%s: held-out loss %.4f on %s (%s)", cell.label, result["loss"], h.data, h.split)
    return str(final)

EXECUTORS = ("local", "ray")

def work_units(spec: StudySpec) -> list[list[Cell]]:
    """The cells grouped so that no two groups share a training folder: cells that differ only in
    evaluation settings train once, in one group. Groups are independent, so an executor may run them
    in parallel; within a group the cells run in order."""
    groups: dict[str, list[Cell]] = {}
    for index, cell in enumerate(cells(spec)):
        key = cell.train_key() if cell.system.train is not None else f"untrained-{index}"
        groups.setdefault(key, []).append(cell)
    return list(groups.values())

def run_cells(spec: StudySpec, group: list[Cell],
              on_cell: Callable[[Cell, DatasetSpec], None] | None = None) -> list[dict[str, Any]]:
    """Run every unfinished (cell, dataset) of ``group`` and return one record per pair; ``on_cell`` is
    called after each one finishes (progress, or a test's kill)."""
    root = spec.folder
    records = []
    for cell in group:
        model, loads = None, {}  # the cell's evaluation model, loaded once for all its datasets
        for dataset in spec.datasets:
            folder = eval_folder(root, cell, dataset, spec.measures)
            done = folder / "done.json"
            if done.is_file():
                records.append(read_json(done))
                continue
            start = time.perf_counter()
            final = cell.axes.get(CHECKPOINT) is None  # a model trained now comes in loads, merged, if evaluated
            model = model or trained_model(spec, cell, loads if final else None)
            evaluated = model
            if model is not None and cell.axes.get(CHECKPOINT) is not None:  # that step of the same run
                evaluated = str(Path(model).parent / f"checkpoint-{cell.axes[CHECKPOINT]}" / "model")
            data, rules = load(dataset.data, dataset.split, dataset.rules)
            with shared_loads(loads):  # not around the training above: it changes the model it loads
                retriever = build(cell.eval_system(dataset), rules=rules, work_dir=folder, model=evaluated,
                                  progress=False, runs=_part_runs(spec, cell, dataset))
            result = evaluate_retriever(retriever, data, folder, name=cell.label, rules=rules, measures=spec.measures)
            record = {"cell": cell.label, "system": cell.base, "axes": cell.axes, "dataset": dataset.label,
                      "metrics": result.evaluation.aggregate, "folder": folder.name,
                      # with any training this pair waited for (so the first dataset of a trained cell)
                      "seconds": time.perf_counter() - start,
                      "ran_on": f"{socket.gethostname()}:{os.getpid()}"}  # which node and process, on a cluster
            if isinstance(retriever, SparseRetriever) and (sparsity := retriever.sparsity()) is not None:
                record |= {"terms_per_query": sparsity.query_nonzero, "terms_per_passage": sparsity.passage_nonzero}
            write_json(done, record)  # last: its presence means the cell is complete
            records.append(record)
            log.info("%s on %s: %s", cell.label, dataset.label,
                     ", ".join(f"{k} {v:.4f}" for k, v in result.evaluation.aggregate.items()))
            if on_cell is not None:
                on_cell(cell, dataset)
    return records

def _part_runs(spec: StudySpec, cell: Cell, dataset: DatasetSpec) -> list[Path]:
    """A fusion cell's parts' run files on ``dataset`` (they run first: their work units come earlier)."""
    folders = [eval_folder(spec.folder, part, dataset, spec.measures) for part in cell.parts]
    unfinished = [part.label for part, folder in zip(cell.parts, folders) if not (folder / "done.json").is_file()]
    if unfinished:
        raise InputError(f"{cell.label} fuses {', '.join(unfinished)}, not finished on {dataset.label}")
    return [folder / "run.trec" for folder in folders]

def run(spec: StudySpec, *, on_cell: Callable[[Cell, DatasetSpec], None] | None = None, executor: str = "local",
        ray_address: str | None = None, cpus_per_cell: float = 1.0, gpus_per_cell: float = 0.0) -> list[dict[str, Any]]:
    """Run every unfinished (cell, dataset) and return one record per pair, in the study's cell order.

    ``executor="local"`` runs the work units one after another in this process (``on_cell`` is called
    after each pair). ``"ray"`` sends each unfinished unit to Ray as a task asking for ``cpus_per_cell``
    CPUs and ``gpus_per_cell`` GPUs: on the cluster at ``ray_address`` (``auto``, ``ray://host:10001``),
    or on a local one started here when None. Tasks write into the same study folder with the same
    keys, so finished cells are skipped whichever executor ran them; on several nodes the folder must
    be on a shared filesystem and llmret installed on every node.
    """
    if executor not in EXECUTORS:
        raise InputError(f"executor must be one of {', '.join(EXECUTORS)}, not '{executor}'")
    if on_cell is not None and executor != "local":
        raise InputError("on_cell runs in this process: it needs the local executor")
    spec.check_data()
    units = work_units(spec)
    fusions = [unit for unit in units if unit[0].parts]  # after every unit they fuse; cheap, so run here
    units = [unit for unit in units if not unit[0].parts]
    with held_alone(spec.folder / ".run.lock", f"a run of the study in {spec.folder}"):
        if executor == "local":
            with prefetching(spec):  # the next zoo models install and convert while the first cells run
                records = [r for unit in units for r in run_cells(spec, unit, on_cell)]
        else:
            records = _run_on_ray(spec, units, ray_address, cpus_per_cell, gpus_per_cell)
        records += [r for unit in fusions for r in run_cells(spec, unit, on_cell)]
    order = {(c.label, d.label): i for i, (c, d, _) in enumerate(status(spec))}
    return sorted(records, key=lambda r: order[(r["cell"], r["dataset"])])

def _run_on_ray(spec: StudySpec, units: list[list[Cell]], address: str | None, cpus: float,
                gpus: float) -> list[dict[str, Any]]:
    """Each work unit a Ray task; finished units are read here rather than sent."""
    try:
        import ray
    except ImportError as exc:
        raise InputError("--executor ray needs Ray: pip install 'llmret[ray]'") from exc
    records: list[dict[str, Any]] = []
    pending = []
    for unit in units:
        if all((eval_folder(spec.folder, c, d, spec.measures) / "done.json").is_file()
               for c in unit for d in spec.datasets):
            records += run_cells(spec, unit)  # finished: reads its done.json files, runs nothing
        else:
            pending.append(unit)
    if not pending:
        return records
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    try:
        # Each MNTP stage once, before the trainings that start from it (units sharing one run in parallel)
        stages = {str(stage_folder(spec, c)): c for unit in pending for c in unit if c.system.mntp is not None}
        if stages:
            stage_task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(run_stage)
            ray.get([stage_task.remote(spec, cell) for cell in stages.values()])
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(run_cells)
        log.info("%d work units to Ray (%s CPU, %s GPU each)", len(pending), cpus, gpus)
        for done in ray.get([task.remote(spec, unit) for unit in pending]):
            records.extend(done)
    finally:
        if started:
            ray.shutdown()
    return records


def run_suite(suite: Any, **executor: Any) -> None:
    """Run every study of ``suite``: every study's data is checked before the first cell of any runs
    (``executor``: :func:`llmret.studies.runner.run`'s options)."""
    for spec in suite.studies:
        spec.check_data()
        check_output(spec.folder)
        if spec.train_dir is not None:
            check_output(spec.train_dir)
    for spec in suite.studies:
        run(spec, **executor)
