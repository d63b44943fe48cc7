"""The HTTP search service: saved indexes with their query encoders behind FastAPI.

``POST /search`` answers one query or a batch from one index (ids, scores, ranks; optionally the
passages' text, and for sparse indexes the query's terms and each hit's contributing terms);
``GET /indexes`` says what is loaded and how it encodes; ``GET /health``; ``GET /`` is a search page.
Every request is checked before it reaches a model (empty, oversized or invalid query or instruction,
``k`` out of range, unknown index, batch too large: a 4xx naming the problem), a query that its
instruction leaves no room for is refused and one cut at the query length says so (``truncated``), and a
request that fails inside the model fails alone (:class:`~llmret.serve.batching.MicroBatcher`). What
reaches the app at all is bounded first (:mod:`llmret.serve.guard`). Every error, whatever its cause,
is ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmret.data.spec import load_corpus
from llmret.index.saved import search_all
from llmret.index.sparse import SparseIndex
from llmret.retrievers.searcher import Searcher
from llmret.serve.access import AccessLog
from llmret.serve.batching import MicroBatcher
from llmret.serve.checks import check_text, error_body
from llmret.serve.embeddings import Text, add_embedding_routes, encode_texts
from llmret.serve.guard import AcceptErrorsOnce, Bounds, Guard, hosts_for, protocol_class
from llmret.util.errors import InputError

log = logging.getLogger(__name__)
PAGE = Path(__file__).with_name("page.html")


@dataclass
class Limits:
    """What one request may ask: hits, queries, characters of a query and of an instruction."""

    max_k: int = 1000
    max_batch: int = 64  # queries in one request
    max_query_chars: int = 2000
    max_instruction_chars: int = 1000


class RequestProblem(Exception):
    """A request the model cannot answer as asked (its instruction leaves no room for the query): a 4xx
    for that request alone."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ErrorBody(BaseModel):
    error: str = Field(description="what is wrong, in one line")


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": what}
    for status, what in ((400, "bad request: the message names the field"), (401, "missing or wrong token"),
                         (404, "no such index"), (413, "too large: query, instruction, batch or body"),
                         (421, "a host name the service does not answer"), (422, "malformed body"),
                         (500, "the model failed on this request"))}


@dataclass
class Query:
    text: str
    k: int
    instruction: str | None
    explain: bool


class SearchRequest(BaseModel):
    index: str | None = Field(None, description="which loaded index (optional when one is loaded)")
    query: str | None = Field(None, description="one query")
    queries: list[str] | None = Field(None, description="a batch of queries (instead of query)")
    k: int = Field(10, description="hits per query")
    instruction: str | None = Field(None, description="task instruction for the query encoder")
    passages: bool = Field(False, description="include each hit's text (needs the index's corpus)")
    explain: bool = Field(False, description="sparse: the query's terms and each hit's contributing terms")


class LoadedIndex:
    """A saved index, its query encoder, its corpus text (optional) and its batcher."""
    def __init__(self, name: str, folder: Path, corpus: dict[str, str] | None, batching: bool, max_batch: int,
                 max_wait: float) -> None:
        self.name, self.folder, self.corpus = name, folder, corpus
        self.searcher = Searcher.open(folder)
        self.sparse = self.searcher.meta.get("encoder", {}).get("retriever") == "sparse"
        self.batcher: MicroBatcher[Query, dict[str, Any]] = MicroBatcher(self._work, max_batch=max_batch,
                                                                         max_wait=max_wait, enabled=batching)
        # the embedding APIs' texts, batched apart from queries but encoded in the same thread: one forward at a time
        self.embedder: MicroBatcher[Text, tuple[Any, int]] = MicroBatcher(
            lambda items: encode_texts(self.searcher.encoder, items), max_batch=max_batch, max_wait=max_wait,
            enabled=batching, executor=self.batcher.executor)
        self._columns: dict[str, int] | None = None

    def describe(self) -> dict[str, Any]:
        meta = self.searcher.meta
        return {"name": self.name, "kind": meta.get("kind"), "documents": meta.get("documents"),
                "retriever": "sparse" if self.sparse else "dense", "corpus": self.corpus is not None,
                "encoder": meta.get("encoder"), "batching": self.batcher.describe(),
                "embedding": self.embedder.describe()}

    def _work(self, queries: list[Query]) -> tuple[list[dict[str, Any]], dict[str, float]]:
        """Encode and search one batch (in the batcher's thread): queries sharing an instruction are
        encoded together; the index is searched once at the largest k and each answer cut to its own."""
        encoder = self.searcher.encoder
        answers: list[dict[str, Any] | None] = [None] * len(queries)
        timings = {"encode": 0.0, "search": 0.0}
        groups: dict[str | None, list[int]] = {}
        for i, q in enumerate(queries):
            groups.setdefault(q.instruction, []).append(i)
        for instruction, rows in groups.items():
            room, lengths = encoder.query_fit([queries[i].text for i in rows], instruction)
            if room < 1:
                problem = RequestProblem(400, f"the instruction and query format take all {encoder.settings.query_max_length} "
                                              "tokens of a query: no room is left for the query itself")
                for i in rows:
                    answers[i] = problem  # type: ignore[call-overload]
                continue
            start = time.perf_counter()
            vectors = encoder.encode_queries([queries[i].text for i in rows], instruction=instruction)
            encoded = time.perf_counter()
            k = max(queries[i].k for i in rows)
            scores, ids = search_all(self.searcher.indexes, vectors, k)
            timings["encode"] += encoded - start
            timings["search"] += time.perf_counter() - encoded
            for j, i in enumerate(rows):
                n = queries[i].k
                hits = [{"rank": r + 1, "id": doc, "score": float(score)}
                        for r, (doc, score) in enumerate(zip(ids[j][:n], np.asarray(scores[j])[:n]))]
                answer: dict[str, Any] = {"query": queries[i].text, "hits": hits}
                if lengths[j] > room:  # said, not silently answered for part of the query
                    answer["truncated"] = f"the query was cut to {room} of its {lengths[j]} tokens"
                if queries[i].explain and self.sparse:
                    self._explain(answer, vectors[j])
                answers[i] = answer
        return answers, timings  # type: ignore[return-value]

    def _explain(self, answer: dict[str, Any], vector: sp.csr_matrix, top: int = 20) -> None:
        """The query's strongest terms, and per hit the terms whose products gave most of its score
        (exact indexes keep the passages' weights; Seismic's do not give them back)."""
        encoder = self.searcher.encoder
        order = np.argsort(-vector.data)[:top]
        names = encoder.terms(vector.indices[order])
        answer["query_terms"] = [[t, round(float(w), 3)] for t, w in zip(names, vector.data[order])]
        if len(self.searcher.indexes) != 1 or not isinstance(self.searcher.indexes[0], SparseIndex):
            return
        index = self.searcher.indexes[0]
        if self._columns is None:
            self._columns = {doc: c for c, doc in enumerate(index.ids)}
        weights = dict(zip(vector.indices.tolist(), vector.data.tolist()))
        for hit in answer["hits"]:
            column = index.postings[:, self._columns[hit["id"]]].tocoo()
            parts = sorted(((weights[t] * float(w), t) for t, w in zip(column.row, column.data) if t in weights),
                           reverse=True)[:8]
            hit["terms"] = [[name, round(p, 3)] for (p, _), name in zip(parts, encoder.terms(np.array([t for _, t in parts])))]


class HybridIndex:
    """Several served indexes searched at once and fused by reciprocal rank (Cormack et al., 2009).

    RRF is computed here over the parts' hits rather than through :func:`llmret.evaluation.fusion.fuse`, so that
    each hit keeps which parts found it (``found_by``). Each part is asked for ``depth`` hits
    (at least 100) so that fusion sees more than the final k; ties are broken by document id.
    """
    def __init__(self, name: str, parts: list[LoadedIndex], rrf_k: int = 60, depth: int = 100) -> None:
        if len(parts) < 2:
            raise InputError(f"hybrid index '{name}' needs at least two served indexes to fuse")
        self.name, self.parts, self.rrf_k, self.depth = name, parts, rrf_k, depth
        self.sparse = False
        self.corpus = next((p.corpus for p in parts if p.corpus is not None), None)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "hybrid", "retriever": "hybrid", "fusion": f"rrf (k={self.rrf_k})",
                "parts": [p.name for p in self.parts], "documents": self.parts[0].searcher.meta.get("documents"),
                "corpus": self.corpus is not None}

    async def search(self, queries: list[Query], max_k: int) -> list[dict[str, Any]]:
        deep = [Query(q.text, min(max(q.k, self.depth), max_k), q.instruction, False) for q in queries]
        answers = await asyncio.gather(*(part.batcher.submit(deep) for part in self.parts))
        results = []
        for i, query in enumerate(queries):
            fused: dict[str, float] = {}
            found: dict[str, dict[str, int]] = {}  # per hit, its rank in each part that found it
            for part, answer in zip(self.parts, answers):
                for hit in answer[i]["hits"]:
                    fused[hit["id"]] = fused.get(hit["id"], 0.0) + 1.0 / (self.rrf_k + hit["rank"])
                    found.setdefault(hit["id"], {})[part.name] = hit["rank"]
            best = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))[:query.k]
            results.append({"query": query.text, "hits": [{"rank": r + 1, "id": d, "score": s, "found_by": found[d]}
                                                          for r, (d, s) in enumerate(best)]})
        return results


def create_app(indexes: list[LoadedIndex], limits: Limits | None = None, token: str | None = None,
               hybrids: dict[str, list[str]] | None = None, hosts: set[str] | None = None,
               bounds: Bounds | None = None, access_log: bool = False) -> FastAPI:
    """The FastAPI app over ``indexes`` (names unique) and ``hybrids`` (name -> the served indexes it
    fuses); ``token``: every path but the page and /health needs ``Authorization: Bearer``; ``hosts``:
    the Host names answered (:func:`llmret.serve.guard.hosts_for`; default the loopback names);
    ``access_log``: a line per request (:mod:`llmret.serve.access`)."""
    # long: the routes are closures over the served indexes and their limits
    limits, bounds = limits or Limits(), bounds or Bounds()
    by_name: dict[str, LoadedIndex | HybridIndex] = {ix.name: ix for ix in indexes}
    if len(by_name) != len(indexes):
        raise InputError(f"index names must be unique: {', '.join(ix.name for ix in indexes)}")
    for name, parts in (hybrids or {}).items():
        missing = [p for p in parts if p not in by_name or isinstance(by_name[p], HybridIndex)]
        if name in by_name or missing:
            raise InputError(f"hybrid '{name}': its name must be new and its parts served indexes "
                             f"({', '.join(missing) or name} {'are' if missing else 'is'} not)")
        by_name[name] = HybridIndex(name, [by_name[p] for p in parts])  # type: ignore[misc]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for ix in indexes:
            ix.embedder.close()
            ix.batcher.close()

    app = FastAPI(title="llmret search", description="Search saved llmret indexes with their query encoders. "
                  "Every error is {\"error\": \"...\"}.", lifespan=lifespan)
    app.add_middleware(Guard, token=token, hosts=hosts or {"127.0.0.1", "localhost", "::1", "[::1]"},
                       max_body_bytes=bounds.max_body_bytes)
    if access_log:
        app.add_middleware(AccessLog)  # added last, so outermost: the guard's refusals are logged too

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(request.url.path, exc.status_code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse(error_body(request.url.path, 422, f"bad request body: {problems}"), status_code=422)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok"}  # what is served is behind the token (/indexes)

    @app.get("/indexes", responses=ERRORS)
    def list_indexes() -> list[dict[str, Any]]:
        return [ix.describe() for ix in by_name.values()]

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text(encoding="utf-8")

    @app.post("/search", responses=ERRORS)
    async def search(body: SearchRequest) -> dict[str, Any]:
        index = _pick(by_name, body.index)
        texts = _texts(body, limits)
        if not 1 <= body.k <= limits.max_k:
            raise HTTPException(400, f"k must be between 1 and {limits.max_k}, not {body.k}")
        if body.explain and not index.sparse:
            raise HTTPException(400, f"'explain' lists sparse terms; index '{index.name}' is not sparse")
        if body.passages and index.corpus is None:
            raise HTTPException(400, f"index '{index.name}' was served without its corpus: no passage text to give")
        queries = [Query(t, body.k, body.instruction, body.explain) for t in texts]
        try:
            if isinstance(index, HybridIndex):
                results = await index.search(queries, limits.max_k)
            else:
                results = await index.batcher.submit(queries)
        except RequestProblem as problem:
            raise HTTPException(problem.status, str(problem)) from None
        except Exception as exc:  # one request failed inside the model; the service goes on
            log.exception("search failed")
            raise HTTPException(500, f"search failed: {type(exc).__name__}: {exc}") from None
        if body.passages:
            for result in results:
                for hit in result["hits"]:
                    hit["text"] = index.corpus[hit["id"]]  # type: ignore[index]
        return {"index": index.name, "k": body.k, "results": results}

    add_embedding_routes(app, {ix.name: ix for ix in indexes}, limits, ERRORS)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        return JSONResponse(error_body(request.url.path, 500, f"internal error: {type(exc).__name__}"), status_code=500)

    return app


def _pick(by_name: dict[str, LoadedIndex | HybridIndex], name: str | None) -> LoadedIndex | HybridIndex:
    if name is None:
        if len(by_name) == 1:
            return next(iter(by_name.values()))
        raise HTTPException(400, f"several indexes are loaded: name one with 'index' ({', '.join(by_name)})")
    if name not in by_name:
        raise HTTPException(404, f"no index '{name}' is loaded (loaded: {', '.join(by_name)})")
    return by_name[name]


def _texts(body: SearchRequest, limits: Limits) -> list[str]:
    if (body.query is None) == (body.queries is None):
        raise HTTPException(400, "give either 'query' (one text) or 'queries' (a list), not both or neither")
    texts = [body.query] if body.query is not None else list(body.queries or [])
    if not texts:
        raise HTTPException(400, "'queries' is empty")
    if len(texts) > limits.max_batch:
        raise HTTPException(413, f"{len(texts)} queries in one request; at most {limits.max_batch}")
    for i, text in enumerate(texts):
        if not text.strip():
            raise HTTPException(400, f"query {i + 1} is empty")
        if len(text) > limits.max_query_chars:
            raise HTTPException(413, f"query {i + 1} has {len(text)} characters; at most {limits.max_query_chars}")
        check_text(text, f"query {i + 1}")
    if body.instruction is not None:
        if len(body.instruction) > limits.max_instruction_chars:
            raise HTTPException(413, f"the instruction has {len(body.instruction)} characters; at most "
                                     f"{limits.max_instruction_chars}")
        check_text(body.instruction, "the instruction")
    return texts


def bind_address(host: str) -> tuple[str, bool]:
    """``host`` as an address to bind and whether it is loopback: an IP address, or a name resolved
    now (before any model loads), so that a bad one is a one-line error at once."""
    import ipaddress
    import socket

    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            address = ipaddress.ip_address(socket.getaddrinfo(host, None)[0][4][0])
        except (OSError, ValueError):
            raise InputError(f"--host {host!r} is neither an IP address nor a name this machine resolves") from None
    return host, address.is_loopback


def read_token(token_file: str | Path | None) -> str | None:
    """The bearer token from ``token_file`` (its first line) or from ``LLMRET_SERVE_TOKEN``: never from a
    flag, which every user of the machine sees in the process list."""
    import os

    if token_file is not None:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip().split("\n")[0].strip()
        except OSError as exc:
            raise InputError(f"{token_file}: cannot read the token file ({exc.strerror})") from None
        if not token:
            raise InputError(f"{token_file}: the token file is empty")
        return token
    return os.environ.get("LLMRET_SERVE_TOKEN") or None


def check_corpus(index: LoadedIndex, corpus: dict[str, str], source: str) -> None:
    """Refuse a corpus that is not the index's: every indexed id must have its text there (a Seismic index
    keeps no id list outside its own binary: there the corpus must hold at least as many documents)."""
    if not all(hasattr(part, "ids") for part in index.searcher.indexes):
        documents = int(index.searcher.meta.get("documents") or 0)
        if len(corpus) < documents:
            raise InputError(f"{source}: {len(corpus)} documents, fewer than the {documents} of index '{index.name}': "
                             "it is not the corpus the index was built from")
        return
    ids = [doc for part in index.searcher.indexes for doc in part.ids]
    missing = [doc for doc in ids if doc not in corpus]
    if missing:
        raise InputError(f"{source}: {len(missing)} of the {len(ids)} documents of index '{index.name}' are not in "
                         f"this corpus (e.g. {', '.join(missing[:3])}): it is not the corpus the index was built from")


def server_config(app: Any, host: str, port: int, bounds: Bounds | None = None) -> Any:
    """uvicorn's configuration with llmret's bounds: each request within ``request_timeout``, at most
    ``max_connections`` open (and fewer than the open-file limit allows; uvicorn's own 503 only past twice
    that, as connections shed wait a loop turn to leave), keep-alive 5 s, and a flood of failed accepts
    logged once a minute."""
    import resource

    bounds = bounds or Bounds()
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    connections = min(bounds.max_connections, max(8, soft - 64))  # file handles left for the indexes and logs
    logging.getLogger("asyncio").addFilter(AcceptErrorsOnce())
    limited = Bounds(bounds.request_timeout, bounds.max_body_bytes, connections)
    return uvicorn.Config(app, host=host, port=port, log_level="warning", http=protocol_class(limited),
                          timeout_keep_alive=5, limit_concurrency=2 * connections, h11_max_incomplete_event_size=16384)


def serve(index_dirs: list[str | Path], *, corpora: dict[str, str] | None = None, hybrids: dict[str, list[str]] | None = None,
          host: str = "127.0.0.1", port: int = 8000, token_file: str | Path | None = None, batching: bool = True,
          max_batch: int = 32, max_wait: float = 0.005, max_k: int = 1000, allowed_hosts: list[str] | None = None,
          bounds: Bounds | None = None, quiet: bool = False) -> None:
    """Serve saved indexes (each named by its folder) until stopped: ``corpora`` maps an index's name to its
    corpus (a data spec: passage text in answers), ``hybrids`` a new name to the served indexes it fuses;
    the token comes from ``token_file`` or ``LLMRET_SERVE_TOKEN``; ``allowed_hosts``: Host names answered
    besides the bound one's own; ``quiet``: no access log."""
    host, loopback = bind_address(host)  # before any model loads
    token = read_token(token_file)
    names = [Path(folder).resolve().name for folder in index_dirs]
    unknown = sorted(set(corpora or {}) - set(names))
    if unknown:
        raise InputError(f"a corpus is given for {', '.join(unknown)}, which is no served index ({', '.join(names)})")
    if max_wait < 0:
        raise InputError(f"the batch wait must be at least 0 ms, not {1000 * max_wait:g}")
    texts = {name: {doc.id: doc.full_text() for doc in load_corpus(spec)} for name, spec in (corpora or {}).items()}
    indexes = [LoadedIndex(name, Path(folder), texts.get(name), batching, max_batch, max_wait)
               for name, folder in zip(names, index_dirs)]
    for index in indexes:
        if index.corpus is not None:
            check_corpus(index, index.corpus, (corpora or {})[index.name])
    if not loopback and not token:
        log.warning("serving on %s without a token: anyone who can reach it can search", host)
    app = create_app(indexes, Limits(max_k=max_k, max_batch=max_batch), token=token, hybrids=hybrids,
                     hosts=hosts_for(host, allowed_hosts or ()), bounds=bounds, access_log=not quiet)
    Server(server_config(app, host, port, bounds)).run()


class Server(uvicorn.Server):
    """uvicorn's server, saying where it listens once it does (uvicorn's own line sits behind its log
    level, kept at warnings to hide the rest of its start-up chatter)."""

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            for server in self.servers:
                for sock in server.sockets:
                    host, port = sock.getsockname()[:2]
                    shown = f"[{host}]" if ":" in host else host
                    log.info("listening on http://%s:%d (the search page at /, the API's schema at /docs)", shown, port)
