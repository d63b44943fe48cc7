"""The own-terms LM head: a sparse model kept on each text's own tokens (``input_terms_only``, as the demo's
sparse row and PromptReps) projects only the batch's distinct tokens' rows of the head, not the vocabulary.

For each model, the same passages (the built-in code task's test corpus) are encoded, and one training
step's forward and backward (the weights' squared sum, a loss's shape) is run, three ways, alternately,
best of ``--repeats``: llmret's own-terms head (the default), llmret's whole-vocabulary head
(``full_vocab_head``, today's path before the own-terms head) and sentence-transformers' SparseEncoder over
the same model (its torch backend, the fastest installed: its ONNX and OpenVINO backends need optimum;
it projects the whole vocabulary and cannot keep only the text's terms, so its vectors have more terms:
the work it can do on this model). The own-terms vectors are checked against the whole-vocabulary ones
(cosine, and the largest difference).

    python benchmarks/sparse_head.py [--models smollm2-135m gemma3-270m] [--passages 64] [--batch-size 16]
    python benchmarks/sparse_head.py --smoke      # a tiny random model, seconds: checks that it runs
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from llmret.encoders.settings import EncoderSettings
from llmret.encoders.sparse import SparseEncoder
from llmret.util.tables import format_table


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def sentence_transformers_sparse(encoder: SparseEncoder, max_length: int):
    """sentence-transformers' SparseEncoder on the same weights: the LM head's logits, log(1 + ReLU), max."""
    from sentence_transformers import SparseEncoder as STSparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    plain = Path(tempfile.mkdtemp(prefix="st-sparse-"))  # without a chat template, which ST would wrap texts in
    for item in encoder.backbone.folder.iterdir():
        if item.name != "chat_template.jinja":
            (plain / item.name).symlink_to(item.resolve())
    causal = encoder.info.kind == "decoder"
    module = Transformer(str(plain), max_seq_length=max_length,
                         **({"transformer_task": "text-generation", "module_output_name": "token_embeddings",
                             "modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
                             "processing_kwargs": {"text": {"logits_to_keep": 0}}} if causal
                            else {"transformer_task": "fill-mask"}))
    return STSparseEncoder(modules=[module, SpladePooling("max")], device="cpu")


def bench(model: str, texts: list[str], batch_size: int, length: int, repeats: int) -> list[dict]:
    settings = dict(model=model, passage_max_length=length, batch_size=batch_size, input_terms_only=True,
                    zero_special_terms=True, bidirectional=False)
    own = SparseEncoder.load(EncoderSettings(**settings), "cpu")
    whole = SparseEncoder.load(EncoderSettings(**settings, full_vocab_head=True), "cpu")
    a, b = own.encode_passages(texts).toarray(), whole.encode_passages(texts).toarray()
    cosine = float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())
    batch = own.collate(own.tokenize(texts[:batch_size], length))

    def step(encoder: SparseEncoder) -> None:
        encoder.model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            encoder.forward(**batch).pow(2).sum().backward()

    rows = [{"model": model, "head": "own terms (default)", "encode s": best_of(lambda: own.encode_passages(texts), repeats),
             "step s": best_of(lambda: step(own), repeats), "min cosine": cosine, "max |diff|": float(np.abs(a - b).max())},
            {"model": model, "head": "whole vocabulary", "encode s": best_of(lambda: whole.encode_passages(texts), repeats),
             "step s": best_of(lambda: step(whole), repeats)}]
    st = sentence_transformers_sparse(whole, length)
    rows.append({"model": model, "head": "sentence-transformers", "step s": None,
                 "encode s": best_of(lambda: st.encode_document(texts, batch_size=batch_size), repeats)})
    for row in rows:
        row["vocabulary"] = own.vocab_size
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--passages", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="a tiny random model and texts (seconds)")
    args = parser.parse_args()
    if args.smoke:
        from smoke import texts as smoke_texts
        from smoke import tiny_model

        args.models, args.batch_size, args.length, args.repeats = [tiny_model("llama")], 8, 32, 1
        texts = smoke_texts(16)
    else:
        from llmret.data import builtin
        from llmret.data.corpus import Corpus

        corpus = Corpus.from_beir(builtin.task_folder("code", "test") / "corpus.jsonl")
        texts = [doc.full_text() for _, doc in zip(range(args.passages), corpus)]
    rows = [row for model in args.models for row in bench(model, texts, args.batch_size, args.length, args.repeats)]
    print(f"{len(texts)} passages, batch {args.batch_size}, length {args.length}, {torch.get_num_threads()} threads")
    print(format_table(rows, ["model", "vocabulary", "head", "encode s", "step s", "min cosine", "max |diff|"]))
    for model in args.models:
        own, whole, st = (next(r for r in rows if r["model"] == model and r["head"] == h)
                          for h in ("own terms (default)", "whole vocabulary", "sentence-transformers"))
        print(f"{model}: own-terms head speed-up, encoding {whole['encode s'] / own['encode s']:.2f}x, training step "
              f"{whole['step s'] / own['step s']:.2f}x; against sentence-transformers' encoding "
              f"{st['encode s'] / own['encode s']:.2f}x; vectors' min cosine {own['min cosine']:.6f}")


if __name__ == "__main__":
    main()
