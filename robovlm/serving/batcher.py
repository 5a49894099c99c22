"""``MicroBatcher``: the steps that arrive while the engine computes go together into its next call.

Why not Ray Serve's ``@serve.batch``: it forms a batch as soon as its wait runs out and only then queues the batch for
the engine, so under load the engine works through a line of small batches that were closed before it was free (8
robots on ``kosmos2_small``: mean batch 1.2, 600 ms in the queue). Here a batch is closed when the engine is free: it
takes everything that queued up meanwhile (up to ``max_batch_size``), so batches grow with the load by themselves,
and a lone robot waits for nobody (``wait_s`` adds an optional wait to fill a batch that is not full). Ray Serve still
does everything around it: HTTP, routing between replicas, scaling, restarts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    def __init__(
        self, run: Callable[[list[T]], list[R]], *, executor: Executor, max_batch_size: int, wait_s: float = 0.0
    ) -> None:
        """``run`` takes a batch and returns one result per item, in order (an exception as a result fails that item
        alone); it runs in ``executor``."""
        if max_batch_size < 1 or wait_s < 0:
            raise ValueError(f"max_batch_size >= 1 and wait_s >= 0, got {max_batch_size}, {wait_s}")
        self._run = run
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.wait_s = wait_s
        self._pending: list[tuple[T, asyncio.Future[R | Exception]]] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R | Exception:
        """The item's result (or the exception its batch raised), once a batch holding it has run."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._wakeup is None:  # made on the replica's own event loop, at first use
            self._wakeup = asyncio.Event()
            self._task = loop.create_task(self._serve())
        future: asyncio.Future[R | Exception] = loop.create_future()
        self._pending.append((item, future))
        self._wakeup.set()
        return await future

    async def _serve(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            if self.wait_s and len(self._pending) < self.max_batch_size:
                await asyncio.sleep(self.wait_s)
            live = [(i, f) for i, f in self._pending if not f.done()]  # a client that left is not computed
            batch, self._pending = live[: self.max_batch_size], live[self.max_batch_size :]
            if not self._pending:
                self._wakeup.clear()
            if not batch:
                continue
            try:
                results: list[R | Exception] = list(
                    await loop.run_in_executor(self._executor, self._run, [i for i, _ in batch])
                )
            except Exception as exc:  # the whole call failed: every step of the batch gets the reason
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)
