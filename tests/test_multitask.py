"""Multi-task training: each batch from one task (so in-batch negatives stay within it), the tasks interleaved
in proportion to their sizes, and one task trained exactly as before."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import llmret.training.train as train_module
from llmret.encoders.settings import EncoderSettings
from llmret.training.train import TrainSettings, batch_plan, train

from helpers import write_training_file


def test_batch_plan_covers_every_batch_of_every_task_once() -> None:
    plan = batch_plan([10, 6, 5], 2, epoch=0, seed=1)
    assert sorted(plan) == [(0, b) for b in range(5)] + [(1, b) for b in range(3)] + [(2, b) for b in range(2)]
    assert plan != sorted(plan) and batch_plan([10, 6, 5], 2, 1, 1) != plan  # interleaved, per epoch
    assert batch_plan([10, 6, 5], 2, 0, 1) == plan  # seeded
    assert batch_plan([9], 2, 3, 1) == [(0, b) for b in range(4)]  # one task: in order, as before


def test_each_batch_comes_from_one_task(tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = write_training_file(tmp_path / "a.jsonl", 16, (1, 5))
    b_rows = [json.loads(line) for line in write_training_file(tmp_path / "b0.jsonl", 8, (2,)).read_text().splitlines()]
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({**r, "query_id": "b-" + r["query_id"]}) + "\n" for r in b_rows))
    seen: list[set[str]] = []
    real = train_module.make_batch

    def recording(encoder, examples, indexes, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append({examples[i].query_id.split("-")[0] if "-" in examples[i].query_id else "a" for i in indexes})
        return real(encoder, examples, indexes, *args, **kwargs)

    monkeypatch.setattr(train_module, "make_batch", recording)
    settings = TrainSettings(train_data=[str(a), str(tmp_path / "b.jsonl")], output_dir=str(tmp_path / "run"),
                             batch_size=4, group_size=2, max_steps=6, lora_r=4, logging_steps=1,
                             encoder=EncoderSettings(model=str(tiny_llama), query_max_length=12, passage_max_length=20))
    train(settings)
    steps = seen[1:]  # the first call estimates tokens per step for the FLOPs budget
    assert len(steps) == 6 and all(len(tasks) == 1 for tasks in steps)  # never a mixed batch
    assert [next(iter(t)) for t in steps].count("b") == 2  # 4 + 2 batches an epoch: b's share is 2 of 6
    assert TrainSettings(train_data=["x"]).train_data == "x"  # one source is the single-task run it always was


def test_task_instructions_put_each_task_s_own_instruction_before_its_queries(
        tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoTokenizer

    from llmret.encoders.dense import DenseEncoder
    from llmret.util.errors import DataError

    sources = {}
    # instructions in the tiny tokenizer's vocabulary, so that they decode back to words
    for task, words in (("a", "tower bridge omega"), ("b", "garden river psi")):
        (tmp_path / task).mkdir()
        sources[task] = str(write_training_file(tmp_path / task / "train.jsonl", 8, (1,)))
        (tmp_path / task / "task.json").write_text(json.dumps({"instruction": words}))
    seen: list[tuple[str, list[list[int]]]] = []
    real = train_module.make_batch

    def recording(encoder, examples, indexes, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        batch = real(encoder, examples, indexes, *args, **kwargs)
        seen.append((str(examples[indexes[0]].source), [list(ids) for ids in batch.queries]))
        return batch

    monkeypatch.setattr(train_module, "make_batch", recording)
    settings = TrainSettings(train_data=[sources["a"], sources["b"]], output_dir=str(tmp_path / "run"),
                             batch_size=4, group_size=2, max_steps=4, lora_r=4, task_instructions=True,
                             encoder=EncoderSettings(model=str(tiny_llama), query_max_length=24, passage_max_length=20))
    final = train(settings)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    tasks_seen = set()
    for source, queries in seen[1:]:  # the first call estimates tokens per step
        task = "a" if f"{tmp_path}/a/" in source else "b"
        tasks_seen.add(task)
        own, other = ("tower bridge omega", "garden river psi")[::1 if task == "a" else -1]
        for ids in queries:
            text = tokenizer.decode(ids)
            assert own in text and other not in text, text
    assert tasks_seen == {"a", "b"}
    saved = json.loads((final / "llmret.json").read_text())
    assert saved["task_instructions"] == {sources["a"]: "tower bridge omega", sources["b"]: "garden river psi"}
    assert saved["encoder"]["instruction"] == ""  # no instruction of its own: each dataset's is used
    assert DenseEncoder.load(EncoderSettings(model=str(final)), dataset={"instruction": "find gamma"}).settings.instruction \
        == "find gamma"
    assert DenseEncoder.load(EncoderSettings(model=str(final))).settings.instruction == ""
    (tmp_path / "b" / "task.json").unlink()
    with pytest.raises(DataError, match=r"b/task.json: task_instructions needs an 'instruction'"):
        train(dataclasses.replace(settings, output_dir=str(tmp_path / "run2")))
