"""Training curves: what the PNG draws is what the logs say, and a bad log names its file and line."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import pytest

from llmret.cli import main
from llmret.training.curves import plot_curves
from llmret.util.errors import DataError


def _log(folder: Path, records: list[dict[str, object]]) -> Path:
    folder.mkdir(parents=True)
    (folder / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_curves_draw_each_runs_logged_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dense = _log(tmp_path / "dense", [{"step": s, "loss": 3.0 / s, "lr": 1e-3} for s in (1, 2, 3)])
    sparse = _log(tmp_path / "sparse", [{"step": 2 * s, "loss": 40.0 - s, "q_nonzero": 900 - 100 * s, "p_nonzero": 4e4}
                                        for s in (1, 2)])
    out = tmp_path / "curves.png"
    drawn = plot_curves([dense, sparse / "log.jsonl"], out, ["loss", "q_nonzero"], labels=["d", "s"])
    assert drawn == {"d": {"loss": [(1, 3.0), (2, 1.5), (3, 1.0)], "q_nonzero": []},
                     "s": {"loss": [(2, 39.0), (4, 38.0)], "q_nonzero": [(2, 800.0), (4, 700.0)]}}
    image = matplotlib.image.imread(out)
    assert image.shape[1] > image.shape[0] > 100  # two panels side by side

    assert main(["curves", str(dense), str(sparse), "--out", str(tmp_path / "cli.png"), "--keys", "loss"]) == 0
    printed = capsys.readouterr().out
    assert "dense: loss 1 at step 3" in printed and "sparse: loss 38 at step 4" in printed
    assert (tmp_path / "cli.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_default_keys_fit_any_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --keys: the loss and its parts for a dense run, and the non-zero counts too for a sparse one."""
    dense = _log(tmp_path / "dense", [{"step": s, "loss": 3.0 / s, "ranking_loss": 2.0 / s, "kd_loss": 1.0 / s,
                                       "lr": 1e-3, "tokens_per_s": 90.0} for s in (1, 2)])
    sparse = _log(tmp_path / "sparse", [{"step": s, "loss": 9.0 - s, "ranking_loss": 5.0 - s, "reg_loss": 4.0,
                                         "q_nonzero": 12.0, "p_nonzero": 30.0} for s in (1, 2)])
    assert list(plot_curves([dense], tmp_path / "d.png")["dense"]) == ["loss", "ranking_loss", "kd_loss"]
    assert list(plot_curves([sparse], tmp_path / "s.png")["sparse"]) == ["loss", "ranking_loss", "reg_loss",
                                                                          "q_nonzero", "p_nonzero"]
    assert main(["curves", str(dense), "--out", str(tmp_path / "cli.png")]) == 0
    assert "dense: loss 1.5 at step 2, ranking_loss 1 at step 2, kd_loss 0.5 at step 2" in capsys.readouterr().out


def test_bad_logs_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _log(tmp_path / "run", [{"step": 1, "loss": 2.0}, {"step": 2, "loss": "nan?"}])
    with pytest.raises(DataError, match=r"log.jsonl:2: 'loss' is not a number"):
        plot_curves([run], tmp_path / "x.png", ["loss"])
    unstepped = _log(tmp_path / "unstepped", [{"loss": 2.0}])
    with pytest.raises(DataError, match=r"log.jsonl:1: a log record needs an integer 'step'"):
        plot_curves([unstepped], tmp_path / "x.png", ["loss"])
    fine = _log(tmp_path / "fine", [{"step": 1, "loss": 2.0}])
    assert main(["curves", str(fine), "--out", str(tmp_path / "x.png"), "--keys", "p_nonzero"]) == 2
    assert "no run logged p_nonzero" in capsys.readouterr().err
    assert main(["curves", str(tmp_path / "absent"), "--out", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()
