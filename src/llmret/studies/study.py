"""Studies: a grid of systems x datasets declared in one YAML file, run cell by cell, resumable, reported.

A study file names its systems (:class:`llmret.retrievers.factory.SystemSpec`), datasets (a spec and a split), the
measures, and grid axes: dotted paths into a system (``train.max_steps``, ``train.max_train_queries``,
``encoder.passage_max_length``, ``encoder.instruction`` ...) with the values to try. Every system is
crossed with every combination of the axes that apply to it (``train.*`` axes only to trained systems,
``encoder.*`` axes to every neural one). ``encoder.*`` axes set how a cell is evaluated, never how
it is trained: a trained system learns with its encoder as written (and ``train.encoder``), so an
axis over evaluation lengths or instructions scores one trained model. A cell is one resolved
system; it is trained once (its training folder is keyed by the training settings alone, so cells
that differ only in evaluation reuse it) and evaluated on each dataset into a folder keyed by the signature of everything that
decides its numbers. A finished evaluation writes ``done.json`` last, so a killed study rerun skips
every finished cell and resumes a half-trained one from its checkpoint; a changed setting reruns
only the cells it changes.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import itertools
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from llmret.encoders.settings import from_dict, load_config
from llmret.data import irds
from llmret.util.errors import DataError
from llmret.util.fileio import atomic_write, read_json, write_json
from llmret.retrievers.factory import SystemSpec

log = logging.getLogger(__name__)

AXIS_SECTIONS = ("train", "encoder")
CHECKPOINT = "checkpoint"  # an axis over the saved steps of one training run (null: its final model)
PRESETS = Path(__file__).parent / "presets"  # the study files llmret ships (llmret study list)


@dataclass
class DatasetSpec:
    """One evaluation dataset: ``data`` (a BEIR folder, ``builtin:TASK`` or ``irds:ID``), its ``split``,
    its ``rules`` (default: from the data's name), ``irds``, an ir_datasets id used when ``data`` is not
    there (a preset names both: a local copy first, else ir_datasets online), and ``encoder`` settings
    for evaluating on it."""

    data: str
    split: str = "test"
    rules: str | None = None
    irds: str | None = None
    # Evaluation encoder settings for this dataset, over the system's (a grid's encoder.* values still win):
    # Lion evaluates MS MARCO at 64 / 192 tokens and BEIR at 512 / 512.
    encoder: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.data.startswith(irds.PREFIX):  # the id names its split already
            return self.data.removeprefix(irds.PREFIX)
        return f"{self.data.removeprefix('builtin:')}/{self.split}"


@dataclass
class HeldoutSpec:
    """Where the held-out contrastive loss of every trained cell is measured (see :mod:`llmret.studies.heldout`)."""

    data: str
    split: str = "dev"
    queries: int = 128
    irds: str | None = None  # as a dataset's: the ir_datasets id used when ``data`` is not there


@dataclass
class StudySpec:
    """A study file: ``name``, ``description``, ``systems``, ``datasets``, ``measures``, ``grid`` axes,
    the ``baseline`` system significance is tested against (with ``correction``), ``heldout`` (data on
    which each trained cell's contrastive loss is measured), ``fits`` (power laws of quality and held-out
    loss against parameters and compute in the report: a scaling study's), ``data_help`` (what to download
    when data is missing) and ``out`` (default results/NAME); ``train_dir`` (default OUT/train) is where
    trainings go, shared by the studies of a suite."""

    name: str
    systems: list[SystemSpec]
    datasets: list[DatasetSpec]
    description: str = ""
    measures: list[str] | None = None
    grid: dict[str, list[Any]] = field(default_factory=dict)
    baseline: str | None = None
    correction: str = "holm"
    alpha: float = 0.05
    heldout: HeldoutSpec | None = None
    fits: bool = False
    data_help: str = ""
    out: str | None = None
    train_dir: str | None = None

    @classmethod
    def read(cls, path: str | Path) -> StudySpec:
        """Read and check a study file: unknown keys, bad axes and duplicate names are errors naming the file.
        ``$VARIABLES`` and ``~`` in data paths are expanded (a preset names ``$LLMRET_DATA/...``)."""
        data = {k: v for k, v in load_config(path).items() if not str(k).startswith("x-")}  # x-*: YAML anchors
        for key in ("systems", "datasets"):
            if not isinstance(data.get(key), list) or not data[key]:
                raise DataError(path, None, f"a study needs a non-empty list of {key}")
        systems = [_expand_train_paths(s) for s in data["systems"]]
        datasets = [{"data": d} if isinstance(d, str) else d for d in data["datasets"]]
        data = {**data, "systems": [SystemSpec.from_dict(s, path) for s in systems],
                "datasets": [_local_or_irds(from_dict(DatasetSpec, {**d, "data": _expand(d.get("data"))}
                                                      if isinstance(d, dict) else d, path), path) for d in datasets]}
        if data.get("heldout") is not None:
            if not isinstance(data["heldout"], dict):
                raise DataError(path, None, "heldout needs data (and optionally split, queries)")
            held = from_dict(HeldoutSpec, data["heldout"], path)
            data["heldout"] = _local_or_irds(replace(held, data=_expand(held.data)), path)
        spec = from_dict(cls, data, path)
        spec.source = Path(path)
        names = [s.name for s in spec.systems]
        if len(set(names)) != len(names):
            raise DataError(path, None, f"system names must be unique: {', '.join(names)}")
        for axis, values in spec.grid.items():
            if axis != CHECKPOINT and (axis.split(".", 1)[0] not in AXIS_SECTIONS or "." not in axis):
                raise DataError(path, None, f"grid axis '{axis}' must be train.KEY, encoder.KEY or {CHECKPOINT}")
            if not isinstance(values, list) or not values:
                raise DataError(path, None, f"grid axis '{axis}' needs a non-empty list of values")
            if axis == CHECKPOINT and not all(v is None or (isinstance(v, int) and v > 0) for v in values):
                raise DataError(path, None, f"grid axis '{CHECKPOINT}' takes training steps (positive integers) "
                                            "or null (the final model)")
        if spec.baseline is not None and spec.baseline not in names:
            raise DataError(path, None, f"baseline '{spec.baseline}' is not one of the systems: {', '.join(names)}")
        for cell in cells(spec):  # every cell's settings are checked before anything runs
            try:
                cell.system.encoder_settings()
                if cell.system.train is not None:
                    cell.train_settings(Path("unused"))
            except (DataError, ValueError) as exc:
                message = str(exc).removeprefix("<input>: ")
                raise DataError(path, None, f"system '{cell.label}': {message}") from None
        return spec

    def changed(self, **changes: Any) -> StudySpec:
        """A copy with ``changes`` that still names the file it was read from, so that its errors do."""
        spec = replace(self, **changes)
        spec.source = getattr(self, "source", None)
        return spec

    @property
    def folder(self) -> Path:
        return Path(self.out or Path("results") / self.name)

    @property
    def train_root(self) -> Path:
        return Path(self.train_dir) if self.train_dir else self.folder / "train"

    def missing_data(self) -> list[str]:
        """The local data paths (datasets, training data, held-out data) that do not exist."""
        paths = [d.data for d in self.datasets] + ([self.heldout.data] if self.heldout else [])
        for system in self.systems:
            train = system.train or {}
            sources = train.get("train_data", [])
            paths += [sources] if isinstance(sources, str) else list(sources)
            paths += [train[key] for key in ("corpus", "teacher_scores") if train.get(key)]
            paths += [system.mntp["data"]] if system.mntp and system.mntp.get("data") else []
        return list(dict.fromkeys(p for p in paths if not p.startswith(("builtin:", irds.PREFIX))
                                  and not Path(p).exists()))

    def check_data(self) -> None:
        """Refuse to run with data missing, before any work: one message naming every missing path (and
        the ir_datasets ids that would stand in for datasets), then every ir_datasets id that cannot be
        fetched (each is converted here, only once nothing local is missing: MS MARCO is large)."""
        from llmret.evaluation.conventions import resolve_folder

        help_text = f". {self.data_help}" if self.data_help else ""
        sources = self.datasets + ([self.heldout] if self.heldout else [])
        ids = list(dict.fromkeys(d.data.removeprefix(irds.PREFIX) for d in sources if d.data.startswith(irds.PREFIX)))
        missing = self.missing_data()
        if missing:
            unset = " (LLMRET_DATA is not set)" if any("$LLMRET_DATA" in p for p in missing) else ""
            stand_in = f" (ir_datasets would provide: {', '.join(ids)})" if ids else ""
            raise DataError(getattr(self, "source", None), None,
                            f"data not found{unset}: {', '.join(missing)}{stand_in}{help_text}")
        problems = []
        for dataset in sources:
            if dataset.data.startswith(irds.PREFIX):
                try:
                    resolve_folder(dataset.data, dataset.split)
                except DataError as exc:
                    problems.append(str(exc))
        if problems:
            raise DataError(getattr(self, "source", None), None, "; ".join(problems) + help_text)


def _local_or_irds(dataset: Any, path: str | Path) -> Any:
    """A dataset or held-out spec reading its ir_datasets id where its local ``data`` is not there."""
    if not isinstance(dataset.data, str) or not isinstance(dataset.irds, (str, type(None))):
        raise DataError(path, None, f"a dataset's data and irds are strings, not {dataset.data!r} and {dataset.irds!r}")
    if dataset.irds and not Path(dataset.data).exists():
        return replace(dataset, data=irds.PREFIX + dataset.irds)
    return dataset


def _expand(path: Any) -> Any:
    return os.path.expanduser(os.path.expandvars(path)) if isinstance(path, str) else path


def _expand_train_paths(system: Any) -> Any:
    """A raw system mapping with the paths of ``train`` (data, corpus, teacher scores) and of an MNTP
    stage's data expanded."""
    if isinstance(system, dict) and isinstance(system.get("mntp"), dict) and "data" in system["mntp"]:
        system = {**system, "mntp": {**system["mntp"], "data": _expand(system["mntp"]["data"])}}
    if not isinstance(system, dict) or not isinstance(system.get("train"), dict):
        return system
    train = dict(system["train"])
    for key in ("train_data", "corpus", "teacher_scores"):
        value = train.get(key)
        train[key] = [_expand(v) for v in value] if isinstance(value, list) else _expand(value)
        if value is None:
            del train[key]
    return {**system, "train": train}


@dataclass
class Cell:
    """One system with its grid values applied (``axes``: axis -> value); ``trained`` is the system with
    only its ``train.*`` values applied: what is trained (``encoder.*`` axes set evaluation alone)."""

    base: str
    axes: dict[str, Any]
    system: SystemSpec
    trained: SystemSpec
    origin: SystemSpec  # as the study file wrote it, before any axis
    layer: str = "study"  # what the study file is called in the settings' origins: "study", or "preset NAME"
    checkpoints: list[int] = field(default_factory=list)  # the steps the study evaluates of this training

    def train_settings(self, output_dir: Path, stage: str | None = None) -> Any:
        """The cell's TrainSettings: recipe < the study's system < the ``train.*`` grid values (and the
        checkpoints the study evaluates, saved on the way) < ``stage`` (the folder of the MNTP stage it
        starts from, once run)."""
        grid = {axis.removeprefix("train."): value for axis, value in self.axes.items() if axis.startswith("train.")}
        if self.checkpoints:
            grid["eval_steps"] = sorted({*self.checkpoints, *(self.origin.train or {}).get("eval_steps", [])})
        return self.origin.train_settings(output_dir, grid, self.layer, stage)

    def eval_system(self, dataset: DatasetSpec) -> SystemSpec:
        """The system as evaluated on ``dataset``: its encoder settings under the dataset's, the grid's last."""
        if not dataset.encoder or self.system.retriever == "bm25":
            return self.system
        grid = {a.removeprefix("encoder."): v for a, v in self.axes.items() if a.startswith("encoder.")}
        return replace(self.system, encoder={**self.origin.encoder, **dataset.encoder, **grid})

    @property
    def label(self) -> str:
        values = ", ".join(f"{axis.split('.', 1)[-1]}={value}" for axis, value in self.axes.items())
        return f"{self.base} [{values}]" if values else self.base

    def train_key(self) -> str:
        """The training folder's key: the training settings as resolved (a recipe applied, a default
        written out or left out alike), only those that differ from the defaults (so a new setting in
        a later llmret keeps old keys), and the encoder settings training reads; nothing else."""
        from dataclasses import fields

        from llmret.training.settings import TrainSettings, resolve_temperatures

        settings, defaults = self.train_settings(Path(".")), TrainSettings()
        data = {f.name: getattr(settings, f.name) for f in fields(settings)
                if f.name not in ("output_dir", "encoder") and getattr(settings, f.name) != getattr(defaults, f.name)}
        data["encoder"] = {"model": settings.encoder.model, **settings.encoder.explicit()}
        if self.system.mntp is not None:  # the stage the training starts from, by its settings
            data["mntp"] = mntp_key(self)
        if settings.objective != "cl":
            # The temperatures a distilling objective trains with, as resolved: their defaults once were
            # 1.0 for every student, so a key without them would reuse trainings made under the old ones.
            resolved = resolve_temperatures(replace(settings))
            data["temperatures"] = [resolved.temperature, resolved.kd_student_temperature, resolved.margin_temperature]
        return _digest({"retriever": self.trained.retriever, "train": data})

    def eval_key(self, dataset: DatasetSpec, measures: list[str] | None) -> str:
        key = {"system": {**self.system.to_json(), "name": None}, "dataset": _data_key(dataset), "measures": measures}
        if CHECKPOINT in self.axes:
            key[CHECKPOINT] = self.axes[CHECKPOINT]
        if self.system.mntp is None:
            del key["system"]["mntp"]  # a field newer than the first studies: their keys stay
        return _digest(key)


def _data_key(spec: DatasetSpec | HeldoutSpec) -> dict[str, Any]:
    """What of a dataset or held-out spec decides its numbers: not ``irds``, an alternative that is
    already resolved into ``data``, nor an empty ``encoder`` (leaving them out keeps the keys of studies
    run before they existed)."""
    return {k: v for k, v in asdict(spec).items() if k != "irds" and not (k == "encoder" and not v)}


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60]


def _layer_name(spec: StudySpec) -> str:
    """What a study's own settings are called among the layers: "preset NAME" for a shipped preset."""
    source = getattr(spec, "source", None)
    if source is None or PRESETS not in Path(source).resolve().parents:
        return "study"
    return "preset " + Path(source).resolve().relative_to(PRESETS).parts[0].removesuffix(".yaml")


def cells(spec: StudySpec) -> list[Cell]:
    """Every system crossed with the grid axes that apply to it, in file order."""
    layer = _layer_name(spec)
    out = []
    for system in spec.systems:
        axes = [a for a in spec.grid if ((a.startswith("train.") or a == CHECKPOINT) and system.train is not None)
                or (a.startswith("encoder.") and system.retriever != "bm25")]
        checkpoints = [v for v in spec.grid.get(CHECKPOINT, []) if v is not None] if system.train is not None else []
        for values in itertools.product(*(spec.grid[a] for a in axes)):
            data = copy.deepcopy(system.to_json())
            trained = None
            for section in AXIS_SECTIONS:  # train.* first: ``trained`` is the system before encoder.* values
                for axis, value in zip(axes, values):
                    if axis.startswith(f"{section}."):
                        data[section] = {**(data[section] or {}), axis.split(".", 1)[1]: value}
                trained = trained or SystemSpec(**copy.deepcopy(data))
            out.append(Cell(system.name, dict(zip(axes, values)), SystemSpec(**data), trained, system, layer,
                            checkpoints))
    return out


def plan(spec: StudySpec) -> list[dict[str, Any]]:
    """Every cell as it would run, nothing run or loaded: its training settings fully resolved (each
    ``{"value", "from"}``: the layer that set it, or ``default``; temperatures left to their default show
    the value training resolves, from ``default (resolved)``), the recipe values a layer replaced, the
    training folder, and the evaluation encoder's settings (unset ones come from the model when it loads)
    with the datasets and measures."""
    from dataclasses import fields as dataclass_fields

    from llmret.training.settings import resolve_temperatures

    out = []
    for cell in cells(spec):
        entry: dict[str, Any] = {"cell": cell.label, "system": cell.base, "retriever": cell.system.retriever,
                                 "axes": cell.axes}
        if cell.system.train is not None:
            settings = cell.train_settings(Path("unused"))
            origins = dict(getattr(settings, "origins", {}))
            resolved = resolve_temperatures(replace(settings))
            values = {f.name: getattr(resolved, f.name) for f in dataclass_fields(settings)
                      if f.name not in ("encoder", "output_dir")}
            values |= {f"encoder.{k}": v for k, v in asdict(settings.encoder).items() if v is not None}
            entry["train"] = {key: {"value": value, "from": origins.get(key) or (
                "default (resolved)" if value != _field_value(settings, key) else "default")}
                for key, value in values.items()}
            entry["recipe_overrides"] = [asdict(o) for o in getattr(settings, "overrides", [])]
            entry["train_folder"] = str(_train_folder(spec, cell))
            if cell.system.mntp is not None:
                stage = asdict(cell.system.mntp_settings(_stage_folder(spec, cell)))
                given = {*cell.system.mntp, "model"}
                entry["stage"] = {"mntp": {key: {"value": value, "from": cell.layer if key in given else
                                                 ("study" if key == "output_dir" else "default")}
                                           for key, value in stage.items()}}
                entry["train"]["encoder.model"] = {"value": f"{stage['output_dir']}/final", "from": "stage mntp"}
        if cell.system.retriever != "bm25":
            grid = {a.removeprefix("encoder."): v for a, v in cell.axes.items() if a.startswith("encoder.")}
            layered = cell.origin.encoder_layers(grid, cell.layer)
            entry["evaluation"] = {f"encoder.{key}": {"value": value, "from": layered.origins[f"encoder.{key}"]}
                                   for key, value in layered.values.get("encoder", {}).items()}
        elif cell.system.bm25:
            entry["evaluation"] = {f"bm25.{k}": {"value": v, "from": cell.layer} for k, v in cell.system.bm25.items()}
        entry["datasets"] = [d.label for d in spec.datasets]
        if any(d.encoder for d in spec.datasets) and cell.system.retriever != "bm25":
            entry["dataset_encoder"] = {d.label: d.encoder for d in spec.datasets if d.encoder}
        entry["measures"] = spec.measures
        out.append(entry)
    return out


def _field_value(settings: Any, key: str) -> Any:
    return getattr(settings.encoder, key.removeprefix("encoder.")) if key.startswith("encoder.") else getattr(settings, key)


def _train_folder(spec: StudySpec, cell: Cell) -> Path:
    """Keyed by the training alone (not the system's name): equal trainings in the studies of a suite,
    which share ``train_root``, run once."""
    return spec.train_root / f"{cell.trained.retriever}-{cell.train_key()}"


def mntp_key(cell: Cell) -> str:
    """The key of a cell's MNTP stage: its settings as resolved, the output folder left out."""
    settings = asdict(cell.system.mntp_settings(Path(".")))
    settings.pop("output_dir")
    return _digest(settings)


def _stage_folder(spec: StudySpec, cell: Cell) -> Path | None:
    """Where a cell's MNTP stage goes (shared by every cell with the same stage), or None without one."""
    return spec.train_root / f"mntp-{mntp_key(cell)}" if cell.system.mntp is not None else None


def run_stage(spec: StudySpec, cell: Cell) -> str | None:
    """Run the cell's MNTP stage unless it finished (resuming a killed one); its model folder, or None."""
    folder = _stage_folder(spec, cell)
    if folder is None:
        return None
    final = folder / "final"
    if not (final / "llmret.json").is_file():
        from llmret.training.mntp import run_mntp

        log.info("MNTP stage of %s into %s", cell.label, folder)
        run_mntp(cell.system.mntp_settings(folder), resume=(folder / "mntp_config.yaml").is_file())
    return str(final)


def _trained_model(spec: StudySpec, cell: Cell) -> str | None:
    """Train the cell's system (resuming a killed run) unless an identical training finished already,
    after its MNTP stage if it has one; then measure its held-out loss, once, if the study asks."""
    if cell.system.train is None:
        return None
    from llmret.training.train import train

    folder = _train_folder(spec, cell)
    final = folder / "final"
    if not (final / "llmret.json").is_file():
        stage = run_stage(spec, cell)
        log.info("training %s into %s", cell.label, folder)
        train(cell.train_settings(folder, stage), resume=(folder / "train_config.yaml").is_file())
    if spec.heldout is not None and not _heldout_file(spec, cell).is_file():
        from llmret.studies.heldout import heldout_loss

        used = load_config(folder / "train_config.yaml")
        h = spec.heldout
        result = heldout_loss(final, h.data, h.split, retriever=cell.system.retriever, batch_size=used["batch_size"],
                              group_size=used["group_size"], temperature=used["temperature"],
                              similarity=used["similarity"], max_queries=h.queries, seed=used["seed"])
        write_json(_heldout_file(spec, cell), result)
        log.info("%s: held-out loss %.4f on %s (%s)", cell.label, result["loss"], h.data, h.split)
    return str(final)


def _heldout_file(spec: StudySpec, cell: Cell) -> Path:
    return _train_folder(spec, cell) / f"heldout-{_digest(_data_key(spec.heldout))}.json"


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
    from llmret.evaluation.pipeline import evaluate_retriever
    from llmret.evaluation.conventions import load
    from llmret.retrievers.sparse import SparseRetriever
    from llmret.retrievers.factory import build

    root = spec.folder
    records = []
    for cell in group:
        model = None
        for dataset in spec.datasets:
            folder = _eval_folder(root, cell, dataset, spec.measures)
            done = folder / "done.json"
            if done.is_file():
                records.append(read_json(done))
                continue
            start = time.perf_counter()
            model = model or _trained_model(spec, cell)
            evaluated = model
            if model is not None and cell.axes.get(CHECKPOINT) is not None:  # that step of the same run
                evaluated = str(Path(model).parent / f"checkpoint-{cell.axes[CHECKPOINT]}" / "model")
            data, rules = load(dataset.data, dataset.split, dataset.rules)
            retriever = build(cell.eval_system(dataset), rules=rules, work_dir=folder, model=evaluated, progress=False)
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
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, not '{executor}'")
    spec.check_data()
    units = work_units(spec)
    if executor == "local":
        records = [r for unit in units for r in run_cells(spec, unit, on_cell)]
    else:
        if on_cell is not None:
            raise ValueError("on_cell runs in this process: it needs the local executor")
        records = _run_on_ray(spec, units, ray_address, cpus_per_cell, gpus_per_cell)
    order = {(c.label, d.label): i for i, (c, d, _) in enumerate(status(spec))}
    return sorted(records, key=lambda r: order[(r["cell"], r["dataset"])])


def _run_on_ray(spec: StudySpec, units: list[list[Cell]], address: str | None, cpus: float,
                gpus: float) -> list[dict[str, Any]]:
    """Each work unit a Ray task; finished units are read here rather than sent."""
    try:
        import ray
    except ImportError as exc:
        raise ValueError("--executor ray needs Ray: pip install 'llmret[ray]'") from exc
    records: list[dict[str, Any]] = []
    pending = []
    for unit in units:
        if all((_eval_folder(spec.folder, c, d, spec.measures) / "done.json").is_file()
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
        stages = {str(_stage_folder(spec, c)): c for unit in pending for c in unit if c.system.mntp is not None}
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


def _eval_folder(root: Path, cell: Cell, dataset: DatasetSpec, measures: list[str] | None) -> Path:
    return root / "cells" / f"{_slug(cell.base)}-{_slug(dataset.label)}-{cell.eval_key(dataset, measures)}"


def status(spec: StudySpec) -> Iterator[tuple[Cell, DatasetSpec, bool]]:
    """(cell, dataset, finished) for every pair of the study."""
    for cell in cells(spec):
        for dataset in spec.datasets:
            yield cell, dataset, (_eval_folder(spec.folder, cell, dataset, spec.measures) / "done.json").is_file()


def report(spec: StudySpec) -> Path:
    """Write report.md, results.csv, results.json and a PNG per numeric grid axis from the finished cells'
    metrics files; significance against ``baseline`` is tested on their per-query values."""
    root = spec.folder
    rows = []
    for cell, dataset, finished in status(spec):
        if not finished:
            continue
        folder = _eval_folder(root, cell, dataset, spec.measures)
        metrics = read_json(folder / "metrics.json")
        rows.append({"cell": cell.label, "system": cell.base, "axes": cell.axes, "dataset": dataset.label,
                     "aggregate": metrics["aggregate"], "per_query": metrics["per_query"]})
    if not rows:
        raise ValueError(f"no finished cells in {root}: run the study first (llmret study run)")
    measures = list(rows[0]["aggregate"])
    marks = _significance(spec, rows, measures)
    with atomic_write(root / "results.json") as handle:
        json.dump([{k: r[k] for k in ("cell", "system", "axes", "dataset", "aggregate")} for r in rows], handle, indent=1)
    with atomic_write(root / "results.csv") as handle:
        writer = csv.writer(handle)
        writer.writerow(["cell", "system", "dataset", *spec.grid, *measures])
        for r in rows:
            writer.writerow([r["cell"], r["system"], r["dataset"], *(r["axes"].get(a, "") for a in spec.grid),
                             *(r["aggregate"][m] for m in measures)])
    lines = [f"# Study: {spec.name}", ""]
    datasets = [d.label for d in spec.datasets]
    for measure in measures:
        lines += [f"## {measure} (x100)", "", "| system | " + " | ".join(datasets) + " | mean |",
                  "| --- |" + " --- |" * (len(datasets) + 1)]
        for label in dict.fromkeys(r["cell"] for r in rows):
            values = {r["dataset"]: r["aggregate"][measure] for r in rows if r["cell"] == label}
            shown = [f"{100 * values[d]:.2f}{marks.get((label, d, measure), '')}" if d in values else "-"
                     for d in datasets]
            mean = f"{100 * sum(values.values()) / len(values):.2f}" if len(values) == len(datasets) else "-"
            lines.append(f"| {label} | " + " | ".join(shown) + f" | {mean} |")
        lines.append("")
    if spec.baseline:
        lines.append(f"\\* differs from `{spec.baseline}` on that dataset: paired t-test and randomisation test "
                     f"both below {spec.alpha} after {spec.correction} correction over the systems compared.")
    for axis in spec.grid:
        figure = _plot(root, axis, spec.grid[axis], rows, measures[0], datasets)
        if figure is not None:
            lines += ["", f"![{measures[0]} against {axis}]({figure.name})"]
    if spec.fits:
        lines += _scaling_section(spec, rows, measures[0], datasets)
    with atomic_write(root / "report.md") as handle:
        handle.write("\n".join(lines) + "\n")
    return root / "report.md"


SCALES = {"parameters": "parameters (compute.json)", "compute": "training FLOPs (compute.json: per step x steps)"}
HELDOUT = "held-out loss"


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
        compute_file = _train_folder(spec, cell) / "compute.json"
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
        if spec.heldout is not None and _heldout_file(spec, cell).is_file():
            ys[HELDOUT] = float(read_json(_heldout_file(spec, cell))["loss"])
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


def _scaling_section(spec: StudySpec, rows: list[dict[str, Any]], measure: str, datasets: list[str]) -> list[str]:
    """Fits of the dataset-mean ``measure`` and of the held-out loss against parameters and compute, each
    factor in groups that hold the other fixed (:func:`scaling_points`): y = a x^b on log-log values for
    both, and for the held-out loss also y = E + a x^-alpha (a floor it never crosses) where a group has
    enough points. Every group not fitted is named with its reason. Fits go to ``scaling.json``, log-log
    PNGs per scale and quantity."""
    from llmret.studies.scaling import OFFSET_MIN_POINTS, fit_offset_power_law, fit_power_law

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
            figure = _plot_fits(spec.folder, scale, chosen, quantity)
            if figure is not None:
                lines += ["", f"![{quantity} against {scale}]({figure.name})"]
    return lines


def _plot_fits(root: Path, scale: str, fits: list[dict[str, Any]], quantity: str) -> Path | None:
    if not fits:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from llmret.studies.scaling import PowerLaw

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
    return _save_figure(fig, root / f"scaling-{_slug(quantity)}-vs-{scale}.png")


def _save_figure(fig: Any, path: Path) -> Path:
    """Lay out, write atomically as PNG, and free the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)
    return path


def _significance(spec: StudySpec, rows: list[dict[str, Any]], measures: list[str]) -> dict[tuple[str, str, str], str]:
    """(cell, dataset, measure) -> '*' where the cell differs significantly from the baseline's cell."""
    from llmret.evaluation.significance import compare

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


def _plot(root: Path, axis: str, values: list[Any], rows: list[dict[str, Any]], measure: str,
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
    return _save_figure(fig, root / f"{_slug(measure)}-vs-{_slug(axis)}.png")
