"""MicroBatcher: a batch is closed when the engine is free, so the steps that queued meanwhile run together."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from robovlm.serving.batcher import MicroBatcher


def test_steps_that_queue_while_the_engine_computes_go_into_its_next_call():
    calls: list[list[int]] = []
    busy = threading.Event()

    def run(items):
        calls.append(list(items))
        busy.set()
        time.sleep(0.05)  # the engine computes; the others queue meanwhile
        return [i * 10 for i in items]

    async def main():
        batcher = MicroBatcher(run, executor=ThreadPoolExecutor(1), max_batch_size=4)
        first = asyncio.ensure_future(batcher.submit(0))
        await asyncio.sleep(0.01)  # the lone first step ran at once, waiting for nobody
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 7)]
        return await asyncio.gather(first, *rest)

    assert asyncio.run(main()) == [0, 10, 20, 30, 40, 50, 60]
    assert calls == [[0], [1, 2, 3, 4], [5, 6]]  # up to max_batch_size, in arrival order


def test_a_failed_call_fails_its_batch_only_and_a_step_whose_client_left_is_not_computed():
    seen: list[list[str]] = []

    def run(items):
        seen.append(list(items))
        if "bad" in items:
            raise RuntimeError("engine fault")
        return [s.upper() for s in items]

    async def main():
        batcher = MicroBatcher(run, executor=ThreadPoolExecutor(1), max_batch_size=8, wait_s=0.02)
        bad = await batcher.submit("bad")
        gone = asyncio.ensure_future(batcher.submit("gone"))
        kept = asyncio.ensure_future(batcher.submit("kept"))
        await asyncio.sleep(0)
        gone.cancel()  # the robot's request ended (timeout) before its batch was closed
        return bad, await kept

    bad, kept = asyncio.run(main())
    assert isinstance(bad, RuntimeError) and kept == "KEPT"
    assert seen == [["bad"], ["kept"]]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        MicroBatcher(lambda items: items, executor=ThreadPoolExecutor(1), max_batch_size=0)
