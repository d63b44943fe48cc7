"""Serving under bounded load: `llmret serve` on loopback, N concurrent clients for T seconds, then it stops.

A saved index (``minilm-l6`` over the built-in code task's corpus, exact FAISS) is served by
``llmret serve`` in its own process, with micro-batching on and then off (``--no-batching``), in the
same run. Each of ``--clients`` clients sends one query at a time (the task's test queries, in turn)
for ``--seconds``; every request is timed. Printed per mode: requests per second, latency p50 / p95 /
p99, the share of the service's busy time spent encoding against searching (from ``GET /indexes``),
the mean batch size, and failed requests; then the throughput ratio of micro-batching on over off.

Then the same good clients, micro-batching on, run again beside hostile ones (a separate process, so
the good clients' own timing is not slowed by the attack's bookkeeping): ``--slow`` connections that
send half a request a byte at a time (more than the server's connection bound, each reopened when
the server cuts it), clients sending bad requests (a lone surrogate in the query, invalid JSON, a
negative k, an unknown index) and clients sending huge ones (an 8 MB body with and without a length, a
200,000-character instruction), each at ``--attack-rate`` requests a second. Printed: the good clients'
figures under attack, their p99 against the clean run (target: within 2x) and their failures (target:
none), and what the attackers got back.

Also the embedding endpoint (``POST /v1/embeddings``, one passage of the corpus a request) with
micro-batching on and off: the same figures, and its throughput ratio. One server runs each mode (its
clean runs first, then, micro-batching on, the attack), each run measured from the server's counters.

    python benchmarks/serve.py [--clients 16] [--seconds 20] [--slow 600]
    python benchmarks/serve.py --smoke      # a tiny random model, seconds: checks that it runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def build_index(folder: Path, smoke: bool) -> tuple[Path, list[str], list[str]]:
    """Encode a corpus and save its index; return the index folder, the queries to send and passages
    (for the embedding endpoint)."""
    from llmret.cli import main

    if smoke:
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
    from llmret.data.spec import load_corpus

    passages = [doc.full_text() for _, doc in zip(range(200), load_corpus(data))]
    return folder / "index", queries, passages


def start(index: Path, batching: bool) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # --quiet: nobody reads the access log here, and an undrained pipe would stall the server
    cmd = [sys.executable, "-m", "llmret.cli", "serve", str(index), "--port", str(port), "--max-wait-ms", "5", "--quiet"]
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


async def load(url: str, queries: list[str], clients: int, seconds: float,
               embed: bool = False) -> tuple[list[float], int, Counter]:
    """(latencies of successful requests, requests sent, failed requests by status or error) over ``seconds``:
    each a search for one of ``queries``, or with ``embed`` the vector of one of them (OpenAI's API)."""
    import httpx

    latencies: list[float] = []
    sent = 0
    failed: Counter = Counter()
    stop = time.monotonic() + seconds

    async def client(i: int, http: httpx.AsyncClient) -> None:
        nonlocal sent, failed
        n = i
        while time.monotonic() < stop:
            text = queries[n % len(queries)]
            body = {"input": text, "model": "index"} if embed else {"query": text, "k": 10}
            n += clients
            start = time.perf_counter()
            sent += 1
            try:
                r = await http.post(f"{url}/v1/embeddings" if embed else f"{url}/search", json=body)
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    failed[str(r.status_code)] += 1
            except httpx.HTTPError as exc:
                failed[type(exc).__name__] += 1

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    return latencies, sent, failed


BAD_BODIES = (b'{"query": "read \\ud800 file", "k": 10}', b'{"query": "unclosed', b'{"query": "q", "k": -1}',
              b'{"query": "q", "index": "no-such-index"}', b'[1, 2, 3]')
HUGE = 8 << 20


ATTACKERS = ("slow", "bad", "huge")


def attack(url: str, seconds: float, slow: int, rate: float, kinds: list[str]) -> dict[str, Counter]:
    """Hostile clients of ``kinds`` for ``seconds``, each in its own thread, the bad and huge ones sending
    ``rate`` requests a second each (0: without pause); what each kind got back, counted."""
    import httpx

    host, port = url.removeprefix("http://").split(":")
    stop = time.monotonic() + seconds
    got: dict[str, Counter] = {"slow": Counter(), "bad": Counter(), "huge": Counter()}

    def slowloris() -> None:
        """Half-sent requests, one more byte each per second; a cut connection is reopened."""
        conns: list[socket.socket | None] = [None] * slow
        while time.monotonic() < stop:
            for i, conn in enumerate(conns):
                try:
                    if conn is None:
                        conn = conns[i] = socket.create_connection((host, int(port)), timeout=2)
                        conn.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                        got["slow"]["opened"] += 1
                    else:
                        conn.sendall(b"X")
                except OSError:
                    got["slow"]["cut off by the server"] += conn is not None
                    got["slow"]["refused"] += conn is None
                    if conn is not None:
                        conn.close()
                    conns[i] = None
            time.sleep(1.0)
        for conn in conns:
            if conn is not None:
                conn.close()

    def answered(kind: str, send: Callable[[httpx.Client, int], httpx.Response]) -> None:
        with httpx.Client(timeout=30) as http:
            n = 0
            while time.monotonic() < stop:
                if rate:
                    time.sleep(1 / rate)
                try:
                    got[kind][str(send(http, n).status_code)] += 1
                except httpx.HTTPError as exc:  # a huge body the server stopped reading
                    got[kind][type(exc).__name__] += 1
                n += 1

    def bad(http: httpx.Client, n: int) -> httpx.Response:
        return http.post(f"{url}/search", content=BAD_BODIES[n % len(BAD_BODIES)],
                         headers={"Content-Type": "application/json"})

    def huge(http: httpx.Client, n: int) -> httpx.Response:
        if n % 3 == 2:
            return http.post(f"{url}/search", json={"query": "q", "instruction": "i " * 100_000})
        content = body if n % 3 == 0 else (body[i:i + 65536] for i in range(0, len(body), 65536))  # chunked
        return http.post(f"{url}/search", content=content, headers={"Content-Type": "application/json"})

    body = b'{"query": "' + b"a" * HUGE + b'"}'
    threads = {"slow": [threading.Thread(target=slowloris)],
               "bad": [threading.Thread(target=answered, args=("bad", bad)) for _ in range(2)],
               "huge": [threading.Thread(target=answered, args=("huge", huge))]}
    threads = [t for kind in kinds for t in threads[kind]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


def measure(url: str, queries: list[str], clients: int, seconds: float, hostile: list[str] | None = None,
            embed: bool = False) -> dict[str, Any]:
    """The good clients' figures against the server at ``url``; with ``hostile`` (``--attack``'s arguments)
    beside hostile clients in another process; with ``embed``, ``queries`` are passages sent to the
    embedding endpoint. Each run is measured from the server's counters before and after it, so runs on
    one server do not mix."""
    import httpx

    attacker = None
    try:
        asyncio.run(load(url, queries, clients, min(2.0, seconds), embed))  # warm-up: first batches, allocator
        stats = "embedding" if embed else "batching"
        before = httpx.get(f"{url}/indexes").json()[0][stats]
        if hostile:
            attacker = subprocess.Popen([sys.executable, __file__, "--attack", url, "--seconds", str(seconds + 2),
                                         *hostile], stdout=subprocess.PIPE, text=True)
            time.sleep(2.0)  # the slow connections are open before the good clients start
        latencies, sent, failed = asyncio.run(load(url, queries, clients, seconds, embed))
        after = httpx.get(f"{url}/indexes").json()[0][stats]
        attacked = json.loads(attacker.communicate(timeout=120)[0]) if attacker else {}
    finally:
        if attacker is not None and attacker.poll() is None:
            attacker.kill()
    ms = 1000 * np.array(latencies or [float("nan")])
    busy = after["busy_seconds"] - before["busy_seconds"]
    part = "embed" if embed else "encode"
    encode = after["timings"].get(part, 0) - before["timings"].get(part, 0)
    search = after["timings"].get("search", 0) - before["timings"].get("search", 0)
    batches = after["batches"] - before["batches"]
    return {"rps": len(latencies) / seconds, "p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99)), "encode": encode / busy if busy else 0.0,
            "search": search / busy if busy else 0.0, "batch": (after["queries"] - before["queries"]) / max(batches, 1),
            "sent": sent, "failed": failed, "attack": attacked}


def counts(counter: dict[str, int]) -> str:
    return ", ".join(f"{n} {what}" for what, n in sorted(counter.items())) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--slow", type=int, default=600, help="slow connections in the hostile run (the server "
                                                                  "holds 512 at most)")
    parser.add_argument("--attack-rate", type=float, default=20.0, help="requests a second from each bad or huge "
                                                                        "client (0: without pause)")
    parser.add_argument("--attackers", default=",".join(ATTACKERS), help="the hostile kinds that run, of "
                                                                         f"{','.join(ATTACKERS)}")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--attack", metavar="URL", help=argparse.SUPPRESS)  # the hostile clients' own process
    args = parser.parse_args()
    kinds = [k for k in args.attackers.split(",") if k]
    if set(kinds) - set(ATTACKERS):
        parser.error(f"--attackers: unknown {sorted(set(kinds) - set(ATTACKERS))}; known: {', '.join(ATTACKERS)}")
    if args.attack:
        print(json.dumps(attack(args.attack, args.seconds, args.slow, args.attack_rate, kinds)))
        return
    if args.smoke:
        args.clients, args.seconds, args.slow = 4, 2.0, 40
    hostile = ["--slow", str(args.slow), "--attack-rate", str(args.attack_rate), "--attackers", ",".join(kinds)]
    with tempfile.TemporaryDirectory(prefix="llmret-serve-") as tmp:
        index, queries, passages = build_index(Path(tmp), args.smoke)
        rows: dict[str, dict[str, Any]] = {}
        for mode in ("on", "off"):  # one server per mode (a start costs seconds): clean runs first, the attack last
            server, url = start(index, batching=mode == "on")
            try:
                rows[mode] = measure(url, queries, args.clients, args.seconds)
                rows[f"embed {mode}"] = measure(url, passages, args.clients, args.seconds, embed=True)
                if mode == "on":
                    rows["under attack"] = measure(url, queries, args.clients, args.seconds, hostile)
            finally:
                server.terminate()
                server.wait(30)
        rows = {mode: rows[mode] for mode in ("on", "off", "under attack", "embed on", "embed off")}
    print(f"\nllmret serve, {args.clients} concurrent clients x {args.seconds:g} s, one query per request, k 10 "
          f"({'smoke: tiny random model' if args.smoke else 'minilm-l6, built-in code corpus, exact FAISS'}; "
          f"{os.cpu_count()} CPUs)")
    print(f"{'micro-batching':<15}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'encode':>8}{'search':>8}"
          f"{'batch':>7}{'sent':>7}{'failed':>7}")
    for mode, r in rows.items():
        print(f"{mode:<15}{r['rps']:>8.1f}{r['p50']:>9.1f}{r['p95']:>9.1f}{r['p99']:>9.1f}{r['encode']:>8.0%}"
              f"{r['search']:>8.0%}{r['batch']:>7.1f}{r['sent']:>7d}{sum(r['failed'].values()):>7d}")
    print(f"micro-batching throughput ratio (on / off): {rows['on']['rps'] / max(rows['off']['rps'], 1e-9):.2f}x")
    print(f"embedding (POST /v1/embeddings, one passage a request) micro-batching throughput ratio (on / off): "
          f"{rows['embed on']['rps'] / max(rows['embed off']['rps'], 1e-9):.2f}x")
    attacked = rows["under attack"]
    pace = f"{args.attack_rate:g} requests/s each" if args.attack_rate else "without pause"
    print(f"under attack (micro-batching on; {args.slow if 'slow' in kinds else 0} slow connections, "
          f"{2 if 'bad' in kinds else 0} clients sending bad requests and {1 if 'huge' in kinds else 0} huge ones, "
          f"{pace}): the good clients' p99 over the clean run's {attacked['p99'] / rows['on']['p99']:.2f}x "
          f"(target <= 2x), their throughput {attacked['rps'] / rows['on']['rps']:.2f}x; their failures: "
          f"{counts(attacked['failed'])} (target none)")
    for kind, answers in attacked["attack"].items():
        if kind in kinds:
            print(f"  {kind} clients got: {counts(answers)}")
    for mode, r in rows.items():
        if r["failed"]:
            print(f"good requests failed ({mode}): {counts(r['failed'])}", file=sys.stderr)
    if any(r["failed"] for r in rows.values()):
        raise SystemExit("some good requests failed")


if __name__ == "__main__":
    main()
