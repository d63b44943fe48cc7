"""What a study will run, before it runs: every cell's settings with the layer that set each one."""

from __future__ import annotations

from dataclasses import asdict, replace
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

from llmret.studies.spec import StudySpec, cells, stage_folder, train_folder
from llmret.studies.systems import FUSION
from llmret.training.settings import resolve_temperatures


def plan(spec: StudySpec) -> list[dict[str, Any]]:
    """Every cell as it would run, nothing run or loaded: its training settings fully resolved (each
    ``{"value", "from"}``: the layer that set it, or ``default``; temperatures left to their default show
    the value training resolves, from ``default (resolved)``), the recipe values a layer replaced, the
    training folder, and the evaluation encoder's settings (unset ones come from the model when it loads)
    with the datasets and measures."""
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
            entry["train_folder"] = str(train_folder(spec, cell))
            if cell.system.mntp is not None:
                stage = asdict(cell.system.mntp_settings(stage_folder(spec, cell)))
                given = {*cell.system.mntp, "model"}
                entry["stage"] = {"mntp": {key: {"value": value, "from": cell.layer if key in given else
                                                 ("study" if key == "output_dir" else "default")}
                                           for key, value in stage.items()}}
                entry["train"]["encoder.model"] = {"value": f"{stage['output_dir']}/final", "from": "stage mntp"}
        if cell.parts:
            entry["evaluation"] = {"fuse": {"value": [part.label for part in cell.parts], "from": cell.layer},
                                   **{f"fusion.{k}": {"value": v, "from": cell.layer if k in cell.system.fusion else
                                                      "default"} for k, v in cell.system.fusion_options().items()}}
        elif cell.system.retriever != "bm25":
            grid = {a.removeprefix("encoder."): v for a, v in cell.axes.items() if a.startswith("encoder.")}
            layered = cell.origin.encoder_layers(grid, cell.layer)
            entry["evaluation"] = {f"encoder.{key}": {"value": value, "from": layered.origins[f"encoder.{key}"]}
                                   for key, value in layered.values.get("encoder", {}).items()}
        elif cell.system.bm25:
            entry["evaluation"] = {f"bm25.{k}": {"value": v, "from": cell.layer} for k, v in cell.system.bm25.items()}
        entry["datasets"] = [d.label for d in spec.datasets]
        if any(d.encoder for d in spec.datasets) and cell.system.retriever not in ("bm25", FUSION):
            entry["dataset_encoder"] = {d.label: d.encoder for d in spec.datasets if d.encoder}
        entry["measures"] = spec.measures
        out.append(entry)
    return out

def _field_value(settings: Any, key: str) -> Any:
    return getattr(settings.encoder, key.removeprefix("encoder.")) if key.startswith("encoder.") else getattr(settings, key)
