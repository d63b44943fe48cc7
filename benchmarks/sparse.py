"""Sparse retrieval at scale: Seismic against exact search, and the memory of sparse against dense encoding.

Search. A corpus of ``--docs`` (default 100k) sparse vectors is drawn to match real learned-sparse
vectors: ``--model`` (default ``splade-tiny``; or a trained sparse decoder's folder, whose saved
settings such as top-k or input terms only apply) encodes passages and queries of the built-in code
task, and each synthetic
document mixes two real ones (see :func:`synthetic_corpus`), keeping their non-zero counts, term
frequencies, weights and topical co-occurrence. The real encoded queries search it. Rows: the brute
force (every document scored: the document matrix times the query vector), the exact inverted index
(only the query terms' posting lists) and Seismic at a few settings, each with queries per second
(one query at a time, one thread) and Recall@10 against the exact top 10.

Memory. A random-initialised Llama with a ``--vocab`` (default 151,936, Qwen's) vocabulary encodes the
same passages densely, sparsely with llmret's chunked head, and sparsely the textbook way (the full
[batch, length, vocab] logits); each in a fresh process, peak resident memory above the loaded model.

    python benchmarks/sparse.py [--docs 100000] [--vocab 151936] [--batch-size 32] [--length 256]
    python benchmarks/sparse.py --model runs/sparse/final --encode-length 64 --skip-memory
    python benchmarks/sparse.py --smoke      # a tiny random model, seconds: checks that it runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import scipy.sparse as sp


def real_vectors(passages: int, smoke: bool = False, model: str = "splade-tiny",
                 length: int = 256) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """``model``'s encodings of built-in passages and queries (the statistics to match)."""
    from llmret.encoders.settings import EncoderSettings
    from llmret.encoders.sparse import SparseEncoder

    if smoke:
        from smoke import texts as smoke_texts
        from smoke import tiny_model

        encoder = SparseEncoder.load(EncoderSettings(model=tiny_model("bert"), passage_max_length=32), "cpu")
        return encoder.encode_passages(smoke_texts(passages)), encoder.encode_queries(smoke_texts(20, seed=1, words=6))
    from llmret.data import builtin
    from llmret.evaluation.conventions import load

    builtin.builtin_root()
    data, _ = load("builtin:code", "test")
    encoder = SparseEncoder.load(EncoderSettings(model=model, passage_max_length=length, batch_size=32), "cpu")
    texts = [doc.full_text() for _, doc in zip(range(passages), data.corpus)]
    return encoder.encode_passages(texts), encoder.encode_queries(list(data.queries.values()))


def synthetic_corpus(real: sp.csr_matrix, n: int, mix: float = 0.3, seed: int = 0) -> sp.csr_matrix:
    """``n`` rows that look like ``real`` ones: each starts from a random real row, swaps a ``mix`` share
    of its terms for those of another real row, and jitters the weights.

    Terms drawn independently would lose what makes sparse search fast or slow in practice: terms
    that co-occur (topics), which clustered indexes such as Seismic exploit. Mixing real rows keeps
    topical structure, the non-zero counts, the document frequencies and the weight distribution.
    """
    rng = np.random.default_rng(seed)
    rows, cols, vals = [], [], []
    first, second = rng.integers(real.shape[0], size=n), rng.integers(real.shape[0], size=n)
    for i in range(n):
        a, b = real[first[i]], real[second[i]]
        keep = rng.random(a.nnz) >= mix
        take = rng.random(b.nnz) < mix * a.nnz / max(1, b.nnz)
        terms = np.concatenate([a.indices[keep], b.indices[take]])
        weights = np.concatenate([a.data[keep], b.data[take]]) * rng.lognormal(0.0, 0.3, size=len(terms))
        rows.append(np.full(len(terms), i))
        cols.append(terms)
        vals.append(weights.astype(np.float32))
    matrix = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, real.shape[1]))
    matrix.sum_duplicates()
    return matrix


def brute_force(docs: sp.csr_matrix, queries: sp.csr_matrix, k: int) -> list[np.ndarray]:
    """Every document scored for every query (a sparse matrix times the query vector), one query at a time."""
    top = []
    for row in range(queries.shape[0]):
        scores = docs @ queries[row].toarray().ravel()
        top.append(np.argpartition(-scores, k)[:k])
    return top


def search_rows(docs: sp.csr_matrix, queries: sp.csr_matrix) -> list[dict[str, object]]:
    """QPS (one query at a time, one thread) and Recall@10 against the exact top 10."""
    from llmret.index.sparse import SeismicSettings, SeismicSparseIndex, SparseIndex

    ids = [str(i) for i in range(docs.shape[0])]
    n = queries.shape[0]
    start = time.perf_counter()
    brute_force(docs, queries, 10)
    brute_s = time.perf_counter() - start
    exact = SparseIndex(ids, docs)
    start = time.perf_counter()
    truth = [exact.search(queries[i], k=10)[1][0] for i in range(n)]
    exact_s = time.perf_counter() - start
    rows = [{"search": "brute force (all documents scored)", "QPS": n / brute_s, "Recall@10": 1.0, "x brute force": 1.0},
            {"search": "exact inverted index", "QPS": n / exact_s, "Recall@10": 1.0, "x brute force": brute_s / exact_s}]
    for n_postings, query_cut, heap_factor in ((1000, 5, 0.7), (1000, 8, 0.8), (2000, 10, 0.9)):
        index = SeismicSparseIndex(ids, docs, SeismicSettings(n_postings=n_postings, query_cut=query_cut,
                                                              heap_factor=heap_factor, threads=1))
        start = time.perf_counter()
        _, found = index.search(queries, k=10)
        took = time.perf_counter() - start
        recall = float(np.mean([len(set(f) & set(t)) / max(1, len(t)) for f, t in zip(found, truth)]))
        rows.append({"search": f"seismic n_postings={n_postings} query_cut={query_cut} heap_factor={heap_factor}",
                     "QPS": n / took, "Recall@10": recall, "x brute force": brute_s / took})
    return rows


# ---- memory, one mode per process ---------------------------------------------------------------
def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure_memory(mode: str, vocab: int, batch_size: int, length: int) -> dict[str, float]:
    """Peak RSS above the loaded model while encoding ``2 x batch_size`` passages of ``length`` tokens."""
    import tempfile

    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from llmret.encoders.dense import DenseEncoder
    from llmret.encoders.settings import EncoderSettings
    from llmret.encoders.sparse import SparseEncoder

    torch.set_num_threads(2)
    folder = tempfile.mkdtemp(prefix="vocab-")
    words = [f"w{i}" for i in range(vocab - 3)]
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(["<pad>", "</s>", "<unk>", *words])}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>").save_pretrained(folder)
    config = LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=1024, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=length + 8,
                         eos_token_id=1, pad_token_id=0, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(folder)
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=length)) for _ in range(2 * batch_size)]
    settings = EncoderSettings(model=folder, batch_size=batch_size, passage_max_length=length)
    encoder = (DenseEncoder if mode == "dense" else SparseEncoder).load(settings, "cpu")
    if mode == "sparse-full-logits":
        encoder.vocab_chunk = vocab  # one chunk: the whole [batch, length, vocab] logits at once
    encoder.encode_passages(texts[:2])
    base, peak, done = _rss(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    encoder.encode_passages(texts)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    return {"peak_mb": (max(peak[0], _rss()) - base) / 2**20, "seconds": seconds}


def memory_rows(vocab: int, batch_size: int, length: int) -> list[dict[str, object]]:
    rows = []
    for mode in ("dense", "sparse", "sparse-full-logits"):
        out = subprocess.run([sys.executable, __file__, "--memory-mode", mode, "--vocab", str(vocab),
                              "--batch-size", str(batch_size), "--length", str(length)],
                             capture_output=True, text=True, check=True)
        rows.append({"encoding": mode, **json.loads(out.stdout.strip().splitlines()[-1])})
    dense = rows[0]["peak_mb"]
    for row in rows:
        row["x dense"] = row["peak_mb"] / dense
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--passages", type=int, default=1000, help="real passages whose statistics are matched")
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--model", default="splade-tiny", help="the sparse model whose real vectors are matched")
    parser.add_argument("--encode-length", type=int, default=256, help="passage length when encoding the real ones")
    parser.add_argument("--skip-memory", action="store_true", help="only the search rows")
    parser.add_argument("--memory-mode", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true", help="a tiny random model and small sizes (seconds)")
    args = parser.parse_args()
    if args.smoke and not args.memory_mode:
        args.docs, args.passages, args.vocab, args.batch_size, args.length = 300, 40, 2000, 2, 16
    if args.memory_mode:
        print(json.dumps(measure_memory(args.memory_mode, args.vocab, args.batch_size, args.length)))
        return

    from llmret.util.tables import format_table

    real_docs, queries = real_vectors(args.passages, args.smoke, args.model, args.encode_length)
    docs = synthetic_corpus(real_docs, args.docs)
    print(f"corpus: {docs.shape[0]} vectors over {docs.shape[1]} terms, {docs.nnz / docs.shape[0]:.1f} non-zero per "
          f"document (real: {real_docs.nnz / real_docs.shape[0]:.1f}); {queries.shape[0]} real queries, "
          f"{queries.nnz / queries.shape[0]:.1f} non-zero each")
    print(format_table(search_rows(docs, queries), ["search", "QPS", "Recall@10", "x brute force"], percent=["Recall@10"]))
    if args.skip_memory:
        return
    print(f"\nencoding {2 * args.batch_size} passages of {args.length} tokens, batch {args.batch_size}, "
          f"vocabulary {args.vocab}: peak memory above the loaded model")
    print(format_table(memory_rows(args.vocab, args.batch_size, args.length), ["encoding", "peak_mb", "x dense", "seconds"]))


if __name__ == "__main__":
    main()
