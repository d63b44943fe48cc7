"""Serving under bounded load: `llmret serve` on loopback, N concurrent clients for T seconds, then it stops.

A saved index (``minilm-l6`` over the built-in code task's corpus, exact FAISS) is served by
``llmret serve`` in its own process, with micro-batching on and then off (``--no-batching``), in the
same run. Each of ``--clients`` clients sends one query at a time (the task's test queries, in turn)
for ``--seconds``; every request is timed. Printed per mode: requests per second, latency p50 / p95 /
p99, the share of the service's busy time spent encoding against searching (from ``GET /indexes``),
the mean batch size, and failed requests; then the throughput ratio of micro-batching on over off.

    python benchmarks/serve.py [--clients 16] [--seconds 20]
    python benchmarks/serve.py --smoke      # a tiny random model, seconds: checks that it runs
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_index(folder: Path, smoke: bool) -> tuple[Path, list[str]]:
    """Encode a corpus and save its index; return the index folder and the queries to send."""
    from llmret.cli import main

    if smoke:
        import json

        from smoke import texts, tiny_model

        docs = texts(200)
        queries = texts(50, seed=1, words=6)
        with open(folder / "corpus.jsonl", "w") as f:
            f.writelines(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(docs))
        with open(folder / "queries.jsonl", "w") as f:
            f.writelines(json.dumps({"_id": f"q{i}", "text": t}) + "\n" for i, t in enumerate(queries))
        (folder / "qrels").mkdir()
        (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                                  "".join(f"q{i}\td{i}\t1\n" for i in range(50)))
        data, model = str(folder), tiny_model("bert")
    else:
        from llmret.data import builtin
        from llmret.evaluation.conventions import load

        builtin.builtin_root()
        data, model = "builtin:code", "minilm-l6"
        queries = list(load(data, "test")[0].queries.values())
    emb = folder / "emb"
    args = ["encode", "--retriever", "dense", "--model", model, "--what", "corpus", "--out", str(emb),
            "--passage-max-length", "128"]
    if main([*args, "--data", data]) != 0 or main(["index", "--embeddings", str(emb / "corpus"),
                                                   "--out", str(folder / "index")]) != 0:
        raise SystemExit("could not build the index")
    return folder / "index", queries


def start(index: Path, batching: bool) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "llmret.cli", "serve", str(index), "--port", str(port), "--max-wait-ms", "5"]
    server = subprocess.Popen(cmd + ([] if batching else ["--no-batching"]), stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited: {server.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not start within 120 s")


async def load(url: str, queries: list[str], clients: int, seconds: float) -> tuple[list[float], int, int]:
    """(latencies of successful requests, requests sent, failed requests) over ``seconds``."""
    import httpx

    latencies: list[float] = []
    sent = failed = 0
    stop = time.monotonic() + seconds

    async def client(i: int, http: httpx.AsyncClient) -> None:
        nonlocal sent, failed
        n = i
        while time.monotonic() < stop:
            body = {"query": queries[n % len(queries)], "k": 10}
            n += clients
            start = time.perf_counter()
            sent += 1
            try:
                r = await http.post(f"{url}/search", json=body)
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    failed += 1
            except httpx.HTTPError:
                failed += 1

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    return latencies, sent, failed


def measure(index: Path, queries: list[str], batching: bool, clients: int, seconds: float) -> dict[str, float]:
    import httpx

    server, url = start(index, batching)
    try:
        asyncio.run(load(url, queries, clients, min(2.0, seconds)))  # warm-up: first batches, allocator
        before = httpx.get(f"{url}/indexes").json()[0]["batching"]
        latencies, sent, failed = asyncio.run(load(url, queries, clients, seconds))
        after = httpx.get(f"{url}/indexes").json()[0]["batching"]
    finally:
        server.terminate()
        server.wait(30)
    ms = 1000 * np.array(latencies or [float("nan")])
    busy = after["busy_seconds"] - before["busy_seconds"]
    encode = after["timings"].get("encode", 0) - before["timings"].get("encode", 0)
    search = after["timings"].get("search", 0) - before["timings"].get("search", 0)
    batches = after["batches"] - before["batches"]
    return {"rps": len(latencies) / seconds, "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99)), "encode": encode / busy if busy else 0.0,
            "search": search / busy if busy else 0.0, "batch": (after["queries"] - before["queries"]) / max(batches, 1),
            "sent": sent, "failed": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.clients, args.seconds = 4, 2.0
    with tempfile.TemporaryDirectory(prefix="llmret-serve-") as tmp:
        index, queries = build_index(Path(tmp), args.smoke)
        rows = {mode: measure(index, queries, mode == "on", args.clients, args.seconds) for mode in ("on", "off")}
    print(f"\nllmret serve, {args.clients} concurrent clients x {args.seconds:g} s, one query per request, k 10 "
          f"({'smoke: tiny random model' if args.smoke else 'minilm-l6, built-in code corpus, exact FAISS'}; "
          f"{os.cpu_count()} CPUs)")
    print(f"{'micro-batching':<15}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'encode':>8}{'search':>8}"
          f"{'batch':>7}{'sent':>7}{'failed':>7}")
    for mode, r in rows.items():
        print(f"{mode:<15}{r['rps']:>8.1f}{r['p50']:>9.1f}{r['p95']:>9.1f}{r['p99']:>9.1f}{r['encode']:>8.0%}"
              f"{r['search']:>8.0%}{r['batch']:>7.1f}{r['sent']:>7d}{r['failed']:>7d}")
    print(f"micro-batching throughput ratio (on / off): {rows['on']['rps'] / max(rows['off']['rps'], 1e-9):.2f}x")
    if any(r["failed"] for r in rows.values()):
        raise SystemExit("some requests failed")


if __name__ == "__main__":
    main()
