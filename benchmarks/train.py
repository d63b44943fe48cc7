"""Training step time and memory: llmret's LoRA + InfoNCE step against sentence-transformers', with and
without GradCache, on the same model, LoRA, batch, texts and lengths, in one run.

Four trainers, each in its own process so that its peak memory is its own:

- ``llmret``: the plain step (length-sorted chunks of the whole batch, one backward);
- ``llmret GradCache``: llmret's cached step, forwarding ``--chunk`` sequences at a time;
- ``sentence-transformers``: MultipleNegativesRankingLoss (scale = 1 / temperature is InfoNCE with
  in-batch and hard negatives), run step by step as its trainer does;
- ``sentence-transformers GradCache``: CachedMultipleNegativesRankingLoss, mini-batch ``--chunk``.

Peak memory is the process's peak resident memory above what it held once the model was loaded
(on a GPU: peak allocated GPU memory above the loaded model). Model FLOPs utilisation counts 2 x
non-embedding parameters x tokens for the forward plus the backward through the adapted layers
(and one more forward for GradCache), over the GEMM throughput measured in this run.

    python benchmarks/train.py [--steps 3] [--batch-size 32] [--group-size 2] [--chunk 4] [--lora-layers 8]
    python benchmarks/train.py --smoke       # a tiny random model, seconds: checks that it runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
from encode import gemm_flops, non_embedding_parameters, sentence_transformer

from llmret.data.sampling import sample_group
from llmret.data.training import Passage, TrainExample
from llmret.encoders.settings import EncoderSettings
from llmret.training.steps import Criterion, cached_step, plain_step
from llmret.training.train import TrainSettings, _wrap_lora, make_batch
from llmret.util.tables import format_table

TRAINERS = ("llmret", "llmret GradCache", "sentence-transformers", "sentence-transformers GradCache")


def resident_mb() -> float:
    """This process's resident memory now (Linux)."""
    with open("/proc/self/status") as handle:
        line = next(row for row in handle if row.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def examples_for(args: argparse.Namespace) -> list[TrainExample]:
    if args.smoke:
        from smoke import texts

        docs = texts(3 * (args.steps + 1) * args.batch_size, seed=1)
        return [TrainExample(f"q{i}", " ".join(d.split()[:3]), [Passage(f"d{i}", d)],
                             [Passage(f"d{i + 1}", docs[(i + 1) % len(docs)])]) for i, d in enumerate(docs)]
    from llmret.data import builtin
    from llmret.data.corpus import Corpus
    from llmret.data.training import read_training

    folder = builtin.task_folder("code", "train")
    return read_training(folder / "train.jsonl", Corpus.from_beir(folder / "corpus.jsonl"))


def run_trainer(args: argparse.Namespace) -> dict[str, float]:
    """Time ``args.steps`` steps (after one warm-up step) of one trainer; memory above the loaded model."""
    from llmret.encoders.dense import DenseEncoder
    from llmret.losses import InfoNCELoss, ListwiseKDLoss, Objective

    device = torch.device(args.device)
    examples = examples_for(args)
    enc_settings = EncoderSettings(model=args.model, query_max_length=args.query_max_length,
                                   passage_max_length=args.passage_max_length)
    settings = TrainSettings(encoder=enc_settings, batch_size=args.batch_size, group_size=args.group_size,
                             lora_layers=args.lora_layers, temperature=0.02)  # the dense default, stated
    encoder = DenseEncoder.load(enc_settings, str(device))
    batches = [list(range(i * args.batch_size, (i + 1) * args.batch_size)) for i in range(args.steps + 1)]
    cached = args.trainer.endswith("GradCache")
    if args.trainer.startswith("llmret"):
        encoder.model = _wrap_lora(encoder.model, settings, settings.seed, settings.lora_layers)
        model = encoder.model
        criterion = Criterion(Objective("cl", InfoNCELoss(settings.temperature), ListwiseKDLoss()))

        def step(index: int, idx: list[int]) -> int:
            batch = make_batch(encoder, examples, idx, 0, settings)
            if cached:
                cached_step(encoder, batch, criterion, index, args.chunk, lambda loss: loss.backward())
            else:
                plain_step(encoder, batch, criterion, index, args.batch_size, lambda loss: loss.backward())
            return batch.tokens
    else:
        from sentence_transformers.sentence_transformer.losses import (
            CachedMultipleNegativesRankingLoss,
            MultipleNegativesRankingLoss,
        )

        st = sentence_transformer(encoder, args.passage_max_length)
        st[0].auto_model = _wrap_lora(st[0].auto_model, settings, settings.seed, settings.lora_layers)
        model = st
        scale = 1 / settings.temperature
        loss_fn = (CachedMultipleNegativesRankingLoss(st, scale=scale, mini_batch_size=args.chunk) if cached
                   else MultipleNegativesRankingLoss(st, scale=scale))

        def step(index: int, idx: list[int]) -> int:
            groups = [sample_group(examples, i, 0, settings.seed, args.group_size) for i in idx]
            columns = [[examples[i].query for i in idx]] + [[g[k].full_text() for g in groups] for k in range(args.group_size)]
            features = [{k: v.to(device) if torch.is_tensor(v) else v for k, v in st.tokenize(col).items()}
                        for col in columns]
            loss_fn(features, None).backward()
            return sum(int(f["attention_mask"].sum()) for f in features)

    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    base = resident_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base_gpu = torch.cuda.memory_allocated(device)
    times, tokens = [], 0
    for index, idx in enumerate(batches):
        start = time.perf_counter()
        count = step(index, idx)
        optimizer.step()
        optimizer.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index:  # the first step warms up
            times.append(time.perf_counter() - start)
            tokens += count
    result = {"seconds": sum(times), "steps": len(times), "tokens": tokens, "base_mb": base,
              "params": non_embedding_parameters(encoder.model), "layers": int(encoder.model.config.num_hidden_layers)}
    if device.type == "cuda":
        result["gpu_peak_mb"] = (torch.cuda.max_memory_allocated(device) - base_gpu) / 2**20
    return result


def launch(trainer: str, argv: list[str]) -> dict[str, float]:
    """Run one trainer in a child process; its peak resident memory comes from the kernel (wait4)."""
    child = subprocess.Popen([sys.executable, __file__, *argv, "--trainer", trainer], stdout=subprocess.PIPE,
                             text=True)
    out = child.stdout.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{trainer}: exited with {child.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_mb"] = usage.ru_maxrss / 1024 - result["base_mb"]  # ru_maxrss is in KiB on Linux
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--group-size", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=4, help="GradCache: sequences forwarded at once")
    parser.add_argument("--lora-layers", type=int, default=8)
    parser.add_argument("--query-max-length", type=int, default=128)  # sentence-transformers has one max length
    parser.add_argument("--passage-max-length", type=int, default=128)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="a tiny random model and texts (seconds)")
    parser.add_argument("--trainer", choices=TRAINERS, help=argparse.SUPPRESS)  # one child's work
    args = parser.parse_args()
    if args.smoke and args.trainer is None:
        from smoke import tiny_model

        args.model, args.steps, args.batch_size, args.chunk, args.lora_layers = tiny_model("llama"), 1, 4, 2, 1
        args.query_max_length = args.passage_max_length = 24
    if args.trainer:
        print(json.dumps(run_trainer(args)))
        return

    argv = ["--model", args.model, "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--group-size",
            str(args.group_size), "--chunk", str(args.chunk), "--lora-layers", str(args.lora_layers),
            "--query-max-length", str(args.query_max_length), "--passage-max-length", str(args.passage_max_length),
            "--device", args.device, *(["--smoke"] if args.smoke else [])]
    flops = gemm_flops(torch.float32, budget_s=0.05 if args.smoke else 1.0)
    print(f"GEMM fp32: {flops / 1e9:.1f} GFLOP/s")
    results = {trainer: launch(trainer, argv) for trainer in TRAINERS}
    rows = []
    for trainer, r in results.items():
        cached = trainer.endswith("GradCache")
        reference = results["sentence-transformers GradCache" if cached else "sentence-transformers"]
        backward_share = 2 * args.lora_layers / r["layers"]  # activation gradients through the adapted layers only
        model_flops = 2 * r["params"] * r["tokens"] * (1 + backward_share + (1 if cached else 0))
        per_token, ref_per_token = r["seconds"] / r["tokens"], reference["seconds"] / reference["tokens"]
        rows.append({"trainer": trainer, "s/step": r["seconds"] / r["steps"], "tokens/s": r["tokens"] / r["seconds"],
                     "MFU %": 100 * model_flops / r["seconds"] / flops,
                     "peak MB": r.get("gpu_peak_mb", r["peak_mb"]), "x of ST": ref_per_token / per_token})
    memory = "GPU memory allocated" if args.device.startswith("cuda") else "resident memory"
    print(f"\n{args.model} on {args.device}, LoRA on top {args.lora_layers} layers, batch {args.batch_size} x group "
          f"{args.group_size}, GradCache chunk {args.chunk}, lengths {args.query_max_length}/{args.passage_max_length}, "
          f"{args.steps} timed steps; peak MB: peak {memory} above the loaded model")
    print(format_table(rows, ["trainer", "s/step", "tokens/s", "MFU %", "peak MB", "x of ST"]))


if __name__ == "__main__":
    main()
