"""Evaluation conventions apply on every path that scores a dataset, and settings.json says which."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmret.cli import main
from llmret.data import read_run
from llmret.evaluation.conventions import rules_for, rules_for_qrels

from helpers import MSMARCO_EVAL, random_texts, write_beir_folder


@pytest.fixture()
def self_hits(tmp_path: Path) -> Path:
    """A BEIR folder whose queries are also corpus documents (ids shared), as in ArguAna or Quora."""
    docs = {f"x{i}": t for i, t in enumerate(random_texts(20, seed=7, min_words=6))}
    queries = {f"x{i}": docs[f"x{i}"] for i in range(5)}  # each query is itself a document
    qrels = {f"x{i}": {f"x{i + 10}": 1} for i in range(5)}
    return write_beir_folder(tmp_path / "selfie", docs, queries, qrels)


def test_registry_names_the_conventions() -> None:
    assert rules_for(MSMARCO_EVAL / "dl19").convention == "trec-dl"
    assert rules_for(MSMARCO_EVAL / "dl20").relevance_level == 2
    assert rules_for(MSMARCO_EVAL / "dev-small").convention == "msmarco-dev"
    assert not rules_for(MSMARCO_EVAL / "dev-small").exclude_self
    assert rules_for_qrels(MSMARCO_EVAL / "dl19" / "qrels" / "test.tsv").convention == "trec-dl"
    from helpers import SCIFACT

    scifact = rules_for(SCIFACT)
    assert (scifact.convention, scifact.exclude_self, scifact.passage_max_length) == ("beir", True, 512)
    with pytest.raises(ValueError, match="unknown evaluation rules 'x'"):
        rules_for(SCIFACT, "x")


def test_beir_drops_own_ids_on_the_one_shot_and_the_staged_path(self_hits: Path, tmp_path: Path) -> None:
    assert main(["evaluate", "--data", str(self_hits), "--out", str(tmp_path / "one"), "--k", "5"]) == 0
    one = read_run(tmp_path / "one" / "run.trec")
    assert all(qid not in docs for qid, docs in one.items()) and all(len(d) == 5 for d in one.values())
    settings = json.loads((tmp_path / "one" / "settings.json").read_text())
    assert settings["rules"]["convention"] == "beir" and settings["rules"]["exclude_self"] is True
    # The staged path: a run with the self-hits in it, scored by evaluate --run, drops them too.
    raw = tmp_path / "raw.trec"
    raw.write_text("".join(f"{q} Q0 {q} 1 9.0 t\n{q} Q0 x{int(q[1:]) + 10} 2 8.0 t\n" for q in one))
    assert main(["evaluate", "--run", str(raw), "--qrels", str(self_hits / "qrels" / "test.tsv"),
                 "--out", str(tmp_path / "staged"), "--measures", "RR@10"]) == 0
    staged = json.loads((tmp_path / "staged" / "metrics.json").read_text())
    assert staged["aggregate"]["RR@10"] == pytest.approx(1.0)  # the judged document is first once its own id is gone
    assert json.loads((tmp_path / "staged" / "settings.json").read_text())["rules"]["exclude_self"] is True
    assert main(["evaluate", "--run", str(raw), "--qrels", str(self_hits / "qrels" / "test.tsv"),
                 "--out", str(tmp_path / "plain"), "--measures", "RR@10", "--rules", "plain"]) == 0
    assert json.loads((tmp_path / "plain" / "metrics.json").read_text())["aggregate"]["RR@10"] == pytest.approx(0.5)


def test_trec_dl_binary_measures_at_relevance_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    qrels = MSMARCO_EVAL / "dl19" / "qrels" / "test.tsv"
    from llmret.data.qrels import read_qrels

    judged = read_qrels(qrels)
    qid = sorted(judged)[0]
    ones = [d for d, r in judged[qid].items() if r == 1][:1]
    twos = [d for d, r in judged[qid].items() if r >= 2][:1]
    run = tmp_path / "run.trec"
    run.write_text(f"{qid} Q0 {ones[0]} 1 2.0 t\n{qid} Q0 {twos[0]} 2 1.0 t\n")
    assert main(["evaluate", "--run", str(run), "--qrels", str(qrels), "--out", str(tmp_path / "m")]) == 0
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["per_query"]["RR(rel=2)@10"][qid] == pytest.approx(0.5)  # the grade-1 hit does not count
    assert "relevance level 2" in capsys.readouterr().out


def test_truncation_and_instruction_are_recorded(tiny_llama: Path, tmp_path: Path) -> None:
    docs = {f"d{i}": t for i, t in enumerate(random_texts(10, seed=2, min_words=30, max_words=40))}
    queries = {"q1": docs["d1"], "q2": "alpha beta"}
    folder = write_beir_folder(tmp_path / "data", docs, queries, {"q1": {"d1": 1}, "q2": {"d2": 1}})
    (folder / "task.json").write_text(json.dumps({"instruction": "Find it."}))
    assert main(["evaluate", "--retriever", "dense", "--model", str(tiny_llama), "--data", str(folder),
                 "--out", str(tmp_path / "o"), "--query-max-length", "16", "--passage-max-length", "20"]) == 0
    settings = json.loads((tmp_path / "o" / "settings.json").read_text())
    assert settings["truncated"] == {"queries": 1, "passages": 10}
    assert settings["instruction"] == "" and settings["rules"]["instruction"] == "Find it."  # untrained: none used


def test_bad_k_measure_and_empty_inspect_are_clear_errors(self_hits: Path, tiny_bert: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["evaluate", "--data", str(self_hits), "--k", "0"])
    assert "must be at least 1" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(self_hits), "--out", str(tmp_path / "o"), "--measures", "FOO@10"]) == 2
    err = capsys.readouterr().err
    assert "unknown measure 'FOO@10'" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["inspect", "--model", str(tiny_bert), ""]) == 2
    assert "text 1 is empty" in capsys.readouterr().err
