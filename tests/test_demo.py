"""The main job end to end at a tiny size: BM25, a zero-shot model and one briefly fine-tuned as a dense and as a
sparse retriever on a built-in task, through the same factory as the CLI; its table is what its metrics files say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmret.demo import METRICS, run_demo


def test_demo_runs_every_system_and_its_table_matches_the_metrics(tiny_bert: Path, tiny_llama: Path,
                                                                    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = run_demo(tmp_path / "demo", models=[str(tiny_bert)], tasks=["long"], finetune=str(tiny_llama), train_steps=2)
    names = [r["system"] for r in rows]
    assert names == ["bm25", f"{tiny_bert} (zero-shot)", f"{tiny_llama} (LoRA+InfoNCE)",
                     f"{tiny_llama} (sparse LoRA+InfoNCE+FLOPS)"]
    folders = {"bm25": "bm25", names[1]: f"{tiny_bert.name}/zero-shot", names[2]: f"{tiny_llama.name}/lora-dense",
               names[3]: f"{tiny_llama.name}/lora-sparse"}
    for row in rows:
        folder = tmp_path / "demo" / "long" / folders[str(row["system"])]
        metrics = json.loads((folder / "metrics.json").read_text())
        assert {m: row[m] for m in METRICS} == {m: metrics["aggregate"][m] for m in METRICS}
        assert ("terms/p" in row) == (row["system"] == names[3])
    # The sparse row's term counts are those of its own vectors, counted here from the saved run's settings
    # and checked against the restriction it trained with: no passage has more terms than its own tokens.
    sparse = rows[3]
    saved = json.loads((tmp_path / "demo" / "long" / folders[names[3]] / "settings.json").read_text())
    assert sparse["terms/p"] == saved["sparsity"]["passage_nonzero"] and sparse["terms/q"] == saved["sparsity"]["query_nonzero"]
    assert float(sparse["terms/q"]) <= 32 and float(sparse["terms/p"]) <= 64
    trained = json.loads((tmp_path / "demo" / "train-sparse" / "final" / "llmret.json").read_text())
    assert trained["encoder"]["input_terms_only"] is True
    assert json.loads((tmp_path / "demo" / "results.json").read_text()) == json.loads(json.dumps(rows))
    assert not (tiny_bert / "zero-shot").exists()  # results stay under the output folder
    assert (tmp_path / "demo" / "train-dense" / "final" / "llmret.json").is_file()
    table = (tmp_path / "demo" / "results.md").read_text()
    assert f"{100 * rows[0]['nDCG@10']:.2f}" in table and f"{100 * rows[0]['nDCG@10']:.2f}" in capsys.readouterr().out
