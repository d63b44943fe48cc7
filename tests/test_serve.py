"""The HTTP service over a real socket: the same top-k as `llmret search`, bad requests answered with a 4xx
while it keeps serving, micro-batching that changes no answer, and the search page in headless Chromium."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from llmret.cli import main
from llmret.data.trec import read_run
from llmret.encoders.base import TextEncoder
from llmret.encoders.settings import EncoderSettings
from llmret.serve.app import Limits, LoadedIndex, create_app, server_config
from llmret.serve.guard import Bounds
from llmret.training.train import TrainSettings, train

from helpers import random_texts, write_beir_folder, write_training_file


@contextmanager
def serving(app: object, bounds: Bounds | None = None) -> Iterator[str]:
    """Run ``app`` with uvicorn, configured as ``llmret serve`` configures it, on a free loopback port in a
    thread; yield its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, bounds))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def indexes(tiny_llama: Path, tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trained dense model's index and a sparse (tiny BERT MLM head) exact index over one small corpus."""
    root = tmp_path_factory.mktemp("serve")
    docs = {f"d{i}": text for i, text in enumerate(random_texts(40, seed=31, min_words=5))}
    queries = {f"q{i}": " ".join(docs[f"d{i}"].split()[:3]) for i in range(12)}
    data = write_beir_folder(root / "data", docs, queries, {f"q{i}": {f"d{i}": 1} for i in range(12)})
    final = train(TrainSettings(train_data=str(write_training_file(root / "train.jsonl", 16, (1, 5))),
                                output_dir=str(root / "run"), batch_size=4, group_size=2, max_steps=2, lora_r=4,
                                encoder=EncoderSettings(model=str(tiny_llama), query_max_length=12,
                                                        passage_max_length=24)))
    out = {"data": data}
    for name, retriever, model, how in (("dense", "dense", final, "Flat"), ("sparse", "sparse", tiny_bert, "exact")):
        emb = root / f"emb-{name}"
        assert main(["encode", "--retriever", retriever, "--data", str(data), "--model", str(model), "--what", "corpus",
                     "--out", str(emb)]) == 0
        assert main(["index", "--embeddings", str(emb / "corpus"), "--index", how, "--out", str(root / name)]) == 0
        out[name] = root / name
    return out


def _load(indexes: dict[str, Path], batching: bool = True, corpus: bool = False) -> list[LoadedIndex]:
    from llmret.data.spec import load_corpus

    texts = {d.id: d.full_text() for d in load_corpus(str(indexes["data"]))} if corpus else None
    return [LoadedIndex(name, indexes[name], texts, batching, 32, 0.02) for name in ("dense", "sparse")]


def test_search_over_http_gives_the_top_k_of_llmret_search(indexes: dict[str, Path], tmp_path: Path) -> None:
    assert main(["search", "--index-dir", str(indexes["dense"]), "--data", str(indexes["data"]), "--k", "5",
                 "--out", str(tmp_path / "run.trec")]) == 0
    expected = read_run(tmp_path / "run.trec")
    from llmret.evaluation.conventions import load

    data, _ = load(str(indexes["data"]))
    qids = sorted(data.queries)
    with serving(create_app(_load(indexes, corpus=True))) as url:
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}  # what is served: /indexes
        listed = httpx.get(f"{url}/indexes").json()
        assert [ix["retriever"] for ix in listed] == ["dense", "sparse"] and listed[0]["encoder"]["model"].endswith("final")
        answer = httpx.post(f"{url}/search", json={"index": "dense", "queries": [data.queries[q] for q in qids],
                                                   "k": 5, "passages": True}).json()
        for qid, result in zip(qids, answer["results"]):
            assert [h["id"] for h in result["hits"]] == list(expected[qid])
            assert [h["score"] for h in result["hits"]] == pytest.approx(list(expected[qid].values()), rel=1e-5)
            assert [h["rank"] for h in result["hits"]] == [1, 2, 3, 4, 5] and result["hits"][0]["text"]
        assert "openapi" in httpx.get(f"{url}/openapi.json").json()


def test_bad_requests_get_a_4xx_and_the_service_keeps_serving(indexes: dict[str, Path]) -> None:
    good = {"index": "dense", "query": "alpha beta", "k": 3}
    bad = [
        ({"index": "dense", "query": "   "}, 400, "query 1 is empty"),
        ({"index": "dense", "query": "x" * 3000}, 413, "at most 2000"),
        ({"index": "dense", "query": "alpha", "k": 0}, 400, "k must be between 1 and 1000"),
        ({"index": "dense", "query": "alpha", "k": 5000}, 400, "k must be between"),
        ({"index": "nope", "query": "alpha"}, 404, "no index 'nope'"),
        ({"query": "alpha"}, 400, "several indexes are loaded"),
        ({"index": "dense", "queries": ["a"] * 65}, 413, "at most 64"),
        ({"index": "dense", "queries": []}, 400, "'queries' is empty"),
        ({"index": "dense", "query": "a", "queries": ["b"]}, 400, "not both"),
        ({"index": "dense", "query": "alpha", "passages": True}, 400, "without its corpus"),
        ({"index": "dense", "query": 5}, 422, "query"),
        ({"index": "dense", "query": "alpha", "k": "many"}, 422, "k"),
    ]
    with serving(create_app(_load(indexes), Limits(max_batch=64))) as url:
        for body, status, message in bad:
            r = httpx.post(f"{url}/search", json=body)
            assert r.status_code == status and message in r.json()["error"], (body, r.text)
            assert httpx.post(f"{url}/search", json=good).status_code == 200
        r = httpx.post(f"{url}/search", content=b'{"query": "alpha", ', headers={"Content-Type": "application/json"})
        assert r.status_code == 422 and "bad request body" in r.json()["error"]
        assert httpx.post(f"{url}/search", json=good).status_code == 200
    with serving(create_app(_load(indexes), token="s3cret")) as url:
        assert httpx.post(f"{url}/search", json=good).status_code == 401
        assert httpx.post(f"{url}/search", json=good, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.post(f"{url}/search", json=good, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(f"{url}/health").status_code == 200  # health needs no token


def test_micro_batching_changes_no_answer_and_batches_concurrent_queries(indexes: dict[str, Path],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    queries = random_texts(16, seed=41, max_words=6)

    async def together(url: str) -> list[dict]:
        async with httpx.AsyncClient(timeout=60) as client:
            answers = await asyncio.gather(*(client.post(f"{url}/search", json={"index": "sparse", "query": q, "k": 4})
                                             for q in queries))
        return [a.json()["results"][0] for a in answers]

    results = {}
    for batching in (True, False):
        with serving(create_app(_load(indexes, batching))) as url:
            results[batching] = asyncio.run(together(url))
            stats = next(ix for ix in httpx.get(f"{url}/indexes").json() if ix["name"] == "sparse")["batching"]
        assert stats["requests"] == 16 and stats["queries"] == 16 and stats["failed"] == 0
        assert (stats["batches"] < 16) if batching else (stats["batches"] == 16)
    for a, b in zip(results[True], results[False]):
        assert [h["id"] for h in a["hits"]] == [h["id"] for h in b["hits"]]
        assert [h["score"] for h in a["hits"]] == pytest.approx([h["score"] for h in b["hits"]], rel=1e-5)

    # a request that fails inside the model fails alone; the next one is served
    calls = {"n": 0}
    original = TextEncoder.encode_queries

    def flaky(self: TextEncoder, texts: list[str], **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return original(self, texts, **kwargs)

    monkeypatch.setattr(TextEncoder, "encode_queries", flaky)
    with serving(create_app(_load(indexes))) as url:
        r = httpx.post(f"{url}/search", json={"index": "dense", "query": "alpha"})
        assert r.status_code == 500 and "boom" in r.json()["error"]
        assert httpx.post(f"{url}/search", json={"index": "dense", "query": "alpha"}).status_code == 200


@pytest.mark.slow  # ranx compiles its kernels
def test_hybrid_fuses_by_reciprocal_rank_as_ranx_does(indexes: dict[str, Path]) -> None:
    import ranx

    query = {"query": "alpha beta gamma delta"}
    with serving(create_app(_load(indexes), hybrids={"both": ["dense", "sparse"]})) as url:
        parts = [httpx.post(f"{url}/search", json={**query, "index": name, "k": 100}).json()["results"][0]["hits"]
                 for name in ("dense", "sparse")]
        got = httpx.post(f"{url}/search", json={**query, "index": "both", "k": 5}).json()["results"][0]["hits"]
        assert "hybrid" in [ix["kind"] for ix in httpx.get(f"{url}/indexes").json()]
        r = httpx.post(f"{url}/search", json={**query, "index": "both", "explain": True})
        assert r.status_code == 400 and "not sparse" in r.json()["error"]
    fused = ranx.fuse([ranx.Run({"q": {h["id"]: h["score"] for h in hits}}, name=f"r{i}") for i, hits in enumerate(parts)],
                      method="rrf", params={"k": 60}).to_dict()["q"]
    expected = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert [h["id"] for h in got] == [d for d, _ in expected]
    assert [h["score"] for h in got] == pytest.approx([s for _, s in expected])
    with pytest.raises(ValueError, match="parts served indexes"):
        create_app(_load(indexes), hybrids={"both": ["dense", "nope"]})


def test_sparse_answers_explain_their_terms(indexes: dict[str, Path]) -> None:
    with serving(create_app(_load(indexes))) as url:
        result = httpx.post(f"{url}/search", json={"index": "sparse", "query": "alpha beta gamma", "k": 3,
                                                   "explain": True}).json()["results"][0]
    assert result["query_terms"] and all(w > 0 for _, w in result["query_terms"])
    for hit in result["hits"]:
        parts = [p for _, p in hit["terms"]]
        assert parts == sorted(parts, reverse=True) and sum(parts) <= hit["score"] + 1e-2
        if len(parts) < 8:  # every shared term is listed: the products add up to the score
            assert sum(parts) == pytest.approx(hit["score"], abs=0.01)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs Chromium for the browser test (.ci/run installs Debian's chromium)")
        pytest.skip("no Chromium here (apt-get install chromium)")
    return found


def _search_on_page(page: Any, index: str, query: str, k: int) -> list[str]:
    """Pick ``index`` once the page lists it, search ``query`` for ``k`` hits; the hit ids shown."""
    page.wait_for_selector(f"#index option[value={index}]", state="attached")
    page.select_option("#index", index)
    page.fill("#query", query)
    page.fill("#k", str(k))
    page.click("#search button")
    page.wait_for_selector("#hits li")
    return page.locator("#hits li strong").all_inner_texts()


def test_search_page_in_a_headless_browser(indexes: dict[str, Path]) -> None:
    from playwright.sync_api import sync_playwright

    executable = _chromium()
    with serving(create_app(_load(indexes, corpus=True))) as url, sync_playwright() as p:
        expected = httpx.post(f"{url}/search", json={"index": "sparse", "query": "alpha beta", "k": 5}).json()
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url)
        ids = _search_on_page(page, "sparse", "alpha beta", 5)
        assert ids == [h["id"] for h in expected["results"][0]["hits"]]
        assert page.locator("#query-terms span").count() > 0 and page.locator("#hits li pre").count() == 5
        page.fill("#query", " ")
        page.click("#search button")
        page.wait_for_selector("#status.error")
        assert "empty" in page.inner_text("#status")
        browser.close()


def test_the_page_asks_for_the_token_marks_hybrid_sources_and_cuts_long_passages(indexes: dict[str, Path]) -> None:
    from playwright.sync_api import sync_playwright

    from llmret.data.spec import load_corpus

    executable = _chromium()
    texts = {d.id: (d.full_text() + " ") * 60 for d in load_corpus(str(indexes["data"]))}  # each over 600 characters
    loaded = [LoadedIndex(name, indexes[name], texts, True, 32, 0.02) for name in ("dense", "sparse")]
    app = create_app(loaded, token="s3cret", hybrids={"both": ["dense", "sparse"]})
    with serving(app) as url, sync_playwright() as p:
        auth = {"Authorization": "Bearer s3cret"}
        expected = httpx.post(f"{url}/search", json={"index": "both", "query": "alpha beta", "k": 5},
                              headers=auth).json()["results"][0]["hits"]
        assert all(set(h["found_by"]) <= {"dense", "sparse"} and h["found_by"] for h in expected)
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("#auth:not([hidden])")  # 401 from /indexes: the page asks
        assert "needs a token" in page.inner_text("#status")
        page.fill("#token", "s3cret")
        page.click("#auth button")
        assert _search_on_page(page, "both", "alpha beta", 5) == [h["id"] for h in expected]
        marks = [m.strip() for m in page.locator("#hits li .found-by").all_inner_texts()]
        assert marks == ["found by " + ", ".join(f"{part} #{rank}" for part, rank in h["found_by"].items())
                         for h in expected]
        for snippet, hit in zip(page.locator("#hits li pre").all_inner_texts(), expected):
            assert snippet.endswith(" …") and len(snippet) <= 602 and texts[hit["id"]].startswith(snippet[:-2])
        browser.close()


def test_serve_says_where_it_listens_and_logs_each_request_unless_quiet(indexes: dict[str, Path]) -> None:
    import subprocess
    import sys

    for quiet in (False, True):
        server = subprocess.Popen([sys.executable, "-m", "llmret.cli", "serve", str(indexes["dense"]), "--port", "0",
                                   *(["--quiet"] if quiet else [])], stderr=subprocess.PIPE, text=True)
        try:
            deadline, url = time.monotonic() + 120, None
            while url is None:
                line = server.stderr.readline()
                assert line and time.monotonic() < deadline, "the server stopped without saying where it listens"
                if "listening on http://127.0.0.1:" in line:
                    url = line.split("listening on ")[1].split()[0]
            assert httpx.get(f"{url}/health").status_code == 200
            assert httpx.post(f"{url}/search", json={"query": ""}).status_code == 400
        finally:
            server.terminate()
            _, rest = server.communicate(timeout=30)
        logged = [line for line in rest.splitlines() if "[llmret.serve.access]" in line]
        if quiet:
            assert logged == []
        else:
            assert len(logged) == 2 and " GET /health 200 " in logged[0] and logged[0].endswith(" ms")
            assert " POST /search 400 " in logged[1]


def test_serve_without_its_extra_says_what_to_install_in_one_line() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import sys; sys.modules['fastapi'] = None\n"
                           "from llmret.cli import main; sys.exit(main(['serve', 'some-index']))"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("llmret: error: llmret serve needs fastapi")
    assert "pip install fastapi uvicorn" in done.stderr
