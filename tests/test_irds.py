"""ir_datasets ids as data: converted to the same BEIR data the source files hold, evaluated by the same
rules, fetched before a study does any work, and a clear error offline.

ir_datasets fixes its home when imported, and online it would download, so every run that reaches it
goes through the CLI in a fresh process with ``IR_DATASETS_HOME`` in a temporary folder and the proxy
pointed at a closed port: the tests never reach the network. SciFact comes from ir_datasets' own copy
of the BEIR zip, which it reads instead of downloading (its ``beir/scifact/source.zip``), built here
from the shared SciFact files.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from llmret import studies as study_module
from llmret.studies.spec import StudySpec

from helpers import SCIFACT

pytestmark = pytest.mark.slow  # several processes: the CI tier

pytest.importorskip("ir_datasets")


@pytest.fixture()
def irds_env(tmp_path: Path) -> dict[str, str]:
    """An ir_datasets home holding SciFact's BEIR zip, an empty llmret cache, and no way out."""
    home = tmp_path / "irds-home"
    (home / "beir" / "scifact").mkdir(parents=True)
    with zipfile.ZipFile(home / "beir" / "scifact" / "source.zip", "w") as archive:
        archive.writestr("scifact/corpus.jsonl", gzip.decompress((SCIFACT / "corpus.jsonl.gz").read_bytes()))
        archive.write(SCIFACT / "queries.jsonl", "scifact/queries.jsonl")
        for split in ("train", "test"):
            archive.write(SCIFACT / "qrels" / f"{split}.tsv", f"scifact/qrels/{split}.tsv")
    closed = "http://127.0.0.1:9"
    return {**os.environ, "IR_DATASETS_HOME": str(home), "LLMRET_CACHE": str(tmp_path / "cache"),
            "HTTP_PROXY": closed, "HTTPS_PROXY": closed, "https_proxy": closed, "http_proxy": closed}


def llmret(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmret.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600)


def qrels_of(path: Path) -> dict[tuple[str, str], int]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))[1:]
    return {(q, d): int(s) for q, d, s in rows}


def test_an_ir_datasets_id_is_the_source_files_data_and_evaluates_the_same(irds_env: dict[str, str],
                                                                            tmp_path: Path) -> None:
    done = llmret(irds_env, "evaluate", "--retriever", "bm25", "--data", "irds:beir/scifact/test",
                  "--out", str(tmp_path / "irds-run"))
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "cache" / "irds" / "beir--scifact--test"
    # the converted folder holds what the source files hold: every document, the judgments, the judged queries
    source_docs = [json.loads(line) for line in gzip.open(SCIFACT / "corpus.jsonl.gz", "rt")]
    docs = [json.loads(line) for line in open(folder / "corpus.jsonl")]
    assert [(d["_id"], d["title"], d["text"]) for d in docs] == [(d["_id"], d["title"], d["text"]) for d in source_docs]
    assert qrels_of(folder / "qrels" / "test.tsv") == qrels_of(SCIFACT / "qrels" / "test.tsv")
    source_queries = {q["_id"]: q["text"] for q in map(json.loads, open(SCIFACT / "queries.jsonl"))}
    queries = {q["_id"]: q["text"] for q in map(json.loads, open(folder / "queries.jsonl"))}
    assert {q for q, _ in qrels_of(SCIFACT / "qrels" / "test.tsv")} <= set(queries)
    assert all(source_queries[q] == text for q, text in queries.items())
    # ... and is evaluated by BEIR's rules, as the local folder is: the same numbers
    local = llmret(irds_env, "evaluate", "--retriever", "bm25", "--data", str(SCIFACT),
                   "--out", str(tmp_path / "local-run"))
    assert local.returncode == 0, local.stderr
    irds_metrics = json.loads((tmp_path / "irds-run" / "metrics.json").read_text())
    local_metrics = json.loads((tmp_path / "local-run" / "metrics.json").read_text())
    assert irds_metrics["dataset"] == "beir/scifact/test"
    assert irds_metrics["aggregate"] == local_metrics["aggregate"] and irds_metrics["aggregate"]["nDCG@10"] > 0.6
    settings = json.loads((tmp_path / "irds-run" / "settings.json").read_text())
    assert settings["rules"]["convention"] == "beir" and settings["rules"]["exclude_self"]
    # a training id is training data as its local folder is (judged pairs, BM25-mined negatives), and the
    # corpus is written once per collection: the train split's folder links the same file
    script = ("import json, sys; from llmret.training.train import TrainSettings, load_examples\n"
              "examples = load_examples(TrainSettings(train_data=sys.argv[1]))\n"
              "print(json.dumps([[e.query_id, [p.docid for p in e.positives], [p.docid for p in e.negatives]]"
              " for e in examples]))")
    mined = [subprocess.run([sys.executable, "-c", script, data], env=irds_env, capture_output=True, text=True,
                            check=True).stdout for data in ("irds:beir/scifact/train", str(SCIFACT))]
    assert mined[0] == mined[1] and len(json.loads(mined[0])) == 809
    train_folder = tmp_path / "cache" / "irds" / "beir--scifact--train"
    assert (folder / "corpus.jsonl").resolve() == (train_folder / "corpus.jsonl").resolve()


def test_offline_an_unknown_or_unfetchable_id_is_one_clear_line(irds_env: dict[str, str], tmp_path: Path) -> None:
    done = llmret(irds_env, "evaluate", "--retriever", "bm25", "--data", "irds:beir/nfcorpus/test",
                  "--out", str(tmp_path / "o"))
    assert done.returncode == 2
    assert "irds:beir/nfcorpus/test: ir_datasets could not fetch it" in done.stderr
    assert str(tmp_path / "irds-home") in done.stderr and not (tmp_path / "o").exists()
    done = llmret(irds_env, "evaluate", "--retriever", "bm25", "--data", "irds:no/such/id", "--out", str(tmp_path / "o"))
    assert done.returncode == 2 and "irds:no/such/id: not an ir_datasets id" in done.stderr


def test_a_study_reads_ir_datasets_where_its_local_copy_is_missing(irds_env: dict[str, str], tmp_path: Path) -> None:
    study = {"name": "s", "out": str(tmp_path / "out"), "measures": ["nDCG@10"],
             "systems": [{"name": "bm25", "retriever": "bm25"}],
             "datasets": [{"data": str(tmp_path / "no-copy"), "irds": "beir/scifact/test"},
                          {"data": str(SCIFACT), "irds": "beir/nfcorpus/test"}]}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    spec = StudySpec.read(path)
    assert [d.data for d in spec.datasets] == ["irds:beir/scifact/test", str(SCIFACT)]  # a local copy comes first
    assert [d.label for d in spec.datasets] == ["beir/scifact/test", f"{SCIFACT}/test"]
    done = llmret(irds_env, "study", "run", str(path))
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert sorted(r["dataset"] for r in results) == sorted(d.label for d in spec.datasets)
    # an id that cannot be fetched stops the study before any work, naming the id
    study["datasets"] = [{"data": str(tmp_path / "no-copy"), "irds": "beir/nfcorpus/test"}]
    study["out"] = str(tmp_path / "out2")
    path.write_text(yaml.safe_dump(study))
    done = llmret(irds_env, "study", "run", str(path))
    assert done.returncode == 2 and "irds:beir/nfcorpus/test: ir_datasets could not fetch it" in done.stderr
    assert not (tmp_path / "out2" / "cells").exists()


def test_naming_an_ir_datasets_alternative_keeps_a_local_datasets_cells(tmp_path: Path) -> None:
    """Adding ``irds`` to a dataset whose folder is there changes nothing it computes, so its finished
    cells and held-out losses are kept (the key is what decides the numbers: the data read)."""
    study = {"name": "s", "systems": [{"name": "m", "encoder": {"model": "minilm-l6"}, "train": {"max_steps": 1}}],
             "datasets": [{"data": str(SCIFACT)}], "heldout": {"data": str(SCIFACT), "split": "train"}}
    plain, with_irds = tmp_path / "plain.yaml", tmp_path / "irds.yaml"
    plain.write_text(yaml.safe_dump(study))
    study["datasets"][0]["irds"] = study["heldout"]["irds"] = "beir/scifact/test"
    with_irds.write_text(yaml.safe_dump(study))
    specs = [StudySpec.read(path) for path in (plain, with_irds)]
    folders = [[(study_module.eval_folder(s.folder, c, s.datasets[0], s.measures), study_module.heldout_file(s, c))
                for c in study_module.cells(s)] for s in specs]
    assert folders[0] == folders[1]
