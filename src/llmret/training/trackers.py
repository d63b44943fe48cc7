"""Experiment trackers through accelerate's own (TensorBoard, Trackio, Weights & Biases, MLflow), so every
log record (each loss part, the learning rate, tokens/s, FLOPs) also reaches the tool a team watches.

Each tracker's package is checked before any data or model loads: a missing one is one line saying what
to install, never a failure after the first step. Weights & Biases and MLflow run offline unless the
user configured them (``WANDB_MODE``, ``MLFLOW_TRACKING_URI``), writing under the output folder; Trackio
writes where its own dashboard (``trackio show``) looks, ``TRACKIO_DIR`` or the Hugging Face cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from llmret.util.errors import InputError

PROJECT = "llmret"  # the tracker project; TensorBoard writes OUTPUT/llmret
PACKAGES = {"tensorboard": "tensorboard", "trackio": "trackio", "wandb": "wandb", "mlflow": "mlflow"}


def check_trackers(names: list[str]) -> None:
    """Refuse unknown trackers and trackers whose package is not installed, naming what to install."""
    unknown = [n for n in names if n not in PACKAGES]
    if unknown:
        raise InputError(f"report_to: unknown tracker(s) {', '.join(unknown)}; known: {', '.join(PACKAGES)}")
    missing = [PACKAGES[n] for n in names if importlib.util.find_spec(PACKAGES[n]) is None]
    if missing:
        raise InputError(f"report_to {' '.join(names)} needs {', '.join(missing)}, not installed: "
                         f"pip install {' '.join(missing)}")


def accelerator_options(names: list[str], output_dir: str) -> dict[str, Any]:
    """The Accelerator's arguments for ``names`` (checked), with the offline defaults set."""
    if not names:
        return {}
    check_trackers(names)
    out = Path(output_dir).resolve()
    if "wandb" in names:
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_DIR", str(out))
    if "mlflow" in names and "MLFLOW_TRACKING_URI" not in os.environ:
        # MLflow 3 refuses its file store unless allowed; we allow it because the alternative (SQLite)
        # needs SQLAlchemy and Alembic, which mlflow-skinny lacks, and `mlflow ui --backend-store-uri
        # OUTPUT/mlruns` reads the folder as it is.
        os.environ["MLFLOW_TRACKING_URI"] = (out / "mlruns").as_uri()
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return {"log_with": list(names), "project_dir": str(out)}


def start(accelerator: Any, names: list[str], run: str, settings: dict[str, Any]) -> None:
    """Open the trackers for run ``run`` with its settings as hyperparameters (flattened to the scalars
    every tracker takes)."""
    if not names:
        return
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            flat[prefix] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)

    walk("", settings)
    accelerator.init_trackers(PROJECT, config=flat, init_kwargs={"wandb": {"name": run}, "mlflow": {"run_name": run},
                                                                   "trackio": {"name": run}})
