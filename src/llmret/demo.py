"""The main job: BM25, a zero-shot retriever, and an LLM fine-tuned with LoRA as a dense and as a sparse retriever.

Runs on a laptop CPU within ten minutes and 4 GB: the zoo models install and convert on first use,
the built-in dataset builds from this Python's standard library, ``smollm2-135m`` trains briefly on
the built-in code task's train split, once dense and once sparse on the same batches, and every
system is evaluated on each task's test split. Each system writes its run and metrics under the
output folder; the table goes to ``results.md`` and ``results.json``. Training checkpoints, so an interrupted demo resumes where it stopped.

The sizes here are small for a CPU; the same settings scale to real runs through ``llmret train``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llmret.config import EncoderSettings
from llmret.data import builtin
from llmret.fileio import atomic_write, write_json
from llmret.pipeline import evaluate_retriever
from llmret.registry import load
from llmret.report import format_table
from llmret.retrievers.base import Retriever
from llmret.retrievers.bm25 import BM25Retriever
from llmret.retrievers.sparse import SparseRetriever
from llmret.systems import make_retriever
from llmret.train import TrainSettings, train

log = logging.getLogger(__name__)

COLUMNS = ["task", "system", "nDCG@10", "RR@10", "R@100", "terms/q", "terms/p", "seconds"]
METRICS = ["nDCG@10", "RR@10", "R@100"]
# CPU-sized lengths, the same for every neural system so that the comparison is fair. Training reads
# passages at half the evaluation length: on the built-in tasks their first 32 tokens (a signature, a
# title, an opening sentence) carry most of the match, and halving them nearly halves a step.
QUERY_MAX_LENGTH, PASSAGE_MAX_LENGTH = 32, 64
TRAIN_PASSAGE_LENGTH = 32
FINETUNE_AS = ("dense", "sparse")
# The sparse run: Lion-SP's head (recipe lion-sparse: logits scaled by hidden_size ** -0.25, FLOPS
# 0.05 / 0.04 warmed up over a third of the steps, BOS kept), sparse from its first step by keeping
# only each text's own tokens (no expansion) and the special tokens' dimensions zeroed. Without them
# a decoder's max-pooled logits are positive for nearly its whole vocabulary and a few dozen steps
# cannot sparsify them (README: "Sparse against dense, one budget").
SPARSE_ENCODER = {"input_terms_only": True, "zero_special_terms": True}


def demo_training(model: str, out: Path, steps: int, retriever: str = "dense") -> TrainSettings:
    """A short LoRA + InfoNCE run on the built-in code task: the paper's recipe at a CPU's batch and lengths.

    Dense and sparse runs see the same batches (same seed, batch, negatives and steps). LoRA goes on
    every layer: adapting only the top layers is cheaper per step but, in this budget, barely moves a
    decoder's last-token vector. The learning rate is above the paper's 3e-4 and batches are small
    because the run is a few dozen steps, not thousands: more, smaller steps learn more here. No LoRA
    dropout: drawing its masks took about a tenth of a CPU step, and a run this short does not overfit.
    """
    common: dict[str, Any] = {
        "train_data": "builtin:code", "output_dir": str(out), "batch_size": 8, "group_size": 2, "max_steps": steps,
        "learning_rate": 1e-3, "warmup_ratio": 0.1, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0,
        "save_steps": 5, "logging_steps": 5}
    encoder = {"model": model, "query_max_length": QUERY_MAX_LENGTH, "passage_max_length": TRAIN_PASSAGE_LENGTH}
    if retriever == "dense":
        return TrainSettings.from_dict({**common, "temperature": 0.02, "encoder": encoder})
    return TrainSettings.from_dict({"recipe": "lion-sparse", **common, "encoder": {**encoder, **SPARSE_ENCODER}})


def _encoder(retriever: str, model: str) -> Retriever:
    settings = EncoderSettings(model=model, query_max_length=QUERY_MAX_LENGTH, passage_max_length=PASSAGE_MAX_LENGTH,
                               batch_size=16)
    return make_retriever(retriever, settings, progress=False)


def _folder_name(model: str) -> str:
    """A model's folder under the output: a zoo name as it is, a local folder by its name, a hub id with
    its slash replaced (never an absolute path, which would put results inside the model's folder)."""
    return Path(model).name if Path(model).expanduser().exists() else model.replace("/", "--")


def run_demo(out: Path, models: list[str], tasks: list[str], finetune: str | None = "smollm2-135m",
             train_steps: int = 20, finetune_as: Sequence[str] = FINETUNE_AS) -> list[dict[str, object]]:
    """Evaluate BM25, each model zero-shot and ``finetune`` after training it as each of ``finetune_as``
    (dense, sparse) on the same budget; write and print the table."""
    unknown = set(finetune_as) - set(FINETUNE_AS)
    if unknown:
        raise ValueError(f"finetune_as takes {', '.join(FINETUNE_AS)}, not {', '.join(sorted(unknown))}")
    builtin.builtin_root()

    def fine_tuned(retriever: str) -> Retriever:
        settings = demo_training(str(finetune), out / f"train-{retriever}", train_steps, retriever)
        return _encoder(retriever, str(train(settings, resume=True)))

    # (table name, output folder, how to build it): built one at a time, so one model is in memory at once.
    systems: list[tuple[str, str, Callable[[], Retriever]]] = [("bm25", "bm25", BM25Retriever)]
    systems += [(f"{m} (zero-shot)", f"{_folder_name(m)}/zero-shot", lambda m=m: _encoder("dense", m)) for m in models]
    if finetune:
        objective = {"dense": "LoRA+InfoNCE", "sparse": "sparse LoRA+InfoNCE+FLOPS"}
        systems += [(f"{finetune} ({objective[r]})", f"{_folder_name(finetune)}/lora-{r}", lambda r=r: fine_tuned(r))
                    for r in finetune_as]
    rows: list[dict[str, object]] = []
    for name, folder, make in systems:
        start = time.perf_counter()
        retriever = make()
        setup = time.perf_counter() - start
        for task in tasks:
            data, rules = load(f"builtin:{task}", "test")
            begin = time.perf_counter()
            result = evaluate_retriever(retriever, data, out / task / folder, name=name, rules=rules, measures=METRICS)
            row: dict[str, object] = {"task": task, "system": name,
                                      **{m: result.evaluation.aggregate[m] for m in METRICS}}
            if isinstance(retriever, SparseRetriever) and (report := retriever.sparsity()) is not None:
                row.update({"terms/q": report.query_nonzero, "terms/p": report.passage_nonzero})
            row["seconds"] = time.perf_counter() - begin + (setup if task == tasks[0] else 0.0)
            rows.append(row)
            log.info("%s / %s: nDCG@10 %.4f", task, name, result.evaluation.aggregate["nDCG@10"])
    rows.sort(key=lambda r: tasks.index(str(r["task"])))
    table = format_table(rows, COLUMNS, percent=METRICS)
    write_json(out / "results.json", rows)
    with atomic_write(out / "results.md") as handle:
        handle.write("Built-in test splits (metrics x100; terms/q, terms/p: a sparse row's average non-zero terms per "
                     "query and per passage; seconds include loading or training, on the first task)\n\n"
                     "```\n" + table + "\n```\n")
    print(table)
    print(f"\nruns, metrics, the trained models and this table are in {out}")
    return rows
