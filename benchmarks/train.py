"""Training speed: llmret's LoRA + InfoNCE step against sentence-transformers' on the same work.

With ``--grad-cache CHUNK`` both sides run GradCache: llmret's cached step against ST's
CachedMultipleNegativesRankingLoss with the same mini-batch size.

Both sides train ``smollm2-135m`` with the same LoRA (rank, alpha, layers), batch of queries, group of
passages (positive + hard negatives), lengths and temperature (ST's MultipleNegativesRankingLoss with
scale = 1 / temperature is InfoNCE with in-batch and hard negatives). The sentence-transformers side
runs its model, tokenizer and loss directly, step by step, which is what its trainer does per step.
Model FLOPs utilisation = 6 x trainable-path FLOPs is not the right count for LoRA, so the figure
printed is the usual 2 x non-embedding parameters x tokens for the forward plus the backward through
the adapted layers, over the GEMM throughput measured in this run.

    python benchmarks/train.py [--steps 3] [--batch-size 8] [--group-size 2] [--lora-layers 8] [--query-max-length 128]
    python benchmarks/train.py --grad-cache 4 --batch-size 32
    python benchmarks/train.py --smoke       # a tiny random model, seconds: checks that it runs
"""

from __future__ import annotations

import argparse
import time

import torch
from encode import gemm_flops, non_embedding_parameters, sentence_transformer

from llmret.config import EncoderSettings
from llmret.data import builtin
from llmret.data.corpus import Corpus
from llmret.data.sampling import sample_group
from llmret.data.training import read_training
from llmret.report import format_table
from llmret.steps import Criterion, cached_step, plain_step
from llmret.train import TrainSettings, _wrap_lora, make_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=2)
    parser.add_argument("--lora-layers", type=int, default=8)
    parser.add_argument("--query-max-length", type=int, default=128)  # sentence-transformers has one max length
    parser.add_argument("--passage-max-length", type=int, default=128)
    parser.add_argument("--grad-cache", type=int, metavar="CHUNK", help="GradCache on both sides, chunks of CHUNK")
    parser.add_argument("--smoke", action="store_true", help="a tiny random model and texts (seconds)")
    args = parser.parse_args()

    from llmret.encoders.dense import DenseEncoder
    from llmret.losses import InfoNCELoss, ListwiseKDLoss, Objective

    if args.smoke:
        from smoke import texts, tiny_model

        from llmret.data.training import Passage, TrainExample

        args.model, args.steps, args.batch_size, args.lora_layers = tiny_model("llama"), 1, 4, 1
        args.query_max_length = args.passage_max_length = 24
        docs = texts(3 * (args.steps + 1) * args.batch_size, seed=1)
        examples = [TrainExample(f"q{i}", " ".join(d.split()[:3]), [Passage(f"d{i}", d)],
                                 [Passage(f"d{i + 1}", docs[(i + 1) % len(docs)])]) for i, d in enumerate(docs)]
    else:
        folder = builtin.task_folder("code", "train")
        examples = read_training(folder / "train.jsonl", Corpus.from_beir(folder / "corpus.jsonl"))
    enc_settings = EncoderSettings(model=args.model, query_max_length=args.query_max_length,
                                   passage_max_length=args.passage_max_length)
    settings = TrainSettings(encoder=enc_settings, batch_size=args.batch_size, group_size=args.group_size,
                             lora_layers=args.lora_layers, temperature=0.02)  # the dense default, stated
    flops = gemm_flops(torch.float32, budget_s=0.05 if args.smoke else 1.0)
    print(f"GEMM fp32: {flops / 1e9:.1f} GFLOP/s")

    # ---- llmret
    encoder = DenseEncoder.load(enc_settings, "cpu")
    total_layers = int(encoder.model.config.num_hidden_layers)
    params = non_embedding_parameters(encoder.model)
    encoder.model = _wrap_lora(encoder.model, settings)
    encoder.model.train()
    criterion = Criterion(Objective("cl", InfoNCELoss(settings.temperature), ListwiseKDLoss()))
    optimizer = torch.optim.AdamW([p for p in encoder.model.parameters() if p.requires_grad], lr=1e-4)
    batches = [list(range(i * args.batch_size, (i + 1) * args.batch_size)) for i in range(args.steps + 1)]
    ours, ours_tokens = [], 0
    for step, idx in enumerate(batches):
        start = time.perf_counter()
        batch = make_batch(encoder, examples, idx, 0, settings)
        if args.grad_cache:
            cached_step(encoder, batch, criterion, step, args.grad_cache, lambda loss: loss.backward())
        else:
            plain_step(encoder, batch, criterion, step, args.batch_size, lambda loss: loss.backward())
        optimizer.step()
        optimizer.zero_grad()
        if step:  # the first step warms up
            ours.append(time.perf_counter() - start)
            ours_tokens += batch.tokens

    # ---- sentence-transformers, same weights, same LoRA, same texts
    from sentence_transformers.sentence_transformer.losses import (CachedMultipleNegativesRankingLoss,
                                                                   MultipleNegativesRankingLoss)

    base = DenseEncoder.load(enc_settings, "cpu")
    st = sentence_transformer(base, args.passage_max_length)
    st[0].auto_model = _wrap_lora(st[0].auto_model, settings)
    st.train()
    mnrl = (CachedMultipleNegativesRankingLoss(st, scale=1 / settings.temperature, mini_batch_size=args.grad_cache)
            if args.grad_cache else MultipleNegativesRankingLoss(st, scale=1 / settings.temperature))
    st_opt = torch.optim.AdamW([p for p in st.parameters() if p.requires_grad], lr=1e-4)
    theirs, st_tokens = [], 0
    for step, idx in enumerate(batches):
        start = time.perf_counter()
        groups = [sample_group(examples, i, 0, settings.seed, args.group_size) for i in idx]
        columns = [[examples[i].query for i in idx]] + [[g[k].full_text() for g in groups] for k in range(args.group_size)]
        st[0].max_seq_length = args.passage_max_length
        features = [st.tokenize(col) for col in columns]
        loss = mnrl(features, None)
        loss.backward()
        st_opt.step()
        st_opt.zero_grad()
        if step:
            theirs.append(time.perf_counter() - start)
            st_tokens += sum(int(f["attention_mask"].sum()) for f in features)

    backward_share = 2 * args.lora_layers / total_layers  # activation gradients through the adapted layers only
    rows = []
    for name, times, tokens in (("llmret", ours, ours_tokens), ("sentence-transformers", theirs, st_tokens)):
        seconds = sum(times)
        model_flops = 2 * params * tokens * (1 + backward_share)
        rows.append({"trainer": name, "s/step": seconds / len(times), "tokens/s": tokens / seconds,
                     "MFU %": 100 * model_flops / seconds / flops, "x of ST": sum(theirs) / seconds * tokens / st_tokens})
    print(f"\n{args.model}, LoRA on top {args.lora_layers}/{total_layers} layers, batch {args.batch_size} x group "
          f"{args.group_size}, lengths {args.query_max_length}/{args.passage_max_length}, {args.steps} timed steps")
    print(format_table(rows, ["trainer", "s/step", "tokens/s", "MFU %", "x of ST"]))


if __name__ == "__main__":
    main()
