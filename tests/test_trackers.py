"""Experiment trackers: TensorBoard, Weights & Biases (offline), MLflow (local) and Trackio, through
accelerate's trackers, get every value of every log record at its step, each read back with the tracker's
own reader (W&B's record schema, MLflow's client, Trackio's storage); a tracker whose package is missing is
one line before any data or model loads."""

from __future__ import annotations

import glob
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from llmret.cli import main
from llmret.encoders.settings import EncoderSettings
from llmret.training.trackers import PACKAGES
from llmret.training.train import TrainSettings, train

from helpers import write_training_file


def test_tensorboard_gets_every_logged_value_at_its_step(tiny_bert: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = write_training_file(tmp_path / "train.jsonl", 16, (1, 5))
    out = tmp_path / "run"
    train(TrainSettings(train_data=str(data), output_dir=str(out), batch_size=4, group_size=2, max_steps=3, lora_r=4,
                        logging_steps=1, report_to=["tensorboard"],
                        encoder=EncoderSettings(model=str(tiny_bert), passage_max_length=24)))
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(out / "llmret"))
    events.Reload()
    keys = [key for key in records[0] if key != "step"]
    assert {"loss", "lr", "tokens_per_s", "flops", "ranking_loss"} <= set(keys)
    for key in keys:
        scalars = events.Scalars(key)
        assert [s.step for s in scalars] == [r["step"] for r in records], key
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in records], rel=1e-6), key


def _wandb_history(run_file: Path) -> list[dict[str, float]]:
    """The history rows of an offline W&B run, read with W&B's own protobuf schema.

    The file is LevelDB's log format (32 KiB blocks; records of a 7-byte header: CRC, length, kind
    1 full / 2 first / 3 middle / 4 last) after W&B's 7-byte file header; wandb ships no Python reader
    for it any more, so the framing is re-stated here from LevelDB's format description.
    """
    from wandb.proto import wandb_internal_pb2

    data, pos, parts, rows = run_file.read_bytes(), 7, [], []
    while pos + 7 <= len(data):
        if (left := 32768 - pos % 32768) < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        parts.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


@pytest.mark.slow
def test_wandb_mlflow_and_trackio_get_every_logged_value_at_its_step(tiny_bert: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb"), pytest.importorskip("mlflow"), pytest.importorskip("trackio")
    data = write_training_file(tmp_path / "train.jsonl", 16, (1, 5))
    out = tmp_path / "run"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("WANDB_", "MLFLOW_"))}
    env["TRACKIO_DIR"] = str(tmp_path / "trackio")  # Trackio's own store, kept out of the user's cache
    # A process of its own: the trackers keep global state (and the offline defaults are environment variables).
    done = subprocess.run([sys.executable, "-m", "llmret", "train", "--model", str(tiny_bert), "--train-data", str(data),
                    "--batch-size", "4", "--group-size", "2", "--max-steps", "3", "--lora-r", "4",
                    "--passage-max-length", "24", "--logging-steps", "1", "--output-dir", str(out),
                    "--report-to", "wandb", "mlflow", "trackio"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    keys = [key for key in records[0] if key != "step"]
    assert {"loss", "lr", "tokens_per_s", "flops", "ranking_loss"} <= set(keys)

    (run_file,) = glob.glob(str(out / "wandb" / "offline-run-*" / "run-*.wandb"))  # offline, under the run
    history = _wandb_history(Path(run_file))
    assert [row["_step"] for row in history] == [r["step"] for r in records]

    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # as `mlflow ui` needs it for the run's folder
    client = MlflowClient(tracking_uri=(out / "mlruns").as_uri())
    (mlflow_run,) = client.search_runs([client.get_experiment_by_name("llmret").experiment_id])
    assert mlflow_run.info.run_name == "run" and mlflow_run.data.params["max_steps"] == "3"

    read_trackio = ("import json, sys; from trackio.sqlite_storage import SQLiteStorage as S; "
                    "print(json.dumps(S.get_logs('llmret', 'run'), default=str))")
    trackio_logs = json.loads(subprocess.run([sys.executable, "-c", read_trackio], check=True, env=env,
                                             capture_output=True, text=True).stdout)
    assert [row["step"] for row in trackio_logs] == [r["step"] for r in records]
    for key in keys:
        expected = pytest.approx([r[key] for r in records], rel=1e-6)
        assert [row[key] for row in history] == expected, key
        assert [m.value for m in sorted(client.get_metric_history(mlflow_run.info.run_id, key),
                                        key=lambda m: m.step)] == expected, key
        assert [row[key] for row in trackio_logs] == expected, key


def test_a_tracker_without_its_package_is_one_line_before_training(tiny_bert: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_training_file(tmp_path / "train.jsonl", 16, (1, 5))
    args = ["train", "--model", str(tiny_bert), "--train-data", str(data), "--batch-size", "4", "--group-size", "2",
            "--max-steps", "1", "--output-dir", str(tmp_path / "run")]
    assert main([*args, "--report-to", "tensorboard", "nope"]) == 2
    assert "unknown tracker(s) nope; known: tensorboard, trackio, wandb, mlflow" in capsys.readouterr().err
    monkeypatch.setitem(PACKAGES, "wandb", "wandb_absent")  # the real check, for a package no machine has
    assert main([*args, "--report-to", "tensorboard", "wandb"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("llmret: error:") and "pip install wandb_absent" in err
    assert not (tmp_path / "run" / "log.jsonl").exists()  # nothing ran
