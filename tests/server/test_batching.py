"""The Batcher: requests queued while the model is busy become one call per kind of work, results go back to the
right requests, one bad request fails alone, the queue is bounded, requests that gave up are skipped."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from qwen3_rag.server.batching import Batcher, Overloaded

pytestmark = pytest.mark.asyncio


class Model:
    """Doubles numbers; records each call; holds the first call until ``release`` is set; refuses negatives."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, list[int]]] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, key: Any, items: list[int]) -> list[int]:
        self.entered.set()
        assert self.release.wait(30)
        self.calls.append((key, list(items)))
        if any(i < 0 for i in items):
            raise ValueError(f"negative input in {items}")
        return [2 * i for i in items]


@pytest.fixture()
def executor():
    with ThreadPoolExecutor(1) as pool:
        yield pool


async def _started(model: Model, executor: ThreadPoolExecutor, **options: Any) -> Batcher:
    settings = {"max_items": 100, "max_wait": 0.0, "max_queue": 1000, **options}
    batcher = Batcher(model, executor, **settings)
    batcher.start()
    return batcher


async def _hold(model: Model, batcher: Batcher) -> asyncio.Task[Any]:
    """A first request that holds the model (its call is running), so that the next ones queue."""
    first = asyncio.ensure_future(batcher.submit("k", [0]))
    await asyncio.get_running_loop().run_in_executor(None, model.entered.wait, 30)
    return first


async def test_requests_queued_meanwhile_become_one_call(executor):
    model = Model()
    batcher = await _started(model, executor)
    first = await _hold(model, batcher)
    rest = [asyncio.ensure_future(batcher.submit("k", [i, i + 100])) for i in range(1, 6)]
    await asyncio.sleep(0)
    assert batcher.depth == 10
    model.release.set()
    assert await first == [0]
    assert [await r for r in rest] == [[2 * i, 2 * i + 200] for i in range(1, 6)]
    assert [len(items) for _, items in model.calls] == [1, 10]
    await batcher.stop()


async def test_each_kind_of_work_gets_its_own_call(executor):
    model = Model()
    batcher = await _started(model, executor)
    first = await _hold(model, batcher)
    a, b, c = (asyncio.ensure_future(batcher.submit(key, [n])) for key, n in (("q", 1), ("d", 2), ("q", 3)))
    await asyncio.sleep(0)
    model.release.set()
    assert [await first, await a, await b, await c] == [[0], [2], [4], [6]]
    assert model.calls[1:] == [("q", [1, 3]), ("d", [2])]
    await batcher.stop()


async def test_one_bad_request_fails_alone(executor):
    model = Model()
    batcher = await _started(model, executor)
    first = await _hold(model, batcher)
    good, bad, other = (asyncio.ensure_future(batcher.submit("k", items)) for items in ([1], [-1], [2]))
    await asyncio.sleep(0)
    model.release.set()
    await first
    assert await good == [2] and await other == [4]
    with pytest.raises(ValueError, match="negative"):
        await bad
    await batcher.stop()


async def test_the_queue_is_bounded(executor):
    model = Model()
    batcher = await _started(model, executor, max_queue=4)
    first = await _hold(model, batcher)
    queued = asyncio.ensure_future(batcher.submit("k", [1, 2, 3]))
    await asyncio.sleep(0)
    with pytest.raises(Overloaded, match="queue is full") as refused:
        await batcher.submit("k", [4, 5])
    assert refused.value.retry_after >= 1
    assert await batcher.submit("k", []) == []
    model.release.set()
    assert await first == [0] and await queued == [2, 4, 6]
    await batcher.stop()


async def test_requests_that_gave_up_are_not_computed(executor):
    model = Model()
    batcher = await _started(model, executor)
    first = await _hold(model, batcher)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(batcher.submit("k", [7]), 0.01)
    kept = asyncio.ensure_future(batcher.submit("k", [8]))
    await asyncio.sleep(0)
    model.release.set()
    assert await first == [0] and await kept == [16]
    assert [items for _, items in model.calls] == [[0], [8]]
    await batcher.stop()


async def test_batches_respect_max_items(executor):
    model = Model()
    batcher = await _started(model, executor, max_items=4)
    first = await _hold(model, batcher)
    jobs = [asyncio.ensure_future(batcher.submit("k", items)) for items in ([1, 2], [3, 4], [5], [6, 7, 8, 9, 10])]
    await asyncio.sleep(0)
    model.release.set()
    await first
    assert [await j for j in jobs] == [[2, 4], [6, 8], [10], [12, 14, 16, 18, 20]]
    assert [items for _, items in model.calls[1:]] == [[1, 2, 3, 4], [5], [6, 7, 8, 9, 10]]
    await batcher.stop()


async def test_stopping_fails_what_still_waits(executor):
    model = Model()
    batcher = await _started(model, executor)
    first = await _hold(model, batcher)
    waiting = asyncio.ensure_future(batcher.submit("k", [1]))
    await asyncio.sleep(0)
    await batcher.stop()
    model.release.set()
    for request in (first, waiting):
        with pytest.raises(RuntimeError, match="shutting down"):
            await request
