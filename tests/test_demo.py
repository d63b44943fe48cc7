"""The main job end to end at a tiny size: BM25, a zero-shot model and one briefly fine-tuned as a dense and as a
sparse retriever on a built-in task, run as the demo study preset; its table is what its metrics files say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmret import studies
from llmret.cli import main
from llmret.studies import presets
from llmret.studies.demo import METRICS, demo_study, run_demo


def test_demo_runs_every_system_and_its_table_matches_the_metrics(tiny_bert: Path, tiny_llama: Path,
                                                                    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    options = {"models": [str(tiny_bert)], "tasks": ["long"], "finetune": str(tiny_llama), "train_steps": 2}
    rows = run_demo(tmp_path / "demo", **options)
    names = [r["system"] for r in rows]
    assert names == ["bm25", f"{tiny_bert} (zero-shot)", f"{tiny_llama} (LoRA+InfoNCE)",
                     f"{tiny_llama} (sparse LoRA+InfoNCE+FLOPS)"]
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
    config = (studies.train_folder(spec, by_name[names[2]]) / "train_config.yaml").read_text()
    assert "max_steps: 2" in config and str(tiny_llama) in config
    assert json.loads((tmp_path / "demo" / "results.json").read_text()) == json.loads(json.dumps(rows))
    assert not (tiny_bert / "cells").exists()  # results stay under the output folder
    table = (tmp_path / "demo" / "results.md").read_text()
    assert f"{100 * rows[0]['nDCG@10']:.2f}" in table and f"{100 * rows[0]['nDCG@10']:.2f}" in capsys.readouterr().out
    assert (tmp_path / "demo" / "report.md").is_file()
    # a second run, as the command line starts it, finds every cell done and trains nothing: the same rows
    assert main(["demo", "--out", str(tmp_path / "demo"), "--models", str(tiny_bert), "--tasks", "long",
                 "--finetune", str(tiny_llama), "--train-steps", "2"]) == 0
    assert json.loads((tmp_path / "demo" / "results.json").read_text()) == json.loads(json.dumps(rows))


def test_the_demo_is_the_demo_preset_and_its_options_replace_parts_of_it(tmp_path: Path) -> None:
    preset = presets.load("demo", str(tmp_path)).studies[0]
    plain = demo_study(tmp_path)
    assert [(c.label, c.eval_key(d, plain.measures)) for c in studies.cells(plain) for d in plain.datasets] == \
        [(c.label, c.eval_key(d, preset.measures)) for c in studies.cells(preset) for d in preset.datasets]
    only_dense = demo_study(tmp_path, finetune_as=["dense"], models=[], tasks=["docs"])
    assert [s.name for s in only_dense.systems] == ["bm25", "smollm2-135m (LoRA+InfoNCE)"]
    assert [d.data for d in only_dense.datasets] == ["builtin:docs"]
    assert [s.name for s in demo_study(tmp_path, finetune="").systems] == ["bm25", "minilm-l6 (zero-shot)"]
    with pytest.raises(ValueError, match="tasks are among code, docs, long"):
        demo_study(tmp_path, tasks=["nope"])
    # another backbone takes the preset's model's place in each trained system's label and encoder
    other = demo_study(tmp_path, finetune="/models/my llama", train_steps=3)
    trained = [s for s in other.systems if s.train is not None]
    assert [s.name for s in trained] == ["/models/my llama (LoRA+InfoNCE)", "/models/my llama (sparse LoRA+InfoNCE+FLOPS)"]
    assert {s.encoder["model"] for s in trained} == {"/models/my llama"} and {s.train["max_steps"] for s in trained} == {3}
    assert other.source == plain.source == presets.PRESETS / "demo.yaml"  # errors still name the preset file
