"""Studies: a grid of systems x datasets declared in one YAML file; what each cell is, and where it is kept.

A study file names its systems (:class:`llmret.studies.systems.SystemSpec`), datasets (a spec and a
split), the measures, and grid axes: dotted paths into a system (``train.max_steps``,
``train.max_train_queries``, ``encoder.passage_max_length``, ``encoder.instruction`` ...), or
``checkpoint`` (steps of one run), with the values to try. Every system is crossed with every
combination of the axes that apply to it (``train.*`` axes and ``checkpoint`` only to trained systems,
``encoder.*`` axes to every neural one). ``encoder.*`` axes set how a cell is evaluated, never how it
is trained: a trained system learns with its encoder as written (and ``train.encoder``), so an axis over
evaluation lengths or instructions scores one trained model. A cell is one resolved system; it is
trained once (its training folder is keyed by the training settings alone, so cells that differ only
in evaluation reuse it) and evaluated on each dataset into a folder keyed by everything that decides
its numbers. Running them is :mod:`llmret.studies.runner`, reporting :mod:`llmret.studies.reporting`.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from llmret.data import irds
from llmret.data.spec import resolve_folder
from llmret.evaluation.measures import parse_measures
from llmret.evaluation.significance import CORRECTIONS
from llmret.studies.systems import FUSION, SystemSpec
from llmret.training.settings import TrainSettings, resolve_temperatures
from llmret.util.errors import DataError, InputError
from llmret.util.settings import from_dict, load_config

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

def _study_keys(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A study file's top-level keys over those of the study it ``extends``, followed to the end."""
    data = load_config(path)
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise DataError(path, None, "extends names one study: a file (relative to this one) or a preset")
    target = path.parent / base
    if not target.is_file() and (PRESETS / f"{base}.yaml").is_file():
        target = PRESETS / f"{base}.yaml"
    if not target.is_file():
        raise DataError(path, None, f"extends '{base}': no such study file next to this one, and no such preset")
    if target.resolve() in (*chain, path.resolve()):
        raise DataError(path, None, f"extends '{base}', which leads back to this file")
    return {**_study_keys(target, (*chain, path.resolve())), **data}


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
        A file that ``extends`` another study (a file relative to it, or a preset's name) takes that study's
        keys and replaces the ones it gives (a seed study of a preset gives its name and its grid only).
        ``$VARIABLES`` and ``~`` in data paths are expanded (a preset names ``$LLMRET_DATA/...``)."""
        data = {k: v for k, v in _study_keys(Path(path)).items() if not str(k).startswith("x-")}  # x-*: YAML anchors
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
        for system in spec.systems:
            wrong = [n for n in system.fuse if n not in names or n == system.name
                     or next(s for s in spec.systems if s.name == n).retriever == FUSION]
            if wrong:
                raise DataError(path, None, f"system '{system.name}' fuses {', '.join(wrong)}: fuse names other "
                                            f"systems of the study that are not fusions themselves ({', '.join(names)})")
        if spec.baseline is not None and spec.baseline not in names:
            raise DataError(path, None, f"baseline '{spec.baseline}' is not one of the systems: {', '.join(names)}")
        spec.check_reporting(path)
        applied = {axis for cell in cells(spec) for axis in cell.axes}
        for axis in spec.grid:
            if axis not in applied:
                raise DataError(path, None, f"grid axis '{axis}' applies to no system (train.* and checkpoint: "
                                            "trained systems; encoder.*: dense and sparse ones)")
        for cell in cells(spec):  # every cell's settings are checked before anything runs
            try:
                cell.system.encoder_settings()
                if cell.system.train is not None:
                    cell.train_settings(Path("unused"))
            except (DataError, ValueError) as exc:
                message = str(exc).removeprefix("<input>: ")
                raise DataError(path, None, f"system '{cell.label}': {message}") from None
        return spec

    def check_reporting(self, path: str | Path) -> None:
        """Measures, significance level and correction, checked when the file is read: not after its
        cells have run, when the report needs them."""
        if not 0 < self.alpha < 1:
            raise DataError(path, None, f"alpha must be between 0 and 1, not {self.alpha}")
        if self.correction not in CORRECTIONS:
            raise DataError(path, None, f"correction must be one of {', '.join(CORRECTIONS)}, not '{self.correction}'")
        try:
            parse_measures(self.measures or [])
        except InputError as exc:
            raise DataError(path, None, str(exc)) from None

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
    parts: list[Cell] = field(default_factory=list)  # a fusion system's: the cells whose runs it fuses

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
        if not dataset.encoder or self.system.retriever in ("bm25", FUSION):
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
        for newer in ("fuse", "fusion"):  # likewise
            if not key["system"][newer]:
                del key["system"][newer]
        if self.parts:  # a hybrid's numbers change whenever a part's do
            key["parts"] = [part.eval_key(dataset, measures) for part in self.parts]
        return _digest(key)

def _data_key(spec: DatasetSpec | HeldoutSpec) -> dict[str, Any]:
    """What of a dataset or held-out spec decides its numbers: not ``irds``, an alternative that is
    already resolved into ``data``, nor an empty ``encoder`` (leaving them out keeps the keys of studies
    run before they existed)."""
    return {k: v for k, v in asdict(spec).items() if k != "irds" and not (k == "encoder" and not v)}

def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]

def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60]

def _layer_name(spec: StudySpec) -> str:
    """What a study's own settings are called among the layers: "preset NAME" for a shipped preset."""
    source = getattr(spec, "source", None)
    if source is None or PRESETS not in Path(source).resolve().parents:
        return "study"
    return "preset " + Path(source).resolve().relative_to(PRESETS).parts[0].removesuffix(".yaml")

def cells(spec: StudySpec) -> list[Cell]:
    """Every system crossed with the grid axes that apply to it, in file order. A fusion system takes
    the axes of its parts, and each of its cells the parts' cells with the same values."""
    layer = _layer_name(spec)
    out: list[Cell] = []
    fused = [s for s in spec.systems if s.retriever == FUSION]
    for system in [s for s in spec.systems if s.retriever != FUSION]:
        axes = _axes_of(spec, system)
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
    for system in fused:
        by_name = {s.name: s for s in spec.systems}
        axes = [a for a in spec.grid if any(a in _axes_of(spec, by_name[n]) for n in system.fuse)]
        for values in itertools.product(*(spec.grid[a] for a in axes)):
            chosen = dict(zip(axes, values))
            parts = [next(c for c in out if c.base == name
                          and c.axes == {a: v for a, v in chosen.items() if a in _axes_of(spec, by_name[name])})
                     for name in system.fuse]
            out.append(Cell(system.name, chosen, system, system, system, layer, parts=parts))
    order = {s.name: i for i, s in enumerate(spec.systems)}
    return sorted(out, key=lambda c: order[c.base])  # stable: file order, each system's grid in order


def _axes_of(spec: StudySpec, system: SystemSpec) -> list[str]:
    """The grid axes that apply to a (non-fusion) system: train.* and checkpoint to trained ones,
    encoder.* to encoders."""
    return [a for a in spec.grid if ((a.startswith("train.") or a == CHECKPOINT) and system.train is not None)
            or (a.startswith("encoder.") and system.retriever not in ("bm25", FUSION))]

def train_folder(spec: StudySpec, cell: Cell) -> Path:
    """Keyed by the training alone (not the system's name): equal trainings in the studies of a suite,
    which share ``train_root``, run once."""
    return spec.train_root / f"{cell.trained.retriever}-{cell.train_key()}"

def mntp_key(cell: Cell) -> str:
    """The key of a cell's MNTP stage: its settings as resolved, the output folder left out."""
    settings = asdict(cell.system.mntp_settings(Path(".")))
    settings.pop("output_dir")
    return _digest(settings)

def stage_folder(spec: StudySpec, cell: Cell) -> Path | None:
    """Where a cell's MNTP stage goes (shared by every cell with the same stage), or None without one."""
    return spec.train_root / f"mntp-{mntp_key(cell)}" if cell.system.mntp is not None else None

def heldout_file(spec: StudySpec, cell: Cell) -> Path:
    return train_folder(spec, cell) / f"heldout-{_digest(_data_key(spec.heldout))}.json"

def eval_folder(root: Path, cell: Cell, dataset: DatasetSpec, measures: list[str] | None) -> Path:
    return root / "cells" / f"{slug(cell.base)}-{slug(dataset.label)}-{cell.eval_key(dataset, measures)}"

def status(spec: StudySpec) -> Iterator[tuple[Cell, DatasetSpec, bool]]:
    """(cell, dataset, finished) for every pair of the study."""
    for cell in cells(spec):
        for dataset in spec.datasets:
            yield cell, dataset, (eval_folder(spec.folder, cell, dataset, spec.measures) / "done.json").is_file()
