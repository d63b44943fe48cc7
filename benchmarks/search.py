"""Search at scale: exact and approximate dense search on a million vectors, and Seismic against the exact
inverted index on a million sparse vectors, through llmret's own index classes.

Dense. ``--docs`` (default 1M) unit vectors of ``--dim`` (default 384, MiniLM's) drawn from a mixture of
``--clusters`` Gaussian topics, so that approximate indexes meet the clustered data they are built for
(uniform random vectors have no neighbourhoods and would make every ANN index look bad); the queries are
fresh draws from the same topics. Rows: exact search (``Flat``) one query at a time and as one batch,
HNSW32 at two ``efSearch`` values and IVF-PQ at two ``nprobe`` values, each with queries per second and
Recall@10 against the exact top 10. Beside them, the bound a brute-force pass cannot beat one query at a
time: every vector read once per query at the memory bandwidth measured in the same run.

Sparse. ``--sparse-docs`` (default 1M) vectors made from ``splade-tiny`` encodings of built-in passages
(see ``sparse.py``), searched by the real encoded queries: brute force, the exact inverted index and
Seismic at three settings.

    python benchmarks/search.py [--docs 1000000] [--dim 384] [--queries 200] [--sparse-docs 1000000]
    python benchmarks/search.py --smoke     # small sizes, seconds: checks that it runs
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def clustered_vectors(n: int, dim: int, centres: np.ndarray, seed: int, spread: float = 1.0,
                      chunk: int = 100_000) -> np.ndarray:
    """``n`` unit vectors, each a random topic centre plus Gaussian noise of norm about ``spread``
    (made in chunks: bounded memory). At 1.0 two texts of one topic have cosine ~0.5 and a text's
    nearest neighbours are spread over several topics, as with real embeddings; a small spread packs
    each topic so tightly that its members differ by less than any quantiser's error."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        rows = centres[rng.integers(len(centres), size=stop - start)]
        rows = rows + rng.standard_normal((stop - start, dim), dtype=np.float32) * (spread / np.sqrt(dim))
        out[start:stop] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def memory_bandwidth(threads: int, gigabytes: float = 1.0) -> float:
    """Bytes per second read by ``threads`` threads summing disjoint slices of one array (best of 3).

    numpy's reductions release the GIL, so the threads read in parallel as FAISS's threads would.
    """
    data = np.ones(int(gigabytes * 2**30 / 4), dtype=np.float32)
    parts = np.array_split(data, threads)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(3):
            start = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = min(best, time.perf_counter() - start)
    return data.nbytes / best


def recall_at_10(found: list[list[str]], truth: list[list[str]]) -> float:
    return float(np.mean([len(set(f[:10]) & set(t[:10])) / max(1, len(t[:10])) for f, t in zip(found, truth)]))


def timed_search(index, queries: np.ndarray, one_at_a_time: bool) -> tuple[float, list[list[str]]]:  # noqa: ANN001
    """Queries per second and the top-10 ids: each query alone, or all in one call."""
    start = time.perf_counter()
    if one_at_a_time:
        found = [index.search(queries[i:i + 1], 10)[1][0] for i in range(len(queries))]
    else:
        found = index.search(queries, 10)[1]
    return len(queries) / (time.perf_counter() - start), found


def dense_rows(docs: int, dim: int, n_queries: int, clusters: int, threads: int,
               nlist: int, pq: int) -> list[dict[str, object]]:
    import faiss

    from llmret.index.dense import DenseIndex

    faiss.omp_set_num_threads(threads)
    centres = np.random.default_rng(0).standard_normal((clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = clustered_vectors(docs, dim, centres, seed=1)
    queries = clustered_vectors(n_queries, dim, centres, seed=2)
    ids = [str(i) for i in range(docs)]
    bandwidth = memory_bandwidth(threads)
    rows: list[dict[str, object]] = [{"search": f"bound: all vectors read once a query at {bandwidth / 1e9:.1f} GB/s",
                                      "QPS": bandwidth / vectors.nbytes, "Recall@10": 1.0, "build s": 0.0}]
    exact = DenseIndex(dim)
    exact.add(ids, vectors)
    qps_one, truth = timed_search(exact, queries, one_at_a_time=True)
    rows.append({"search": "exact (Flat), one query at a time", "QPS": qps_one, "Recall@10": 1.0, "build s": 0.0})
    qps_batch, _ = timed_search(exact, queries, one_at_a_time=False)
    rows.append({"search": f"exact (Flat), {n_queries} queries in one call", "QPS": qps_batch, "Recall@10": 1.0,
                 "build s": 0.0})
    del exact
    for factory, knob, values in (("HNSW32", "efSearch", (32, 128)), (f"IVF{nlist},PQ{pq}", "nprobe", (8, 64))):
        start = time.perf_counter()
        index = DenseIndex(dim, factory)
        if not index.index.is_trained:  # train on a sample: k-means over every vector would dominate the build
            index.index.train(vectors[np.random.default_rng(3).choice(docs, size=min(docs, 64 * nlist), replace=False)])
        index.add(ids, vectors)
        build = time.perf_counter() - start
        for value in values:
            index.set_parameter(knob, value)
            qps, found = timed_search(index, queries, one_at_a_time=True)
            rows.append({"search": f"{factory} {knob}={value}, one query at a time", "QPS": qps,
                         "Recall@10": recall_at_10(found, truth), "build s": build})
        del index
    for row in rows:
        row["x bound"] = float(row["QPS"]) / float(rows[0]["QPS"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=2000, help="topics the dense vectors are drawn from")
    parser.add_argument("--nlist", type=int, default=1024, help="IVF lists (about the square root of --docs)")
    parser.add_argument("--pq", type=int, default=48, help="PQ sub-quantizers (8 bits each)")
    parser.add_argument("--sparse-docs", type=int, default=1_000_000, help="0: the dense part only")
    parser.add_argument("--passages", type=int, default=1000, help="real passages whose statistics are matched")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="small sizes and a tiny random model (seconds)")
    args = parser.parse_args()
    if args.smoke:
        args.docs, args.dim, args.queries, args.clusters, args.nlist, args.pq = 3000, 32, 20, 20, 16, 8
        args.sparse_docs, args.passages = 300, 40

    from sparse import real_vectors, search_rows, synthetic_corpus

    from llmret.util.tables import format_table

    print(f"dense: {args.docs} vectors of dimension {args.dim} from {args.clusters} topics, {args.queries} queries, "
          f"{args.threads} threads")
    print(format_table(dense_rows(args.docs, args.dim, args.queries, args.clusters, args.threads, args.nlist, args.pq),
                       ["search", "QPS", "Recall@10", "x bound", "build s"], percent=["Recall@10"]))
    if args.sparse_docs <= 0:
        return
    real_docs, queries = real_vectors(args.passages, args.smoke)
    docs = synthetic_corpus(real_docs, args.sparse_docs)
    print(f"\nsparse: {docs.shape[0]} vectors over {docs.shape[1]} terms, {docs.nnz / docs.shape[0]:.1f} non-zero a "
          f"document; {queries.shape[0]} real queries, {queries.nnz / queries.shape[0]:.1f} non-zero each")
    print(format_table(search_rows(docs, queries), ["search", "QPS", "Recall@10", "x brute force"], percent=["Recall@10"]))


if __name__ == "__main__":
    main()
