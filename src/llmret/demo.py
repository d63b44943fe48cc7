"""The main job: BM25, zero-shot LLM retrievers, and an LLM fine-tuned with LoRA + InfoNCE, side by side.

Runs on a laptop CPU in about ten minutes: the zoo models install and convert on first use, the
built-in dataset builds from this Python's standard library, ``smollm2-135m`` trains briefly on the
built-in code task's train split, and every system is evaluated on each task's test split. Each
system writes its run and metrics under the output folder; the table goes to ``results.md`` and
``results.json``. Training checkpoints, so an interrupted demo resumes where it stopped.

The sizes here are small for a CPU; the same settings scale to real runs through ``llmret train``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from llmret.config import EncoderSettings
from llmret.data import builtin
from llmret.fileio import atomic_write, write_json
from llmret.pipeline import evaluate_retriever
from llmret.registry import load
from llmret.report import format_table
from llmret.retrievers.base import Retriever
from llmret.retrievers.bm25 import BM25Retriever
from llmret.systems import make_retriever
from llmret.train import TrainSettings, train

log = logging.getLogger(__name__)

COLUMNS = ["task", "system", "nDCG@10", "RR@10", "R@100", "seconds"]
METRICS = ["nDCG@10", "RR@10", "R@100"]
# CPU-sized lengths, the same for every dense system so that the comparison is fair.
QUERY_MAX_LENGTH, PASSAGE_MAX_LENGTH = 32, 128
TRAIN_PASSAGE_LENGTH = 64  # training is the demo's dearest part: shorter passages, more steps


def demo_training(model: str, out: Path, steps: int) -> TrainSettings:
    """A short LoRA + InfoNCE run on the built-in code task: the paper's recipe at a CPU's batch and lengths.

    LoRA goes on every layer: adapting only the top layers is cheaper per step but, in this budget,
    barely moves a decoder's last-token vector. The learning rate is above the paper's 3e-4 because
    the run is a few dozen steps, not thousands.
    """
    return TrainSettings(
        train_data="builtin:code", output_dir=str(out),
        encoder=EncoderSettings(model=model, query_max_length=QUERY_MAX_LENGTH, passage_max_length=TRAIN_PASSAGE_LENGTH),
        batch_size=16, group_size=2, max_steps=steps, learning_rate=5e-4, warmup_ratio=0.1,
        lora_r=16, lora_alpha=32, save_steps=5, logging_steps=5, temperature=0.02)


def _dense(model: str) -> Retriever:
    settings = EncoderSettings(model=model, query_max_length=QUERY_MAX_LENGTH, passage_max_length=PASSAGE_MAX_LENGTH,
                               batch_size=16)
    return make_retriever("dense", settings, progress=False)


def _folder_name(model: str) -> str:
    """A model's folder under the output: a zoo name as it is, a local folder by its name, a hub id with
    its slash replaced (never an absolute path, which would put results inside the model's folder)."""
    return Path(model).name if Path(model).expanduser().exists() else model.replace("/", "--")


def run_demo(out: Path, models: list[str], tasks: list[str], finetune: str | None = "smollm2-135m",
             train_steps: int = 26) -> list[dict[str, object]]:
    """Evaluate BM25, each model zero-shot and ``finetune`` after training; write and print the table."""
    builtin.builtin_root()

    def fine_tuned() -> Retriever:
        return _dense(str(train(demo_training(str(finetune), out / "train", train_steps), resume=True)))

    # (table name, output folder, how to build it): built one at a time, so one model is in memory at once.
    systems: list[tuple[str, str, Callable[[], Retriever]]] = [("bm25", "bm25", BM25Retriever)]
    systems += [(f"{m} (zero-shot)", f"{_folder_name(m)}/zero-shot", lambda m=m: _dense(m)) for m in models]
    if finetune:
        systems.append((f"{finetune} (LoRA+InfoNCE)", f"{_folder_name(finetune)}/lora-infonce", fine_tuned))
    rows: list[dict[str, object]] = []
    for name, folder, make in systems:
        start = time.perf_counter()
        retriever = make()
        setup = time.perf_counter() - start
        for task in tasks:
            data, rules = load(f"builtin:{task}", "test")
            begin = time.perf_counter()
            result = evaluate_retriever(retriever, data, out / task / folder, name=name, rules=rules, measures=METRICS)
            rows.append({"task": task, "system": name, **{m: result.evaluation.aggregate[m] for m in METRICS},
                         "seconds": time.perf_counter() - begin + (setup if task == tasks[0] else 0.0)})
            log.info("%s / %s: nDCG@10 %.4f", task, name, result.evaluation.aggregate["nDCG@10"])
    rows.sort(key=lambda r: tasks.index(str(r["task"])))
    table = format_table(rows, COLUMNS, percent=METRICS)
    write_json(out / "results.json", rows)
    with atomic_write(out / "results.md") as handle:
        handle.write("Built-in test splits (metrics x100; seconds include loading or training, on the first task)\n\n"
                     "```\n" + table + "\n```\n")
    print(table)
    print(f"\nruns, metrics, the trained model and this table are in {out}")
    return rows
