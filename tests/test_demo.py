"""The main job end to end at a tiny size: BM25, a zero-shot model and one briefly fine-tuned as a dense and as a
sparse retriever on a built-in task, run as the demo study preset; its table is what its metrics files say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from llmret import studies
from llmret.cli import main
from llmret.data.corpus import Corpus, Document
from llmret.data.dataset import load_dataset
from llmret.data.training import read_training
from llmret.studies import presets
from llmret.studies.demo import METRICS, demo_study, run_demo
from llmret.training.pseudo_queries import pseudo_query_data

from helpers import SCIFACT, random_texts, write_beir_folder


def test_demo_runs_every_system_and_its_table_matches_the_metrics(tiny_bert: Path, tiny_llama: Path,
                                                                    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    options = {"models": [str(tiny_bert)], "tasks": ["long"], "finetune": str(tiny_llama), "train_steps": 2,
               "teacher": f"dense:{tiny_bert}"}
    rows = run_demo(tmp_path / "demo", **options)
    names = [r["system"] for r in rows]
    assert names == ["bm25", f"{tiny_bert} (zero-shot)", f"{tiny_llama} (LoRA+InfoNCE+KD)",
                     f"{tiny_llama} (sparse LoRA+InfoNCE+FLOPS)", f"{tiny_llama} (LoRA+InfoNCE+KD) + bm25",
                     f"{tiny_llama} (sparse LoRA+InfoNCE+FLOPS) + bm25"]
    spec = demo_study(tmp_path / "demo", **options)
    by_name = {c.label: c for c in studies.cells(spec)}
    for row in rows:
        folder = studies.eval_folder(spec.folder, by_name[str(row["system"])], spec.datasets[0], spec.measures)
        metrics = json.loads((folder / "metrics.json").read_text())
        assert {m: row[m] for m in METRICS} == {m: metrics["aggregate"][m] for m in METRICS}
        assert ("terms/p" in row) == (row["system"] == names[3])
    # The sparse row's term counts are those of its own vectors, counted here from the saved run's settings
    # and checked against the restriction it trained with: no passage has more terms than its own tokens.
    sparse = rows[3]
    folder = studies.eval_folder(spec.folder, by_name[names[3]], spec.datasets[0], spec.measures)
    saved = json.loads((folder / "settings.json").read_text())
    assert sparse["terms/p"] == saved["sparsity"]["passage_nonzero"] and sparse["terms/q"] == saved["sparsity"]["query_nonzero"]
    assert float(sparse["terms/q"]) <= 32 and float(sparse["terms/p"]) <= 64
    trained = json.loads((studies.train_folder(spec, by_name[names[3]]) / "final" / "llmret.json").read_text())
    assert trained["encoder"]["input_terms_only"] is True and trained["retriever"] == "sparse"
    config = yaml.safe_load((studies.train_folder(spec, by_name[names[2]]) / "train_config.yaml").read_text())
    assert config["max_steps"] == 2 and config["encoder"]["model"] == str(tiny_llama)
    assert (config["teacher"], config["objective"], config["kd_in_batch"]) == (f"dense:{tiny_bert}", "cl+kd", True)
    log = [json.loads(line) for line in (studies.train_folder(spec, by_name[names[2]]) / "log.jsonl").open()]
    assert all("kd_loss" in r for r in log)  # it distilled
    assert json.loads((tmp_path / "demo" / "results.json").read_text()) == json.loads(json.dumps(rows))
    assert not (tiny_bert / "cells").exists()  # results stay under the output folder
    table = (tmp_path / "demo" / "results.md").read_text()
    assert f"{100 * rows[0]['nDCG@10']:.2f}" in table and f"{100 * rows[0]['nDCG@10']:.2f}" in capsys.readouterr().out
    assert (tmp_path / "demo" / "report.md").is_file()
    # a second run, as the command line starts it, finds every cell done and trains nothing: the same rows
    assert main(["demo", "--out", str(tmp_path / "demo"), "--models", str(tiny_bert), "--tasks", "long",
                 "--finetune", str(tiny_llama), "--train-steps", "2", "--teacher", f"dense:{tiny_bert}"]) == 0
    assert json.loads((tmp_path / "demo" / "results.json").read_text()) == json.loads(json.dumps(rows))


def test_the_demo_is_the_demo_preset_and_its_options_replace_parts_of_it(tmp_path: Path) -> None:
    preset = presets.load("demo", str(tmp_path)).studies[0]
    plain = demo_study(tmp_path)
    assert [(c.label, c.eval_key(d, plain.measures)) for c in studies.cells(plain) for d in plain.datasets] == \
        [(c.label, c.eval_key(d, preset.measures)) for c in studies.cells(preset) for d in preset.datasets]
    only_dense = demo_study(tmp_path, finetune_as=["dense"], models=[], tasks=["docs"])
    assert [s.name for s in only_dense.systems] == ["bm25", "gemma3-270m (LoRA+InfoNCE+KD)",
                                                    "gemma3-270m (LoRA+InfoNCE+KD) + bm25"]
    assert only_dense.systems[-1].fuse == ["gemma3-270m (LoRA+InfoNCE+KD)", "bm25"]
    assert only_dense.systems[1].train["teacher"] == "dense:mpnet-base"
    # another teacher takes the preset's place; none trains InfoNCE alone, named so, the sparse system untouched
    taught = demo_study(tmp_path, teacher="cross-encoder:my/reranker")
    assert [s.train["teacher"] for s in taught.systems if s.train and "teacher" in s.train] == ["cross-encoder:my/reranker"]
    with pytest.raises(ValueError, match="teacher 'reranker': expected KIND:MODEL"):
        demo_study(tmp_path, teacher="reranker")  # before any cell runs
    alone = demo_study(tmp_path, teacher="none")
    assert [s.name for s in alone.systems if s.train is not None] == ["gemma3-270m (LoRA+InfoNCE)",
                                                                      "gemma3-270m (sparse LoRA+InfoNCE+FLOPS)"]
    assert not {"teacher", "objective", "kd_in_batch"} & set(alone.systems[2].train)
    assert alone.systems[3] == plain.systems[3] and alone.systems[4].fuse == ["gemma3-270m (LoRA+InfoNCE)", "bm25"]
    assert [d.data for d in only_dense.datasets] == ["builtin:docs"]
    assert [s.name for s in demo_study(tmp_path, finetune="").systems] == ["bm25", "minilm-l6 (zero-shot)"]
    with pytest.raises(ValueError, match="tasks are among code, docs, long"):
        demo_study(tmp_path, tasks=["nope"])
    # another backbone takes the preset's model's place in each trained system's label and encoder
    other = demo_study(tmp_path, finetune="/models/my llama", train_steps=3)
    trained = [s for s in other.systems if s.train is not None]
    assert [s.name for s in trained] == ["/models/my llama (LoRA+InfoNCE+KD)", "/models/my llama (sparse LoRA+InfoNCE+FLOPS)"]
    hybrids = [s for s in other.systems if s.retriever == "fusion"]
    assert [s.fuse for s in hybrids] == [[trained[0].name, "bm25"], [trained[1].name, "bm25"]]
    assert {s.encoder["model"] for s in trained} == {"/models/my llama"} and {s.train["max_steps"] for s in trained} == {3}
    assert other.source == plain.source == presets.PRESETS / "demo.yaml"  # errors still name the preset file


def _users_folder(folder: Path, splits: list[str]) -> Path:
    """A BEIR folder that is not built in: 30 passages of three sentences, a query per passage (its first
    words) judged in one of ``splits`` (round robin), written with the splits' judgments only."""
    docs = {f"d{i}": ". ".join(random_texts(3, seed=100 + i, min_words=5, max_words=9)) + "." for i in range(30)}
    queries = {f"q{i}": " ".join(docs[f"d{i}"].split()[:4]) for i in range(30)}
    write_beir_folder(folder, docs, queries, {f"q{i}": {f"d{i}": 1} for i in range(0, 30, len(splits))}, splits[0])
    for n, split in enumerate(splits[1:], start=1):
        with open(folder / "qrels" / f"{split}.tsv", "w") as f:
            f.write("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(n, 30, len(splits))))
    return folder


@pytest.mark.parametrize("splits, source", [(["test", "train"], "train"), (["test", "dev"], "dev"),
                                            (["test"], "pseudo"), (["dev"], "pseudo")])
def test_the_demo_trains_and_evaluates_on_a_users_folder_never_on_the_queries_it_evaluates(
        splits: list[str], source: str, tiny_bert: Path, tiny_llama: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    folder = _users_folder(tmp_path / "my-corpus", splits)
    out = tmp_path / "demo"
    rows = run_demo(out, models=[str(tiny_bert)], finetune=str(tiny_llama), finetune_as=["dense"], train_steps=2,
                    data=str(folder), teacher=f"dense:{tiny_bert}")
    assert [(r["task"], r["system"]) for r in rows] == [("my-corpus", "bm25"), ("my-corpus", f"{tiny_bert} (zero-shot)"),
                                                        ("my-corpus", f"{tiny_llama} (LoRA+InfoNCE+KD)"),
                                                        ("my-corpus", f"{tiny_llama} (LoRA+InfoNCE+KD) + bm25")]
    eval_split = "test" if "test" in splits else "dev"
    evaluated = set(load_dataset(folder, eval_split).queries.values())
    spec = demo_study(out, models=[str(tiny_bert)], finetune=str(tiny_llama), finetune_as=["dense"], train_steps=2,
                      data=str(folder), teacher=f"dense:{tiny_bert}")
    assert [(d.data, d.split) for d in spec.datasets] == [(str(folder.resolve()), eval_split)]
    trained = next(c for c in studies.cells(spec) if c.system.train is not None)
    config = yaml.safe_load((studies.train_folder(spec, trained) / "train_config.yaml").read_text())
    if source == "train":
        assert config["train_data"] == str(folder.resolve())
        return
    assert config["train_data"] == str(out / "train-data" / f"{source}.jsonl")
    queries = [e.query for e in read_training(config["train_data"])]
    assert queries and not set(queries) & evaluated
    if source == "dev":
        assert set(queries) == set(load_dataset(folder, "dev").queries.values())
    else:
        corpus_text = (folder / "corpus.jsonl").read_text()
        assert all(q in corpus_text for q in queries)  # sentences of the passages
    said = capsys.readouterr().out
    assert ("dev split" if source == "dev" else "pseudo-queries") in said
    assert ("dev split" if source == "dev" else "pseudo-queries") in (out / "results.md").read_text()


def test_pseudo_queries_are_sentences_taken_out_of_their_passage() -> None:
    docs = [Document(f"d{i}", ". ".join(random_texts(3, seed=i, min_words=4, max_words=8)) + ".", title=f"t{i}")
            for i in range(12)] + [Document("short", "one sentence only")]
    data = pseudo_query_data(Corpus.from_documents(docs), count=8, seed=3)
    assert len(data.queries) == 8 and data.queries == pseudo_query_data(Corpus.from_documents(docs), 8, 3).queries
    passages = {d.id: d for d in data.corpus}
    originals = {d.id: d for d in docs}
    for qid, query in data.queries.items():
        (did,) = data.qrels[qid]
        assert did != "short" and query in originals[did].text and query not in passages[did].text
        assert passages[did].title == originals[did].title
        assert sorted((passages[did].text + " " + query).split()) == sorted(originals[did].text.split())
    assert sum(passages[d.id].text != d.text for d in docs) == 8  # only the drawn passages lose a sentence


def test_the_demo_names_a_folder_it_cannot_use(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a folder"):
        demo_study(tmp_path, data=str(tmp_path / "missing"))
    folder = _users_folder(tmp_path / "only-train", ["train"])
    with pytest.raises(ValueError, match="evaluates the test or dev split; judgments found: train"):
        demo_study(tmp_path, data=str(folder))
    with pytest.raises(ValueError, match="give one"):
        demo_study(tmp_path, data=str(folder), tasks=["code"])


@pytest.mark.slow
def test_the_demo_command_on_beir_scifact(tiny_bert: Path, tiny_llama: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A real BEIR folder that is not built in, through the command line: trained on its train split, its
    BM25 row what Pyserini publishes for SciFact (flat index, 67.89)."""
    out = tmp_path / "demo"
    assert main(["demo", "--data", str(SCIFACT), "--out", str(out), "--models", str(tiny_bert), "--finetune",
                 str(tiny_llama), "--finetune-as", "dense", "--train-steps", "2", "--teacher", "none"]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["task"] for r in rows] == ["scifact"] * 4
    assert abs(100 * rows[0]["nDCG@10"] - 67.89) < 1.0
    assert "trained on the judged queries of scifact's train split" in capsys.readouterr().out


def test_the_mean_rows_average_each_system_over_the_tasks() -> None:
    from llmret.studies.demo import _means

    rows = [{"task": t, "system": s, "nDCG@10": n, "RR@10": n / 2, "R@100": 1.0, "seconds": 2.0}
            for t, s, n in (("code", "a", 0.2), ("docs", "a", 0.4), ("code", "b", 0.5), ("docs", "b", 0.7))]
    assert _means(rows) == [
        {"task": "mean", "system": "a", "nDCG@10": pytest.approx(0.3), "RR@10": pytest.approx(0.15), "R@100": 1.0,
         "seconds": 4.0},
        {"task": "mean", "system": "b", "nDCG@10": pytest.approx(0.6), "RR@10": pytest.approx(0.3), "R@100": 1.0,
         "seconds": 4.0}]


def test_the_runner_prepares_the_zoo_models_after_the_first_in_another_process(tmp_path: Path) -> None:
    from llmret.studies.prefetch import models_to_prepare

    # minilm-l6 loads first (BM25 has no model), so the child prepares the rest in the order they load: the
    # dense training's teacher before its student, gemma3-270m once for both trained systems
    assert models_to_prepare(demo_study(tmp_path / "demo")) == ["mpnet-base", "gemma3-270m"]
    assert models_to_prepare(demo_study(tmp_path / "demo", models=["minilm-l6", "smollm2-135m"])) == [
        "smollm2-135m", "mpnet-base", "gemma3-270m"]
    assert models_to_prepare(demo_study(tmp_path / "demo", teacher="none")) == ["gemma3-270m"]
    assert models_to_prepare(demo_study(tmp_path / "demo", models=[str(tmp_path)], finetune="")) == []  # no zoo
