"""Ready-made studies: every preset reads strictly; suites share trainings and gather their main tables; paper
presets without their data stop with what to download; encoder axes never change what is trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from llmret import studies
from llmret.cli import main
from llmret.studies import presets
from llmret.util.errors import DataError


def test_every_preset_reads_and_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    names = {"demo", "demo-recipes", "demo-seeds", "demo-variants", "mini-dense", "mini-scaling", "paper-dense", "paper-scaling"}
    assert set(presets.available()) == names
    for name in names:
        suite = presets.load(name)
        assert suite.studies and all(studies.cells(s) for s in suite.studies)
    assert [s.name for s in presets.load("mini-dense").studies] == [
        "in-domain", "data-efficiency", "zero-shot", "long-passages", "instructions", "multi-task"]
    assert main(["study", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in names)


def test_a_suite_trains_a_system_once_for_all_its_studies() -> None:
    suite = presets.load("mini-dense")
    folders: dict[str, set[Path]] = {}
    for spec in suite.studies:
        for cell in studies.cells(spec):
            if cell.system.train is not None:
                folders.setdefault(spec.name, set()).add(studies.train_folder(spec, cell))
    base = folders["long-passages"]
    assert len(base) == 1  # four evaluation lengths, one training: encoder axes evaluate, never train
    assert base <= folders["in-domain"] and base <= folders["zero-shot"] and base <= folders["data-efficiency"]
    assert base <= folders["instructions"] and len(folders["instructions"]) == 2
    assert len(folders["data-efficiency"]) == 6
    # the instruction-trained model is the multi-task study's code-only model
    assert folders["instructions"] & folders["multi-task"]
    assert all(f.parent == suite.folder / "train" for fs in folders.values() for f in fs)


def test_paper_presets_without_their_data_say_what_to_get(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLMRET_DATA", raising=False)
    assert main(["study", "run", "paper-dense", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "1-in-domain.yaml" in err and "LLMRET_DATA is not set" in err and "msmarco-train.jsonl" in err
    monkeypatch.setenv("LLMRET_DATA", str(tmp_path / "data"))
    assert main(["study", "run", "paper-scaling", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'data' / 'msmarco'}" in err and "not set" not in err and "dl19/" in err
    assert not (tmp_path / "out").exists()  # nothing ran
    assert main(["study", "run", "no-such-preset"]) == 2
    assert "presets: demo, demo-recipes, demo-seeds, demo-variants, mini-dense" in capsys.readouterr().err


def test_a_suite_runs_its_studies_and_reports_their_main_tables(study_file: Path, tmp_path: Path) -> None:
    data = yaml.safe_load(study_file.read_text())
    data.pop("out")
    data["grid"] = {}
    data["systems"] = [s for s in data["systems"] if s["name"] in ("bm25", "llama")]
    data["systems"][1]["train"]["max_steps"] = 2
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "1-first.yaml").write_text(yaml.safe_dump({**data, "name": "first", "description": "The first."}))
    (suite / "2-lengths.yaml").write_text(yaml.safe_dump({**data, "name": "lengths", "description": "Lengths.",
                                                          "grid": {"encoder.passage_max_length": [12, 20]}}))
    out = tmp_path / "out"
    unrun = presets.report(presets.load(str(suite), str(out))).read_text()  # a suite reports what has run
    assert unrun.count("No finished cells yet.") == 2
    assert main(["study", "run", str(suite), "--out", str(out)]) == 0
    assert len(list((out / "train").iterdir())) == 1  # one training for both studies and both lengths
    report = (out / "report.md").read_text()
    for name in ("first", "lengths"):
        part = (out / f"{'1-first' if name == 'first' else '2-lengths'}" / "report.md").read_text().split("\n")
        rows = [line for line in part if line.startswith("| ") and "---" not in line]
        main_rows = rows[:len(studies.cells(presets.load(str(suite), str(out)).studies[0 if name == "first" else 1])) + 1]
        assert all(row in report for row in main_rows) and f"## {name}" in report
    assert "The first." in report and "[2-lengths/report.md](2-lengths/report.md)" in report
    results = json.loads((out / "2-lengths" / "results.json").read_text())
    assert [r["axes"] for r in results if r["system"] == "llama"] == [{"encoder.passage_max_length": 12},
                                                                      {"encoder.passage_max_length": 20}]
    bad = suite / "3-bad.yaml"
    bad.write_text(yaml.safe_dump({**data, "name": "bad", "out": "elsewhere"}))
    with pytest.raises(DataError, match="3-bad.yaml: a suite's study sets no out"):
        presets.load(str(suite))
