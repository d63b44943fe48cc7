"""``llmret serve``: saved indexes over HTTP."""

from __future__ import annotations

import argparse
from typing import Any

from llmret.cli.flags import non_negative_float, positive_float, positive_int
from llmret.util.errors import InputError


def register(sub: Any) -> None:
    parser = sub.add_parser("serve", help="serve saved indexes over HTTP (POST /search, GET /indexes, a search page "
                                          "at /)")
    parser.add_argument("index_dirs", nargs="+", metavar="INDEX_DIR", help="saved indexes (llmret index); named by "
                                                                           "folder")
    parser.add_argument("--corpus", action="append", metavar="NAME=PATH",
                        help="an index's corpus (corpus JSONL, BEIR folder or builtin:TASK), for passage text in answers")
    parser.add_argument("--hybrid", action="append", metavar="NAME=A+B",
                        help="also serve NAME: served indexes A and B searched together, fused by reciprocal rank")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback by default)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token-file", metavar="PATH",
                        help="require 'Authorization: Bearer TOKEN' with the token on this file's first line (or set "
                             "LLMRET_SERVE_TOKEN); never a flag, which the process list shows. Set one for any "
                             "non-loopback bind")
    parser.add_argument("--allowed-host", action="append", metavar="NAME",
                        help="a Host name to answer besides the bound address's own (a loopback bind answers only "
                             "127.0.0.1, localhost and ::1, which stops DNS rebinding)")
    parser.add_argument("--request-timeout", type=positive_float, default=10.0,
                        help="seconds a client has to send a whole request (headers and body)")
    parser.add_argument("--max-connections", type=positive_int, default=512,
                        help="connections held at once; past it the oldest still sending its request is dropped")
    parser.add_argument("--max-body-kb", type=positive_int, default=1024, help="largest request body")
    parser.add_argument("--no-batching", action="store_true", help="encode each request alone (no micro-batching)")
    parser.add_argument("--max-batch", type=positive_int, default=32, help="queries encoded together, and per request "
                                                                           "at most")
    parser.add_argument("--max-wait-ms", type=non_negative_float, default=5.0,
                        help="how long a batch waits for more queries")
    parser.add_argument("--max-k", type=positive_int, default=1000, help="largest k a request may ask for")
    parser.add_argument("--quiet", action="store_true", help="no access log (a line per request: method, path, "
                                                            "status, ms)")
    parser.set_defaults(func=serve)


def pairs(entries: list[str] | None, flag: str, form: str, sep: str = "=") -> dict[str, str]:
    """``NAME=VALUE`` entries of a repeated flag as a mapping (a malformed one is an argument error)."""
    out = {}
    for entry in entries or []:
        name, _, value = entry.partition(sep)
        if not name or not value:
            raise InputError(f"{flag} takes {form}, not {entry!r}")
        out[name] = value
    return out


SERVE_EXTRA = ("fastapi", "uvicorn", "starlette", "h11", "pydantic")


def serve(args: argparse.Namespace) -> int:
    try:
        from llmret.serve.app import serve as run
        from llmret.serve.guard import Bounds
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in SERVE_EXTRA:
            raise
        raise InputError(f"llmret serve needs {exc.name}, which is not installed: pip install fastapi uvicorn "
                         "(the 'serve' extra: pip install -e '.[serve]' in a checkout)") from None

    hybrids = pairs(args.hybrid, "--hybrid", "NAME=A+B (served index names joined by +)")
    if any("+" not in parts for parts in hybrids.values()):
        raise InputError("--hybrid takes NAME=A+B (served index names joined by +)")
    run(args.index_dirs, corpora=pairs(args.corpus, "--corpus", "NAME=PATH (an index's folder name, then its corpus)"),
        hybrids={name: parts.split("+") for name, parts in hybrids.items()}, host=args.host, port=args.port,
        token_file=args.token_file, batching=not args.no_batching, max_batch=args.max_batch,
        max_wait=args.max_wait_ms / 1000, max_k=args.max_k, allowed_hosts=args.allowed_host,
        bounds=Bounds(args.request_timeout, args.max_body_kb * 1024, args.max_connections), quiet=args.quiet)
    return 0
