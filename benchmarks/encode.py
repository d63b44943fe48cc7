"""Encoding speed: llmret against sentence-transformers, and against the machine's compute limit.

For each model, the same passages (the built-in code task's test corpus), batch size and maximum
length go through llmret's DenseEncoder and through sentence-transformers' ``encode``, alternately,
best of ``--repeats``. The compute limit is 2 x non-embedding parameters x tokens over the GEMM
throughput measured here in the same run (fp32 and bf16).

    python benchmarks/encode.py [--models minilm-l6 smollm2-135m] [--passages 128] [--batch-size 32]
    python benchmarks/encode.py --smoke      # tiny random models, seconds: checks that it runs
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from llmret.data import builtin
from llmret.data.corpus import Corpus
from llmret.encoders.dense import DenseEncoder
from llmret.encoders.settings import EncoderSettings
from llmret.util.tables import format_table


def gemm_flops(dtype: torch.dtype, n: int = 1024, budget_s: float = 1.0) -> float:
    """Sustained matmul FLOP/s for n x n matrices of ``dtype``, timed for about ``budget_s``.

    Time-bounded because CPUs without native bf16 run it ~100x slower than fp32.
    """
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    count, start = 0, time.perf_counter()
    while count == 0 or time.perf_counter() - start < budget_s:
        torch.mm(a, b)
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start)


def non_embedding_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if "embed" not in name)


def sentence_transformer(encoder: DenseEncoder, max_length: int):
    """The same weights in sentence-transformers, with the same pooling and normalisation."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models

    # sentence-transformers 6 wraps text in the tokenizer's chat template when the folder has one
    # (SmolLM2-Instruct's does): ~25 more tokens per text than llmret encodes. The same files minus the
    # template keep the work equal.
    plain = Path(tempfile.mkdtemp(prefix="st-plain-"))
    for item in encoder.backbone.folder.iterdir():
        if item.name != "chat_template.jinja":
            (plain / item.name).symlink_to(item.resolve())
    module = models.Transformer(str(plain), max_seq_length=max_length)
    pooling = {"cls": "cls", "mean": "mean", "last": "lasttoken"}[encoder.info.pooling]
    modules = [module, models.Pooling(encoder.dim, pooling_mode=pooling)]
    if encoder.info.normalize:
        modules.append(models.Normalize())
    return SentenceTransformer(modules=modules, device="cpu")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench(model: str, texts: list[str], batch_size: int, max_length: int, repeats: int, flops: float) -> list[dict]:
    encoder = DenseEncoder.load(EncoderSettings(model=model, passage_max_length=max_length, batch_size=batch_size), "cpu")
    st = sentence_transformer(encoder, max_length)
    tokens = sum(len(ids) for ids in encoder.tokenize(texts, max_length))  # llmret appends EOS to decoders
    st_tokens = int(st.tokenize(texts)["attention_mask"].sum())  # ... sentence-transformers does not
    ours_fn = lambda: encoder.encode_passages(texts, batch_size=batch_size)  # noqa: E731
    st_fn = lambda: st.encode(texts, batch_size=batch_size)  # noqa: E731
    ours_fn(), st_fn()  # warm-up
    ours, theirs = float("inf"), float("inf")
    for _ in range(repeats):  # alternate, so that drift in machine load hits both alike
        ours = min(ours, timed(ours_fn))
        theirs = min(theirs, timed(st_fn))
    per_token = 2 * non_embedding_parameters(encoder.model) / flops  # seconds per token at the compute limit
    rows = []
    for name, seconds, n in (("llmret", ours, tokens), ("sentence-transformers", theirs, st_tokens)):
        rows.append({"model": model, "encoder": name, "passages/s": len(texts) / seconds, "tokens/s": n / seconds,
                     "x of ST": theirs / seconds, "% of fp32 limit": 100 * per_token * n / seconds})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["minilm-l6", "smollm2-135m"])
    parser.add_argument("--passages", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny random models and texts (seconds)")
    args = parser.parse_args()

    if args.smoke:
        from smoke import texts as smoke_texts
        from smoke import tiny_model

        args.models, args.batch_size, args.max_length, args.repeats = [tiny_model("bert"), tiny_model("llama")], 8, 32, 1
        texts = smoke_texts(16)
    else:
        corpus = Corpus.from_beir(builtin.task_folder("code", "test") / "corpus.jsonl")
        texts = [doc.full_text() for _, doc in zip(range(args.passages), corpus)]
    budget = 0.05 if args.smoke else 1.0
    fp32, bf16 = gemm_flops(torch.float32, budget_s=budget), gemm_flops(torch.bfloat16, budget_s=budget)
    print(f"GEMM throughput on this machine ({torch.get_num_threads()} threads): "
          f"fp32 {fp32 / 1e9:.1f} GFLOP/s, bf16 {bf16 / 1e9:.1f} GFLOP/s")
    rows = []
    for model in args.models:
        rows += bench(model, texts, args.batch_size, args.max_length, args.repeats, fp32)
    columns = ["model", "encoder", "passages/s", "tokens/s", "x of ST", "% of fp32 limit"]
    print(f"\n{len(texts)} passages, batch {args.batch_size}, max length {args.max_length}")
    print(format_table(rows, columns))
    for model in args.models:
        ours = next(r for r in rows if r["model"] == model and r["encoder"] == "llmret")
        print(f"{model}: llmret / sentence-transformers speed ratio = {ours['x of ST']:.2f}")


if __name__ == "__main__":
    main()
