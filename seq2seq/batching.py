"""Dynamic batching for the server: requests that arrive close together are decoded as one
batch.

One worker (an asyncio task) takes the first waiting request, then gathers more until the
batch holds `max_batch` sentences or the first request has waited `max_wait` seconds. Under
load it waits longer, for the clients of the last batch to come back: clients that send again
once answered (a person at the page, a service's workers) come back together, but spread
over the milliseconds the event loop takes to answer them, and a decoder batch of 64 costs
little more than one of 32. That wait is bounded by a quarter of the last batch's
decoding time, so it adds at most a quarter to a request's latency.
Requests with the same decoding settings become one `translate_nbest` call, run on one
decoder thread so that the event loop keeps accepting requests meanwhile. Search is
batch-invariant (a sentence is decoded the same alone or in any batch), so a request gets
what it would get alone. If a batch fails, its requests are retried one by one and only
the one that fails again gets the error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

from seq2seq.config import DecodeConfig
from seq2seq.translation import Translation

TranslateFn = Callable[[list[str], DecodeConfig], list[list[Translation]]]


class Batched(NamedTuple):
    candidates: list[list[Translation]]  # per text, the n best
    batch_size: int  # sentences in the decoder call that produced them


@dataclass
class _Job:
    texts: list[str]
    decode: DecodeConfig
    future: asyncio.Future[Batched]
    arrived: float = field(default_factory=lambda: asyncio.get_running_loop().time())


class Batcher:
    """`await batcher.translate(texts, decode)` between `start()` and `stop()`, from the
    event loop that started it."""

    def __init__(self, translate: TranslateFn, max_batch: int, max_wait: float):
        self._translate = translate
        self.max_batch, self.max_wait = max_batch, max_wait
        self._jobs: deque[_Job] = deque()
        self._arrived: asyncio.Event | None = None  # bound to the loop that starts the worker
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        # The last batch: its requests, its decoding time and when it ended (loop time).
        self._last_requests, self._last_seconds, self._last_end = 0, 0.0, 0.0

    def start(self) -> None:
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="decoder")
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stops the worker; the server calls this after its last request has finished."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def translate(self, texts: list[str], decode: DecodeConfig) -> Batched:
        """The n best translations of each text, decoded in a batch with other requests."""
        job = _Job(texts, decode, asyncio.get_running_loop().create_future())
        self._jobs.append(job)
        self._arrived.set()
        return await job.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [job for job in await self._gather() if not job.future.done()]  # not gone
            groups: dict[DecodeConfig, list[_Job]] = {}  # one decoder call per settings
            for job in jobs:
                groups.setdefault(job.decode, []).append(job)
            started = loop.time()
            for decode, group in groups.items():
                await self._decode(group, decode)
            self._last_end = loop.time()
            self._last_requests, self._last_seconds = len(jobs), self._last_end - started

    async def _gather(self) -> list[_Job]:
        """The next batch: the oldest request, then more until `max_batch` sentences or
        until it has waited `max_wait` (time spent waiting for the decoder counts), or,
        while the clients just answered have not all come back, a quarter of the last
        batch's decoding time."""
        while not self._jobs:
            self._arrived.clear()
            await self._arrived.wait()
        loop = asyncio.get_running_loop()
        # Those that queued while the last batch decoded, and its clients, coming back (a
        # request that came after it ended may be one of them: not counted twice).
        expected = sum(job.arrived < self._last_end for job in self._jobs) + self._last_requests
        taken = [self._jobs.popleft()]
        size = len(taken[0].texts)
        deadline = taken[0].arrived + self.max_wait
        patience = max(deadline, loop.time() + self._last_seconds / 4)  # from now
        while size < self.max_batch:
            if self._jobs:
                if size + len(self._jobs[0].texts) > self.max_batch:
                    break  # it starts the next batch
                taken.append(self._jobs.popleft())
                size += len(taken[-1].texts)
                continue
            self._arrived.clear()
            until = patience if len(taken) < expected else deadline
            try:
                await asyncio.wait_for(self._arrived.wait(), until - loop.time())
            except asyncio.TimeoutError:
                break
        return taken

    async def _decode(self, jobs: list[_Job], decode: DecodeConfig) -> None:
        texts = [text for job in jobs for text in job.texts]
        loop = asyncio.get_running_loop()
        try:
            candidates = await loop.run_in_executor(self._executor, self._translate, texts, decode)
        except Exception as error:  # any failure: the culprit alone must see it
            if len(jobs) == 1:
                _settle(jobs[0].future, error=error)
                return
            for job in jobs:
                await self._decode([job], decode)
            return
        start = 0
        for job in jobs:
            end = start + len(job.texts)
            _settle(job.future, Batched(candidates[start:end], len(texts)))
            start = end


def _settle(
    future: asyncio.Future[Batched], result: Batched | None = None, error: Exception | None = None
) -> None:
    if future.done():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
