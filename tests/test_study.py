"""Studies: a grid of systems x datasets from YAML, run through the one retriever factory, resumed without
redoing finished cells, and reported with numbers equal to the cells' metrics files."""

from __future__ import annotations

import csv
import json
import re
import statistics
from pathlib import Path

import pytest
import yaml

from llmret import studies
from llmret.cli import main
from llmret.data.trec import read_run
from llmret.evaluation.significance import compare
from llmret.studies import presets
from llmret.util.errors import DataError


def _done(spec: studies.StudySpec) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (spec.folder / "cells").glob("*/done.json")}


def test_study_runs_each_cell_once_resumes_and_matches_its_metrics(study_file: Path) -> None:
    spec = studies.StudySpec.read(study_file)
    labels = [c.label for c in studies.cells(spec)]
    assert labels == ["bm25", "bert", "llama [max_steps=1]", "llama [max_steps=2]"]  # train axes only on trained

    def kill_after_two(cell: studies.Cell, dataset: studies.DatasetSpec) -> None:
        if len(_done(spec)) == 2:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        studies.run(spec, on_cell=kill_after_two)
    first = _done(spec)
    assert len(first) == 2 and not (spec.folder / "train").exists()
    ran = []
    records = studies.run(spec, on_cell=lambda cell, dataset: ran.append(cell.label))
    assert ran == labels[2:]  # finished cells are skipped, not redone
    after = _done(spec)
    assert {k: after[k] for k in first} == first and len(after) == 4
    assert len(list((spec.folder / "train").glob("*/final/llmret.json"))) == 2  # one training per max_steps
    for record in records:
        metrics = json.loads((spec.folder / "cells" / record["folder"] / "metrics.json").read_text())
        assert record["metrics"] == metrics["aggregate"]
    # one cell's numbers are what `llmret evaluate` gives for the same system
    out = study_file.parent / "cli"
    data = spec.datasets[0].data
    assert main(["evaluate", "--retriever", "dense", "--model", spec.systems[1].encoder["model"], "--data", data,
                 "--out", str(out), "--measures", "nDCG@10", "RR@10"]) == 0
    bert = next(r for r in records if r["cell"] == "bert")
    assert json.loads((out / "metrics.json").read_text())["aggregate"] == pytest.approx(bert["metrics"])

    # a changed setting reruns only the cells it touches; the unchanged trainings are reused
    text = study_file.read_text().replace("- 2\n", "- 3\n")
    study_file.write_text(text)
    ran.clear()
    studies.run(studies.StudySpec.read(study_file), on_cell=lambda cell, dataset: ran.append(cell.label))
    assert ran == ["llama [max_steps=3]"]


def test_report_tables_significance_and_plot_come_from_the_metrics_files(study_file: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    spec = studies.StudySpec.read(study_file)
    with pytest.raises(ValueError, match="no finished cells"):
        studies.report(spec)
    assert main(["study", "run", str(study_file)]) == 0
    capsys.readouterr()
    assert main(["study", "status", str(study_file)]) == 0
    assert "4 of 4 finished" in capsys.readouterr().out
    text = (spec.folder / "report.md").read_text()
    cells = {c.label: c for c in studies.cells(spec)}
    per_query = {}
    for label, cell in cells.items():
        folder = studies.eval_folder(spec.folder, cell, spec.datasets[0], spec.measures)
        metrics = json.loads((folder / "metrics.json").read_text())
        per_query[label] = metrics["per_query"]["nDCG@10"]
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
        shown = re.findall(r"([0-9.]+)(\*?)", row.split("|")[2])[0]
        assert float(shown[0]) == pytest.approx(100 * metrics["aggregate"]["nDCG@10"], abs=0.005)
    marks = {c.system for c in compare(per_query, "bm25", "nDCG@10") if c.significant}
    for label in cells:
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
        assert ("*" in row.split("|")[2]) == (label in marks)
    rows = list(csv.DictReader((spec.folder / "results.csv").open()))
    assert [r["cell"] for r in rows] == list(cells) and rows[2]["train.max_steps"] == "1"
    assert (spec.folder / "nDCG-10-vs-train.max_steps.png").read_bytes()[:4] == b"\x89PNG"
    assert "![nDCG@10 against train.max_steps]" in text


def test_a_hybrid_system_fuses_its_parts_runs_by_reciprocal_rank_fusion(study_file: Path) -> None:
    """A fusion system's cell per value of its parts' axes; its run is RRF of theirs, computed here by
    the formula (score = sum over runs of 1 / (60 + rank)); a changed part reruns the hybrid."""
    data = yaml.safe_load(study_file.read_text())
    data["systems"] += [{"name": "bm25 + llama", "retriever": "fusion", "fuse": ["bm25", "llama"]},
                        {"name": "bm25 + bert", "retriever": "fusion", "fuse": ["bm25", "bert"],
                         "fusion": {"method": "rrf", "k": 10}}]
    study_file.write_text(yaml.safe_dump(data))
    spec = studies.StudySpec.read(study_file)
    assert [c.label for c in studies.cells(spec)][-3:] == ["bm25 + llama [max_steps=1]", "bm25 + llama [max_steps=2]",
                                                          "bm25 + bert"]
    records = studies.run(spec)
    folders = {c.label: studies.eval_folder(spec.folder, c, spec.datasets[0], spec.measures) for c in studies.cells(spec)}
    for hybrid, parts, k in (("bm25 + llama [max_steps=2]", ["bm25", "llama [max_steps=2]"], 60),
                             ("bm25 + bert", ["bm25", "bert"], 10)):
        runs = [read_run(folders[p] / "run.trec") for p in parts]
        fused = read_run(folders[hybrid] / "run.trec")
        for qid in fused:
            expected: dict[str, float] = {}
            for run in runs:
                ranked = sorted(run[qid].items(), key=lambda kv: (kv[1], kv[0]), reverse=True)  # trec_eval: ties by id, descending
                for rank, (doc, _) in enumerate(ranked, start=1):
                    expected[doc] = expected.get(doc, 0.0) + 1 / (k + rank)
            assert fused[qid] == pytest.approx(expected, abs=1e-6)  # run files keep six decimals
        record = next(r for r in records if r["cell"] == hybrid)
        metrics = json.loads((folders[hybrid] / "metrics.json").read_text())
        assert record["metrics"] == metrics["aggregate"]
    # a changed part (llama's learning rate) reruns it and its hybrids; bert's hybrid stays done
    data["systems"][2]["train"]["learning_rate"] = 2e-3
    study_file.write_text(yaml.safe_dump(data))
    ran: list[str] = []
    studies.run(studies.StudySpec.read(study_file), on_cell=lambda cell, dataset: ran.append(cell.label))
    assert ran == ["llama [max_steps=1]", "llama [max_steps=2]", "bm25 + llama [max_steps=1]",
                   "bm25 + llama [max_steps=2]"]


def test_a_seed_axis_reports_mean_and_spread_over_the_seeds(study_file: Path) -> None:
    data = yaml.safe_load(study_file.read_text())
    data["grid"] = {"train.seed": [1, 2, 3]}
    data["systems"][2]["train"]["max_steps"] = 2
    import shutil

    other = shutil.copytree(data["datasets"][0]["data"], study_file.parent / "other")  # a second dataset
    judged = (other / "qrels" / "test.tsv").read_text().splitlines(True)
    (other / "qrels" / "test.tsv").write_text("".join(judged[:7]))  # its first six queries
    data["datasets"].append({"data": str(other), "split": "test"})
    study_file.write_text(yaml.safe_dump(data))
    spec = studies.StudySpec.read(study_file)
    assert main(["study", "run", str(study_file)]) == 0
    values: dict[str, list[float]] = {}
    for cell in studies.cells(spec):
        if cell.system.train is not None:
            for dataset in spec.datasets:
                folder = studies.eval_folder(spec.folder, cell, dataset, spec.measures)
                values.setdefault(dataset.label, []).append(
                    100 * json.loads((folder / "metrics.json").read_text())["aggregate"]["nDCG@10"])
    assert len({tuple(v) for v in values.values()}) == 2 and all(len(v) == 3 for v in values.values())
    text = (spec.folder / "report.md").read_text()
    section = text.split("over seeds")[1]
    row = next(line for line in section.splitlines() if line.startswith("| llama |")).split("|")
    first, second = values.values()
    means = [(a + b) / 2 for a, b in zip(first, second)]
    expected = [f"{statistics.mean(v):.2f} ± {statistics.stdev(v):.2f}" for v in (first, second, means)]
    assert [c.strip() for c in row[2:6]] == ["3", *expected]
    assert next(line for line in section.splitlines() if line.startswith("| bm25 |")).split("|")[2].strip() == "1"


@pytest.mark.slow  # a killed process
def test_a_study_killed_mid_training_resumes_the_training_from_its_checkpoint(study_file: Path) -> None:
    """SIGKILL during a cell's training (no cleanup, as a lost node): the rerun keeps the finished cells,
    resumes the training from its last checkpoint, and takes each step once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    data = yaml.safe_load(study_file.read_text())
    data["grid"] = {}
    data["systems"][2]["train"].update(max_steps=80, save_steps=10, logging_steps=1)
    study_file.write_text(yaml.safe_dump(data))
    spec = studies.StudySpec.read(study_file)
    train = studies.train_folder(spec, studies.cells(spec)[2])
    process = subprocess.Popen([sys.executable, "-m", "llmret.cli", "study", "run", str(study_file)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    while not (train / "checkpoint-20" / "state.pt").is_file() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (train / "final").exists(), "the training ended before it could be killed"
    finished = _done(spec)
    assert len(finished) == 2  # BM25 and the zero-shot model ran before the training
    early = (train / "checkpoint-10" / "state.pt").stat().st_mtime_ns
    ran = []
    studies.run(spec, on_cell=lambda cell, dataset: ran.append(cell.label))
    assert ran == ["llama"] and {k: v for k, v in _done(spec).items() if k in finished} == finished
    assert (train / "checkpoint-10" / "state.pt").stat().st_mtime_ns == early  # resumed past it, not restarted
    steps = [json.loads(line)["step"] for line in (train / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 81))  # no step logged twice
    assert (train / "final" / "llmret.json").is_file()


def test_a_categorical_axis_is_drawn_as_bars_of_the_metrics_files(study_file: Path) -> None:
    data = yaml.safe_load(study_file.read_text())
    data["systems"] = [s for s in data["systems"] if s["name"] == "bert"]
    data["grid"] = {"encoder.instruction": [None, "tower bridge", ""]}
    data.pop("baseline")
    study_file.write_text(yaml.safe_dump(data))
    spec = studies.StudySpec.read(study_file)
    studies.run(spec)
    text = studies.report(spec).read_text()
    assert "![nDCG@10 against encoder.instruction](nDCG-10-vs-encoder.instruction.png)" in text
    assert (spec.folder / "nDCG-10-vs-encoder.instruction.png").read_bytes()[:4] == b"\x89PNG"
    rows, expected = [], []  # by hand: each cell's metrics file, labelled as the figure labels its value
    for cell, label in zip(studies.cells(spec), ("default", "tower bridge", "none")):
        folder = studies.eval_folder(spec.folder, cell, spec.datasets[0], spec.measures)
        metrics = json.loads((folder / "metrics.json").read_text())
        settings = json.loads((folder / "settings.json").read_text())
        assert settings["instruction"] == {"default": "", "none": ""}.get(label, label)
        rows.append({"system": "bert", "axes": cell.axes, "aggregate": metrics["aggregate"]})
        expected.append((label, metrics["aggregate"]["nDCG@10"]))
    numeric, keys, series = studies.axis_series("encoder.instruction", [None, "tower bridge", ""], rows, "nDCG@10",
                                              [spec.datasets[0].label])
    assert not numeric and keys == ["default", "tower bridge", "none"] and series == {"bert": expected}
    assert expected[1][1] != expected[0][1]  # the instruction reached the encoder


@pytest.mark.parametrize("change,message", [
    (lambda s: s["systems"][1]["encoder"].update(poolng="mean"), "unknown setting"),
    (lambda s: s["grid"].update({"max_steps": [1]}), "must be train.KEY, encoder.KEY or checkpoint"),
    (lambda s: s["grid"].update({"checkpoint": [0]}), "takes training steps"),
    (lambda s: s.update(baseline="nope"), "baseline 'nope'"),
    (lambda s: s["systems"].append({"name": "bm25", "retriever": "bm25"}), "must be unique"),
    (lambda s: s["systems"][2]["train"].update(max_step=3), "unknown setting"),
    (lambda s: s["systems"][1].pop("encoder"), "needs encoder.model"),
    (lambda s: s.update(datasets=[{"data": "/nowhere", "irds": 5}]), "irds must be a string or null, not 5"),
    # wrong types anywhere: one line naming the file, before any cell runs
    (lambda s: s["systems"][0].pop("name"), "SystemSpec needs name"),
    (lambda s: s.update(datasets=[5]), "DatasetSpec needs a mapping of settings, not 5"),
    (lambda s: s.update(grid=[1, 2]), "grid must be a mapping, not \\[1, 2\\]"),
    (lambda s: s.update(out=5), "out must be a string or null, not 5"),
    (lambda s: s["systems"][2].update(bogus=1), "unknown setting\\(s\\) bogus for SystemSpec"),
    (lambda s: s["systems"][2]["train"].update(batch_size="four"), "batch_size must be a whole number, not 'four'"),
    (lambda s: s.update(alpha="five percent"), "alpha must be a number, not 'five percent'"),
    (lambda s: s.update(alpha=5), "alpha must be between 0 and 1"),
    (lambda s: s.update(correction="sidak"), "correction must be one of holm, bonferroni, none, not 'sidak'"),
    (lambda s: s.update(measures=["nDCG@0"]), "cutoff after @ must be a whole number"),
    (lambda s: s.update(measures="nDCG@10"), "measures must be a list of a string or null"),
    (lambda s: s["systems"].append({"name": "h", "retriever": "fusion", "fuse": ["bm25", "nope"]}), "fuses nope"),
    (lambda s: s["systems"].append({"name": "h", "retriever": "fusion", "fuse": ["bm25"]}), "two or more"),
    (lambda s: s["systems"].append({"name": "h", "retriever": "fusion", "fuse": ["bm25", "bert"],
                                    "encoder": {"model": "x"}}), "has only fuse and fusion"),
    (lambda s: s["systems"].append({"name": "h", "retriever": "fusion", "fuse": ["bm25", "bert"],
                                    "fusion": {"method": "max"}}), "fusion method must be one of rrf, linear"),
    (lambda s: s["systems"].append({"name": "h", "retriever": "fusion", "fuse": ["bm25", "bert"],
                                    "fusion": {"weights": [1]}}), "1 weights for 2 fused systems"),
    (lambda s: s["systems"][0].update(fuse=["bert", "llama"]), "fuse is for retriever: fusion"),
    (lambda s: s.update(systems=["bm25"]), "SystemSpec needs a mapping of settings, not 'bm25'"),
    (lambda s: s["systems"].__setitem__(slice(1, 3), []), "grid axis 'train.max_steps' applies to no system"),
    (lambda s: s.update(heldout={"data": "x", "queries": "all"}), "queries must be a whole number, not 'all'"),
])
def test_bad_study_files_are_errors_naming_the_file(study_file: Path, change: object, message: str) -> None:
    spec = yaml.safe_load(study_file.read_text())
    change(spec)
    study_file.write_text(yaml.safe_dump(spec))
    with pytest.raises(DataError, match=message) as error:
        studies.StudySpec.read(study_file)
    assert str(study_file) in str(error.value)


def test_a_study_extends_another_file_or_a_preset_and_replaces_the_keys_it_gives(study_file: Path) -> None:
    child = study_file.parent / "seeds.yaml"
    child.write_text(yaml.safe_dump({"name": "seeds", "extends": study_file.name, "grid": {"train.seed": [1, 2]}}))
    base, spec = studies.StudySpec.read(study_file), studies.StudySpec.read(child)
    assert (spec.name, spec.grid, spec.out) == ("seeds", {"train.seed": [1, 2]}, base.out)
    assert spec.systems == base.systems and spec.datasets == base.datasets and spec.measures == base.measures
    assert [c.label for c in studies.cells(spec)][-2:] == ["llama [seed=1]", "llama [seed=2]"]
    grand = study_file.parent / "grand.yaml"  # a chain, and a preset by name
    grand.write_text(yaml.safe_dump({"name": "grand", "extends": "seeds.yaml"}))
    assert studies.StudySpec.read(grand).grid == {"train.seed": [1, 2]}
    demo, seeds = (studies.StudySpec.read(presets.PRESETS / f"{n}.yaml") for n in ("demo", "demo-seeds"))
    assert seeds.systems == demo.systems and seeds.datasets == demo.datasets and seeds.name == "demo-seeds"
    preset = study_file.parent / "mine.yaml"
    preset.write_text(yaml.safe_dump({"name": "mine", "extends": "demo", "measures": ["nDCG@10"]}))
    assert studies.StudySpec.read(preset).systems == demo.systems


@pytest.mark.parametrize("extends, message", [
    ("self.yaml", "leads back to this file"),
    ("loop.yaml", "leads back to this file"),
    ("nowhere.yaml", "no such study file next to this one, and no such preset"),
    (5, "extends names one study"),
])
def test_a_bad_extends_is_an_error_naming_the_file(tmp_path: Path, extends: object, message: str) -> None:
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump({"name": "loop", "extends": "self.yaml"}))
    study = tmp_path / "self.yaml"
    study.write_text(yaml.safe_dump({"name": "self", "extends": extends}))
    with pytest.raises(DataError, match=message) as error:
        studies.StudySpec.read(study)
    assert "self.yaml" in str(error.value)


@pytest.mark.slow  # a Ray cluster
def test_ray_executor_on_a_local_two_worker_cluster_gives_the_local_metrics(study_file: Path) -> None:
    import os

    import ray
    import torch

    spec = studies.StudySpec.read(study_file)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a one-CPU Ray task runs one thread: the same arithmetic here
    try:
        local = studies.run(spec)
    finally:
        torch.set_num_threads(threads)
    ray_file = study_file.with_name("study-ray.yaml")
    ray_file.write_text(study_file.read_text().replace(str(spec.folder), str(spec.folder) + "-ray"))
    ray_spec = studies.StudySpec.read(ray_file)
    assert len(studies.work_units(ray_spec)) == 4
    ray.init(num_cpus=2, include_dashboard=False)  # two workers: two cells at a time
    try:
        records = studies.run(ray_spec, executor="ray", cpus_per_cell=1)
        assert studies.run(ray_spec, executor="ray") == records  # all finished: read back, nothing sent again
    finally:
        ray.shutdown()
    assert [r["cell"] for r in records] == [r["cell"] for r in local] == [c.label for c in studies.cells(spec)]
    workers = {r["ran_on"] for r in records}
    assert f":{os.getpid()}" not in " ".join(workers)  # every cell ran in a Ray worker, not here
    for mine, theirs in zip(local, records):
        assert mine["folder"] == theirs["folder"]  # same keys, so either executor's results are reused
        a, b = (json.loads((s.folder / "cells" / mine["folder"] / "metrics.json").read_text()) for s in (spec, ray_spec))
        for timing in ("index_seconds", "search_seconds"):
            a.pop(timing), b.pop(timing)
        assert a == b
    with pytest.raises(ValueError, match="executor must be one of local, ray"):
        studies.run(spec, executor="slurm")


def test_checkpoints_of_one_run_and_per_dataset_encoder_settings(study_file: Path) -> None:
    """Quality against steps as Luo et al. measure it: the checkpoints of one training, not one run per
    step count; and a dataset's own evaluation lengths (Lion: 64/192 on MS MARCO, 512/512 on BEIR)."""
    raw = yaml.safe_load(study_file.read_text())
    raw["grid"] = {"checkpoint": [1, None]}
    raw["systems"] = [s for s in raw["systems"] if s["name"] == "llama"]
    del raw["baseline"]
    raw["systems"][0]["train"]["max_steps"] = 2
    raw["datasets"][0]["encoder"] = {"passage_max_length": 7}
    study_file.write_text(yaml.safe_dump(raw))
    spec = studies.StudySpec.read(study_file)
    assert [c.label for c in studies.cells(spec)] == ["llama [checkpoint=1]", "llama [checkpoint=None]"]
    records = studies.run(spec)
    trainings = list((spec.folder / "train").glob("dense-*"))
    assert len(trainings) == 1 and (trainings[0] / "checkpoint-1" / "model" / "llmret.json").is_file()
    used = [json.loads((spec.folder / "cells" / r["folder"] / "settings.json").read_text()) for r in records]
    assert [u["model"] for u in used] == [str(trainings[0] / "checkpoint-1" / "model"), str(trainings[0] / "final")]
    assert all(u["passage_max_length"] == 7 for u in used)
    assert records[0]["folder"] != records[1]["folder"]


@pytest.mark.parametrize("retriever", ["dense", "sparse"])
def test_a_trained_cell_loads_its_model_once_and_each_dataset_scores_as_with_a_fresh_load(study_file: Path,
                                                                                       monkeypatch, retriever: str) -> None:
    """A cell's evaluation model is the model its training left in memory, merged (a LoRA model took ~8 s
    a load), for all its datasets; each dataset's run equals the run of a model loaded afresh from the
    saved folder, and the training loads its own model."""
    import torch

    from llmret.evaluation.conventions import load
    from llmret.evaluation.pipeline import evaluate_retriever
    from llmret.models import backbone
    from llmret.studies.systems import build

    from helpers import random_texts, write_beir_folder

    raw = yaml.safe_load(study_file.read_text())
    docs = {f"e{i}": text for i, text in enumerate(random_texts(16, seed=5, min_words=5))}
    other = write_beir_folder(study_file.parent / "data2", docs, {f"p{i}": docs[f"e{i}"][:20] for i in range(8)},
                              {f"p{i}": {f"e{i}": 1} for i in range(8)})
    raw["datasets"].append({"data": str(other), "split": "test"})
    raw["systems"] = [s for s in raw["systems"] if s["name"] == "llama"]
    del raw["baseline"], raw["grid"]
    raw["systems"][0]["train"]["max_steps"] = 2
    raw["systems"][0]["retriever"] = retriever
    study_file.write_text(yaml.safe_dump(raw))
    loads, real = [], backbone._load_backbone

    def counted(spec: str, **kwargs):
        loads.append(Path(spec).name)
        return real(spec, **kwargs)

    monkeypatch.setattr(backbone, "_load_backbone", counted)
    spec = studies.StudySpec.read(study_file)
    records = studies.run(spec)
    base = Path(raw["systems"][0]["encoder"]["model"]).name
    assert loads == [base]  # the training's base model: the evaluations took the model it trained
    cell = studies.cells(spec)[0]
    final = str(next((spec.folder / "train").glob(f"{retriever}-*")) / "final")
    for record, dataset in zip(records, spec.datasets):
        data, rules = load(dataset.data, dataset.split, dataset.rules)
        folder = study_file.parent / f"fresh-{record['folder']}"
        fresh = build(cell.eval_system(dataset), rules=rules, work_dir=folder, model=final, progress=False)
        evaluate_retriever(fresh, data, folder, rules=rules, measures=spec.measures)
        assert read_run(spec.folder / "cells" / record["folder"] / "run.trec") == read_run(folder / "run.trec")
    assert loads.count("final") == len(spec.datasets)  # the fresh builds loaded it each time
    assert studies.run(spec) == records and loads.count("final") == len(spec.datasets)  # done: nothing loads
    # the base an adapter merged into is not handed out again as the base model
    base_folder = raw["systems"][0]["encoder"]["model"]
    with backbone.shared_loads({}):
        merged = backbone.load_backbone(final, lm_head=retriever == "sparse").model.state_dict()
        shared_base = backbone.load_backbone(base_folder, lm_head=retriever == "sparse").model.state_dict()
    fresh_base = backbone.load_backbone(base_folder, lm_head=retriever == "sparse").model.state_dict()
    assert all(torch.equal(shared_base[k], fresh_base[k]) for k in fresh_base)
    assert not all(torch.equal(merged[k], fresh_base[k]) for k in fresh_base)  # the adapter did change it
