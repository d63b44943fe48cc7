"""The service under hostile but fair use, over a real socket: a bad query fails alone, instructions are
bounded and never silently consume the query, slow and oversized requests are cut off while prompt
clients are served, the token guards everything but the page and /health (checked before a body is
read), only the bound host names are answered, and every error has one format."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from llmret.cli import main
from llmret.serve.app import Limits, create_app
from llmret.serve.guard import Bounds
from llmret.util.errors import InputError
from test_serve import _load, indexes, serving  # noqa: F401 - the module's fixture, shared


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_a_bad_query_fails_alone_in_its_micro_batch(indexes: dict[str, Path]) -> None:  # noqa: F811
    async def together(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            good = [client.post(f"{url}/search", json={"index": "dense", "query": f"alpha {i}", "k": 3})
                    for i in range(6)]
            # a lone surrogate: valid JSON, not encodable text
            bad = client.post(f"{url}/search", content=b'{"index": "dense", "query": "read \\ud800 file"}',
                              headers={"Content-Type": "application/json"})
            return await asyncio.gather(*good, bad)

    with serving(create_app(_load(indexes))) as url:
        for _ in range(3):
            *good, bad = asyncio.run(together(url))
            assert [r.status_code for r in good] == [200] * 6
            assert bad.status_code == 400 and "lone surrogate at character 6" in bad.json()["error"]


def test_a_failure_inside_the_model_fails_only_its_own_request(indexes: dict[str, Path],  # noqa: F811
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from llmret.encoders.base import TextEncoder

    original = TextEncoder.encode_queries

    def fails_on_poison(self: TextEncoder, texts: list[str], **kwargs: object) -> object:
        if any("poison" in t for t in texts):
            raise RuntimeError("the model failed")
        return original(self, texts, **kwargs)

    monkeypatch.setattr(TextEncoder, "encode_queries", fails_on_poison)

    async def together(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            calls = [client.post(f"{url}/search", json={"index": "dense", "query": q})
                     for q in ("alpha", "beta", "poison", "gamma", "delta")]
            return await asyncio.gather(*calls)

    loaded = _load(indexes)
    with serving(create_app(loaded)) as url:
        statuses = [r.status_code for r in asyncio.run(together(url))]
    assert statuses == [200, 200, 500, 200, 200]
    assert loaded[0].batcher.stats.failed == 1


def test_instructions_are_bounded_and_never_consume_the_query_unsaid(indexes: dict[str, Path]) -> None:  # noqa: F811
    limits = Limits(max_query_chars=5000, max_instruction_chars=4000)
    with serving(create_app(_load(indexes), limits)) as url:
        def search(query: str, instruction: str) -> httpx.Response:
            return httpx.post(f"{url}/search", json={"index": "dense", "query": query, "instruction": instruction},
                              timeout=60)

        started = time.monotonic()
        r = search("alpha", "x" * 20_000_000)  # 20 MB: refused by size, before any tokenising
        assert r.status_code == 413 and time.monotonic() - started < 10
        r = search("alpha", "y" * 4001)
        assert r.status_code == 413 and "the instruction has 4001 characters; at most 4000" in r.json()["error"]
        # the index reads queries of up to 512 tokens (BEIR's rules): 600 words of instruction leave none
        r = search("alpha beta", " ".join(["word"] * 600))
        assert r.status_code == 400 and "no room is left for the query" in r.json()["error"]
        # a short instruction that leaves room, and a query longer than the room: answered, and said
        answer = search(" ".join(["gamma"] * 600), "find it").json()["results"][0]
        assert answer["truncated"].startswith("the query was cut to ")
        assert "truncated" not in search("gamma", "find it").json()["results"][0]


def test_slow_clients_are_cut_off_while_prompt_ones_are_served(indexes: dict[str, Path]) -> None:  # noqa: F811
    bounds = Bounds(request_timeout=1.5, max_body_bytes=1 << 20, max_connections=20)
    with serving(create_app(_load(indexes)), bounds) as url:
        port = _port(url)
        slow = []
        for _ in range(40):  # twice the connection limit, each sending half a header
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            slow.append(s)
        started = time.monotonic()
        r = httpx.post(f"{url}/search", json={"index": "dense", "query": "alpha", "k": 3}, timeout=30)
        assert r.status_code == 200 and time.monotonic() - started < 5
        # a body that trickles in is cut off too
        trickle = socket.create_connection(("127.0.0.1", port))
        trickle.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 100\r\n\r\n{")
        time.sleep(bounds.request_timeout + 1.0)
        closed = 0
        for s in [*slow, trickle]:
            s.settimeout(2)
            try:
                closed += s.recv(1) == b""
            except (ConnectionResetError, TimeoutError, OSError):
                closed += 1
            s.close()
        assert closed == len(slow) + 1
        assert httpx.get(f"{url}/health").status_code == 200


def _ask(conn: socket.socket, query: str) -> bytes:
    """One search over a kept-alive raw connection; the status line and headers of its answer."""
    body = json.dumps({"index": "dense", "query": query, "k": 3}).encode()
    conn.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = conn.recv(65536)
        if not chunk:
            return answer  # closed by the server
        answer += chunk
    head, rest = answer.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(rest) < length:
        rest += conn.recv(65536)
    return head


def test_a_prompt_client_between_requests_is_never_dropped_for_slow_ones(indexes: dict[str, Path]) -> None:  # noqa: F811
    """Slow connections newer than a kept-alive prompt one, past the connection limit: the slow ones
    are dropped (the one sending longest first), the prompt one keeps its connection."""
    bounds = Bounds(request_timeout=30, max_body_bytes=1 << 20, max_connections=10)
    with serving(create_app(_load(indexes)), bounds) as url:
        prompt = socket.create_connection(("127.0.0.1", _port(url)), timeout=30)
        assert _ask(prompt, "alpha").startswith(b"HTTP/1.1 200")
        slow = []
        for _ in range(25):  # two and a half times the limit, each a half-sent header
            s = socket.create_connection(("127.0.0.1", _port(url)))
            s.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            slow.append(s)
            time.sleep(0.02)
        time.sleep(0.5)
        for _ in range(3):  # the same connection, three more requests: it was kept
            assert _ask(prompt, "beta").startswith(b"HTTP/1.1 200")
        closed = []
        for s in slow:
            s.settimeout(0.5)
            try:
                closed.append(s.recv(1) == b"")
            except TimeoutError:
                closed.append(False)
            except OSError:
                closed.append(True)
            s.close()
        prompt.close()
        assert all(closed[:15]) and not any(closed[-9:])  # the oldest slow ones went; the newest stay


def test_bodies_are_bounded_and_the_token_is_checked_before_a_body_is_read(indexes: dict[str, Path]) -> None:  # noqa: F811
    bounds = Bounds(request_timeout=10, max_body_bytes=4096, max_connections=64)
    with serving(create_app(_load(indexes), token="s3cret", bounds=bounds), bounds) as url:
        auth = {"Authorization": "Bearer s3cret"}
        r = httpx.post(f"{url}/search", json={"query": "a" * 5000}, headers=auth)
        assert r.status_code == 413 and "over 4096 bytes" in r.json()["error"]
        chunks = (b"x" * 1024 for _ in range(8))  # chunked: no length up front
        r = httpx.post(f"{url}/search", content=chunks, headers={**auth, "Content-Type": "application/json"})
        assert r.status_code == 413
        # without the token a body is never parsed: an invalid one still gets 401, not 422
        r = httpx.post(f"{url}/search", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 401
        for path in ("/indexes", "/openapi.json", "/docs"):
            assert httpx.get(f"{url}{path}").status_code == 401, path
            assert httpx.get(f"{url}{path}", headers=auth).status_code == 200, path
        health = httpx.get(f"{url}/health")
        assert health.status_code == 200 and health.json() == {"status": "ok"}  # no index names
        assert httpx.get(f"{url}/").status_code == 200 and "token" in httpx.get(f"{url}/").text


def test_only_the_bound_names_are_answered(indexes: dict[str, Path]) -> None:  # noqa: F811
    with serving(create_app(_load(indexes))) as url:
        ok = httpx.get(f"{url}/health", headers={"Host": f"localhost:{_port(url)}"})
        assert ok.status_code == 200
        rebound = httpx.get(f"{url}/indexes", headers={"Host": "attacker.example"})  # DNS rebinding
        assert rebound.status_code == 421 and "attacker.example" in rebound.json()["error"]
    with serving(create_app(_load(indexes), hosts={"search.internal"})) as url:
        assert httpx.get(f"{url}/health", headers={"Host": "search.internal"}).status_code == 200
        assert httpx.get(f"{url}/health").status_code == 421


def test_every_error_has_one_format_documented_in_the_schema(indexes: dict[str, Path]) -> None:  # noqa: F811
    with serving(create_app(_load(indexes))) as url:
        for response in (httpx.get(f"{url}/nowhere"), httpx.get(f"{url}/search"),
                         httpx.post(f"{url}/search", json={"index": "nope", "query": "a"}),
                         httpx.post(f"{url}/search", json={"index": "dense", "query": 5})):
            assert response.status_code in (404, 405, 422) and set(response.json()) == {"error"}, response.text
        schema = httpx.get(f"{url}/openapi.json").json()
        documented = schema["paths"]["/search"]["post"]["responses"]
        assert {"400", "401", "413", "421", "500"} <= set(documented)
        assert documented["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")


def test_serve_refuses_bad_options_before_loading_anything(indexes: dict[str, Path], tmp_path: Path,  # noqa: F811
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    assert main(["serve", str(indexes["dense"]), "--host", "no-such-host.invalid"]) == 2
    assert "--host 'no-such-host.invalid'" in capsys.readouterr().err and time.monotonic() - started < 15
    assert main(["serve", str(indexes["dense"]), "--token-file", str(tmp_path / "missing")]) == 2
    assert "cannot read the token file" in capsys.readouterr().err
    assert main(["serve", str(indexes["dense"]), "--hybrid", "x"]) == 2
    assert "--hybrid takes NAME=A+B" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["serve", str(indexes["dense"]), "--max-batch", "0"])
    assert exit_.value.code == 2
    # a corpus that is not the index's: refused at start-up, not served as wrong passage text
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"_id": f"x{i}", "text": "t"}) + "\n" for i in range(40)))
    assert main(["serve", str(indexes["dense"]), "--corpus", f"dense={other}"]) == 2
    assert "40 documents of index 'dense' are not in this corpus" in capsys.readouterr().err


def test_the_token_comes_from_a_file_or_the_environment_never_a_flag(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from llmret.serve.app import read_token

    (tmp_path / "token").write_text("s3cret\nignored second line\n")
    monkeypatch.setenv("LLMRET_SERVE_TOKEN", "from-env")
    assert read_token(tmp_path / "token") == "s3cret"  # the file wins over the environment
    assert read_token(None) == "from-env"
    monkeypatch.delenv("LLMRET_SERVE_TOKEN")
    assert read_token(None) is None
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(InputError, match="the token file is empty"):
        read_token(tmp_path / "empty")
    with pytest.raises(SystemExit):
        main(["serve", "index", "--token", "s3cret"])  # no such flag: it would show in the process list


def test_a_flood_is_logged_once_a_minute_with_its_count(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from llmret.serve.guard import AcceptErrorsOnce, _Shedding

    shed = _Shedding(every=60.0)
    with caplog.at_level(logging.WARNING, logger="llmret.serve.guard"):
        for _ in range(1000):
            shed("requests not sent within %.0f s were dropped", 10.0)
    assert len(caplog.records) == 1 and "(1 since the last such line)" in caplog.records[0].getMessage()
    accept = AcceptErrorsOnce(every=60.0)
    try:
        raise OSError(24, "Too many open files")
    except OSError:
        import sys

        exc_info = sys.exc_info()
    records = [logging.LogRecord("asyncio", logging.ERROR, __file__, 1, "socket.accept() out of system resource",
                                 (), exc_info) for _ in range(500)]
    passed = [r for r in records if accept.filter(r)]
    assert len(passed) == 1 and passed[0].exc_info is None  # one line, no traceback
