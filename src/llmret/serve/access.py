"""The access log: one line per request (method, path, status, milliseconds), as users of a web service
expect to see in its terminal; ``llmret serve --quiet`` leaves it out.

uvicorn's own access log gives no duration and sits behind its log level, which llmret keeps at warnings
to hide its start-up chatter; this middleware is outermost, so requests the guard refuses are logged too.
"""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("llmret.serve.access")


class AccessLog:
    """ASGI middleware logging each HTTP request once its answer is sent (or it failed)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 0

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            log.info("%s %s %s %.1f ms", scope["method"], scope["path"], status or "-",
                     1000 * (time.perf_counter() - started))
