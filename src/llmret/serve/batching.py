"""Micro-batching: queries that arrive together are encoded in one forward pass, off the event loop.

A transformer encodes 32 queries in little more time than one, so under concurrent load a service
that encodes each request alone wastes most of its compute. Requests are queued; one worker takes
what has arrived, waits at most ``max_wait`` for more (never past ``max_batch`` queries), and hands
the batch to one worker thread (torch runs one forward at a time best on a CPU, and the event loop
stays free to accept requests meanwhile). With ``enabled=False`` each request is its own batch: the
same code path, for comparison (the serving benchmark measures both).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


@dataclass
class Stats:
    """What the batcher did: requests and queries served, batches run, seconds spent working."""

    requests: int = 0
    queries: int = 0
    batches: int = 0
    failed: int = 0
    busy_seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per named part (encode, search)


@dataclass
class _Pending(Generic[Item]):
    items: list[Item]
    future: asyncio.Future


class MicroBatcher(Generic[Item, Answer]):
    """Run ``work(items) -> (answers, timings)`` (one answer per item, in order; timings: named
    durations added to :attr:`stats`) on batches of queued requests.

    A request fails alone: an answer that is an exception fails the request it belongs to, and when
    ``work`` raises for a batch of several requests each is run again by itself, so only the one that
    raises fails (one bad query never takes its batch-mates down). The worker goes on with the next.
    """

    def __init__(self, work: Callable[[list[Item]], tuple[list[Answer], dict[str, float]]], *, max_batch: int = 32,
                 max_wait: float = 0.005, enabled: bool = True, executor: ThreadPoolExecutor | None = None) -> None:
        self.work, self.max_batch, self.max_wait, self.enabled = work, max_batch, max_wait, enabled
        self.stats = Stats()
        self._queue: asyncio.Queue[_Pending[Item]] | None = None
        self._worker: asyncio.Task | None = None
        # one thread, which batchers of one model share (``executor``): one forward pass at a time
        self.executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmret-encode")

    async def submit(self, items: list[Item]) -> list[Answer]:
        """The answers for ``items`` once their batch has run (raises what the batch raised)."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(items, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0].items)
            if self.enabled:
                deadline = time.monotonic() + self.max_wait
                while size < self.max_batch:
                    timeout = deadline - time.monotonic()
                    if timeout <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(self._queue.get(), timeout)
                    except TimeoutError:
                        break
                    if size + len(nxt.items) > self.max_batch:
                        await self._run_batch(loop, batch)  # this one is full: the newcomer starts the next
                        batch, size = [nxt], len(nxt.items)
                        continue
                    batch.append(nxt)
                    size += len(nxt.items)
            await self._run_batch(loop, batch)

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending[Item]]) -> None:
        items = [item for pending in batch for item in pending.items]
        start = time.perf_counter()
        try:
            answers, timings = await loop.run_in_executor(self.executor, self.work, items)
        except Exception as exc:  # the requests get it, or each runs alone; the worker must keep serving
            self.stats.busy_seconds += time.perf_counter() - start
            if len(batch) > 1:
                for pending in batch:
                    await self._run_batch(loop, [pending])
                return
            self.stats.failed += 1
            if not batch[0].future.done():
                batch[0].future.set_exception(exc)
            return
        self.stats.busy_seconds += time.perf_counter() - start
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.queries += len(items)
        for name, seconds in timings.items():
            self.stats.timings[name] = self.stats.timings.get(name, 0.0) + seconds
        offset = 0
        for pending in batch:
            mine = answers[offset:offset + len(pending.items)]
            offset += len(pending.items)
            if pending.future.done():
                continue
            problem = next((a for a in mine if isinstance(a, BaseException)), None)
            if problem is not None:
                self.stats.failed += 1
                pending.future.set_exception(problem)
            else:
                pending.future.set_result(mine)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def describe(self) -> dict[str, Any]:
        return {"micro_batching": self.enabled, "max_batch": self.max_batch, "max_wait_ms": 1000 * self.max_wait,
                **{k: v for k, v in vars(self.stats).items()}}
