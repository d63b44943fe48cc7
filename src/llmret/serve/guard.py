"""What stands between the network and the search service: bounded connections, requests and bodies,
the token checked before a body is read, and only the host names the service is bound to.

uvicorn times out idle keep-alive connections but not a request whose headers or body trickle in, and it
reads any body size; an ASGI app only sees a request once its headers are complete. So the two limits
that must act earlier are here, in a protocol class given to uvicorn (:class:`GuardedH11Protocol`: every
request, headers and body, must arrive within ``request_timeout``, and past ``max_connections`` the
oldest connection still sending its request is dropped for the new one), and the rest in a plain ASGI
middleware (:class:`Guard`: Host check, token, body size), which answers in the service's one error
format, ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from llmret.serve.checks import error_body

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/", "/health"})  # the static page and liveness: no data behind them


@dataclass
class Bounds:
    """How much a client may ask of the server: seconds to send a whole request, bytes of a body,
    connections held at once."""

    request_timeout: float = 10.0
    max_body_bytes: int = 1 << 20
    max_connections: int = 512


def protocol_class(bounds: Bounds) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the request deadline and the connection bound of ``bounds``."""

    class Bounded(GuardedH11Protocol):
        request_timeout = bounds.request_timeout
        max_connections = bounds.max_connections

    return Bounded


class GuardedH11Protocol(H11Protocol):
    """An HTTP/1.1 connection whose request (headers and body) must arrive within ``request_timeout``
    seconds of its first byte, or of the connection for the first request; a connection over
    ``max_connections`` drops the one that has been sending its request longest (a slow client never
    holds a place a prompt one needs), and only when none is sending one, the oldest idle kept-alive
    connection: a prompt client between two requests is never dropped for a slow one."""

    request_timeout = 10.0
    max_connections = 512

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._opened = time.monotonic()
        self._started: float | None = self._opened  # when the request being received began; None between requests
        self._deadline: asyncio.TimerHandle | None = self.loop.call_later(self.request_timeout, self._too_slow)
        open_ = [c for c in self.connections if not c.transport.is_closing()]  # closed ones leave on the next turn
        if len(open_) > self.max_connections:
            waiting = [c for c in open_ if isinstance(c, GuardedH11Protocol) and c is not self and c._receiving()]
            sending = [c for c in waiting if c._started is not None]
            if sending or waiting:
                oldest = min(sending, key=lambda c: c._started) if sending else min(waiting, key=lambda c: c._opened)
                oldest.transport.close()
                shed("connections over the limit of %d: the oldest still sending its request was dropped",
                     self.max_connections)

    def _receiving(self) -> bool:
        return self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and (self.cycle is None or self.cycle.response_complete)

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:  # the next request on a kept-alive connection
            self._deadline = self.loop.call_later(self.request_timeout, self._too_slow)
            self._started = time.monotonic()
        super().data_received(data)
        if self._deadline is not None and self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            self._deadline.cancel()  # the whole request is in
            self._deadline = self._started = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            shed("requests not sent within %.0f s were dropped", self.request_timeout)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)


class _Shedding:
    """One log line per minute for each kind of shed load, with how many since the last: a flood of
    slow clients must not become a flood of log lines."""

    def __init__(self, every: float = 60.0) -> None:
        self.every, self.last, self.count = every, {}, {}

    def __call__(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        self.count[message] = self.count.get(message, 0) + 1
        if now - self.last.get(message, -self.every) >= self.every:
            log.warning(message + " (%d since the last such line)", *args, self.count[message])
            self.last[message], self.count[message] = now, 0


shed = _Shedding()


class AcceptErrorsOnce(logging.Filter):
    """asyncio logs every failed ``accept()`` (``Too many open files`` under a flood) with its traceback:
    let one through a minute, without the traceback."""

    def __init__(self, every: float = 60.0) -> None:
        super().__init__()
        self.every, self.last, self.dropped = every, -every, 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "accept" not in record.getMessage():
            return True
        now = time.monotonic()
        if now - self.last < self.every:
            self.dropped += 1
            return False
        record.msg, record.args, record.exc_info = f"{record.getMessage()} ({self.dropped} more since the last)", (), None
        self.last, self.dropped = now, 0
        return True


def hosts_for(bound: str, extra: Iterable[str] = ()) -> set[str]:
    """The Host header values a service bound to ``bound`` answers: its own names (loopback: 127.0.0.1,
    localhost, ::1) and ``extra``; ``*`` (any) only for a wildcard bind without extra names."""
    names = set(extra)
    if bound in ("0.0.0.0", "::"):
        return names or {"*"}
    if bound in ("127.0.0.1", "localhost", "::1"):
        return names | {"127.0.0.1", "localhost", "::1", "[::1]"}
    return names | {bound, f"[{bound}]"}


def _host_name(header: str) -> str:
    """The host of a Host header without its port (``[::1]:8000`` -> ``[::1]``)."""
    if header.startswith("["):
        return header[:header.index("]") + 1] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    """ASGI middleware: a request to a host name the service does not answer, without the token (on
    any path but the page and /health), or with a body over ``max_body_bytes`` is refused before the
    app sees it, and before the body is read."""

    def __init__(self, app: ASGIApp, *, token: str | None, hosts: set[str], max_body_bytes: int) -> None:
        self.app, self.token, self.hosts, self.max_body_bytes = app, token, hosts, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = _host_name(headers.get("host", ""))
        if "*" not in self.hosts and host.lower() not in self.hosts:
            await error(send, scope, 421, f"this service does not answer for host '{host}' (it answers "
                                   f"{', '.join(sorted(self.hosts))}; llmret serve --allowed-host adds one)")
            return
        if self.token is not None and scope["path"] not in OPEN_PATHS:
            given = headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                await error(send, scope, 401, "missing or wrong bearer token (Authorization: Bearer TOKEN)")
                return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await error(send, scope, 413, f"request body over {self.max_body_bytes} bytes")
            return
        body, more, received = [], True, 0
        while more and scope["method"] in ("POST", "PUT", "PATCH"):
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            received += len(message.get("body", b""))
            if received > self.max_body_bytes:  # chunked: no length given up front
                await error(send, scope, 413, f"request body over {self.max_body_bytes} bytes")
                return
            body.append(message.get("body", b""))
            more = message.get("more_body", False)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        whole = b"".join(body)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def error(send: Send, scope: Scope, status: int, message: str) -> None:
    """Answer ``message`` with ``status`` in the service's error format (:func:`~llmret.serve.checks.error_body`)."""
    body = json.dumps(error_body(scope["path"], status, message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
