"""Experiment trackers: TensorBoard, through accelerate's tracker, gets every value of every log record at
its step (read back with TensorBoard's own event reader), and a tracker whose package is missing is one
line before any data or model loads."""

from __future__ import annotations

import importlib.util
import json
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


def test_a_tracker_without_its_package_is_one_line_before_training(tiny_bert: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    data = write_training_file(tmp_path / "train.jsonl", 16, (1, 5))
    args = ["train", "--model", str(tiny_bert), "--train-data", str(data), "--batch-size", "4", "--group-size", "2",
            "--max-steps", "1", "--output-dir", str(tmp_path / "run")]
    assert main([*args, "--report-to", "tensorboard", "nope"]) == 2
    assert "unknown tracker(s) nope; known: tensorboard, trackio, wandb, mlflow" in capsys.readouterr().err
    absent = [name for name, package in PACKAGES.items() if importlib.util.find_spec(package) is None]
    if not absent:
        pytest.skip("every tracker's package is installed here")
    assert main([*args, "--report-to", absent[0]]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("llmret: error:") and f"pip install {PACKAGES[absent[0]]}" in err
    assert not (tmp_path / "run" / "log.jsonl").exists()  # nothing ran
