"""Dynamic batching: concurrent requests for one model become one model call.

A :class:`ModelSlot` owns one model and one thread that runs it (the event loop never waits for a model, so
``/health`` answers while a batch runs; the model's tokenizer is only ever used from that thread). Its
:class:`Batcher` queues the texts of every request; when the model is free it takes what is queued (after waiting
``batch_wait_ms`` for company when the model was idle), up to ``max_batch`` texts, and makes one call per kind of
work (documents, queries with one instruction, rerank pairs with one instruction). The model's own batching then
sorts the texts by length and splits them by its token budget, so a batch of many requests is computed exactly as
one call with all their texts: each result equals the result of the text embedded alone, up to float rounding.

The queue is bounded: a request that would overflow it fails at once with :class:`Overloaded` (HTTP 429).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np

from qwen3_rag.protocols import KnowsItsModel, TextEmbedder, TokenCounter
from qwen3_rag.retrieval.remote import rank_documents
from qwen3_rag.types import RerankResult

logger = logging.getLogger(__name__)

__all__ = ["BatchedEmbedder", "BatchedReranker", "Batcher", "ModelSlot", "Overloaded"]

T = TypeVar("T")


class Overloaded(Exception):
    """The model's queue is full; the caller should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Job:
    key: Hashable
    items: list[Any]
    future: asyncio.Future[Sequence[Any]]


class Batcher:
    """Coalesce concurrent :meth:`submit` calls into batches run by ``run(key, items)`` on ``executor``.

    Args:
        run: Computes the results of ``items`` (one per item, in order) for one kind of work ``key``.
        executor: Where ``run`` runs (the model's one thread).
        max_items: Most items in one call (a larger request is one call of its own).
        max_wait: Seconds an idle model waits for more requests before it runs.
        max_queue: Most items waiting; beyond it :meth:`submit` raises :class:`Overloaded`.
        on_depth: Called with the number of items waiting whenever it changes.
        on_batch: Called with the size of each call.
    """

    def __init__(self, run: Callable[[Hashable, list[Any]], Sequence[Any]], executor: ThreadPoolExecutor, *,
                 max_items: int, max_wait: float, max_queue: int, on_depth: Callable[[int], None] | None = None,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self._run_fn = run
        self._executor = executor
        self.max_items = max_items
        self.max_wait = max_wait
        self.max_queue = max_queue
        self._on_depth = on_depth or (lambda n: None)
        self._on_batch = on_batch or (lambda n: None)
        self._jobs: deque[_Job] = deque()
        self._running: list[_Job] = []
        self._queued = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def depth(self) -> int:
        """Items waiting for the model."""
        return self._queued

    def start(self) -> None:
        """Start taking work (on the running event loop)."""
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop; requests still waiting fail (a graceful shutdown has let the server finish them first)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for job in [*self._running, *self._jobs]:
            _fail(job, RuntimeError("the server is shutting down"))
        self._jobs.clear()
        self._queued = 0

    async def submit(self, key: Hashable, items: Sequence[Any]) -> Sequence[Any]:
        """The results of ``items`` (one per item), computed in a batch with whatever else is queued.

        Raises:
            Overloaded: the queue holds ``max_queue`` items already.
        """
        if not items:
            return []
        if self._wake is None:
            raise RuntimeError("the batcher was not started")
        if self._queued + len(items) > self.max_queue:
            raise Overloaded(f"the model's queue is full ({self._queued} waiting, at most {self.max_queue}); "
                             "retry shortly")
        future: asyncio.Future[Sequence[Any]] = asyncio.get_running_loop().create_future()
        self._jobs.append(_Job(key, list(items), future))
        self._queued += len(items)
        self._on_depth(self._queued)
        self._wake.set()
        return await future

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            if not self._jobs:
                self._wake.clear()
                await self._wake.wait()
                if self.max_wait > 0 and self._queued < self.max_items:
                    await asyncio.sleep(self.max_wait)  # the model was idle: let concurrent requests join
            self._running = self._take()
            if self._running:
                await self._run(self._running)
            self._running = []

    def _take(self) -> list[_Job]:
        taken: list[_Job] = []
        n = 0
        while self._jobs and (not taken or n + len(self._jobs[0].items) <= self.max_items):
            job = self._jobs.popleft()
            self._queued -= len(job.items)
            if job.future.done():  # its request timed out or went away while it waited
                continue
            taken.append(job)
            n += len(job.items)
        self._on_depth(self._queued)
        return taken

    async def _run(self, jobs: list[_Job]) -> None:
        groups: dict[Hashable, list[_Job]] = {}
        for job in jobs:
            groups.setdefault(job.key, []).append(job)
        for key, group in groups.items():
            try:
                results = await self._call(key, [item for job in group for item in job.items])
            except Exception as exc:
                if len(group) == 1:
                    _fail(group[0], exc)
                else:  # one request's bad input must not fail the others: run each alone
                    for job in group:
                        await self._run([job])
                continue
            start = 0
            for job in group:
                end = start + len(job.items)
                if not job.future.done():
                    job.future.set_result(results[start:end])
                start = end

    async def _call(self, key: Hashable, items: list[Any]) -> Sequence[Any]:
        self._on_batch(len(items))
        results = await asyncio.get_running_loop().run_in_executor(self._executor, self._run_fn, key, items)
        if len(results) != len(items):
            raise RuntimeError(f"the model returned {len(results)} results for {len(items)} inputs")
        return results


def _fail(job: _Job, exc: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(exc)


class ModelSlot:
    """One served model: its thread, its batcher, the names clients use for it.

    Args:
        model: A :class:`~qwen3_rag.protocols.TextEmbedder` (``kind="embed"``) or a
            :class:`~qwen3_rag.protocols.PairScorer` (``kind="rerank"``).
        kind: ``"embed"`` or ``"rerank"``.
        name: The name ``/v1/models`` lists.
        max_batch, batch_wait_ms, max_queue: See :class:`~qwen3_rag.server.config.ServerConfig`.
        on_depth, on_batch, on_tokens: Metrics callbacks (queue depth, batch size, tokens embedded).
    """

    def __init__(self, model: Any, kind: str, name: str, *, max_batch: int, batch_wait_ms: float, max_queue: int,
                 on_depth: Callable[[int], None] | None = None, on_batch: Callable[[int], None] | None = None,
                 on_tokens: Callable[[int], None] | None = None) -> None:
        self.model = model
        self.kind = kind
        self.name = name
        self._on_tokens = on_tokens or (lambda n: None)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"qwen3-rag-{kind}")
        run = self._embed if kind == "embed" else self._score
        self.batcher = Batcher(run, self.executor, max_items=max_batch, max_wait=batch_wait_ms / 1000,
                               max_queue=max_queue, on_depth=on_depth, on_batch=on_batch)
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
        self.executor.shutdown(wait=True)

    def _embed(self, key: Hashable, texts: list[str]) -> list[tuple[np.ndarray, int]]:
        kind, instruction = cast(tuple[str, "str | None"], key)
        model: TextEmbedder = self.model
        vectors = (model.embed_documents(texts) if kind == "document"
                   else model.embed_queries(texts, instruction=instruction))
        counts = model.count_tokens(texts) if isinstance(model, TokenCounter) else [0] * len(texts)
        self._on_tokens(sum(counts))
        return list(zip(np.asarray(vectors, dtype=np.float32), counts, strict=True))

    def _score(self, key: Hashable, pairs: list[tuple[str, str]]) -> list[float]:
        _, instruction = cast(tuple[str, "str | None"], key)
        return [float(s) for s in self.model.score_pairs(pairs, instruction=instruction)]

    async def embed(self, texts: Sequence[str], *, query: bool = False,
                    instruction: str | None = None) -> Sequence[tuple[np.ndarray, int]]:
        """``(vector, tokens)`` of each text, batched with concurrent requests."""
        return await self.batcher.submit(("query", instruction) if query else ("document", None), texts)

    async def score(self, pairs: Sequence[tuple[str, str]], instruction: str | None = None) -> Sequence[float]:
        """The reranker's score of each (query, document) pair, batched with concurrent requests."""
        return await self.batcher.submit(("rerank", instruction), pairs)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the model's thread (work that uses the model's tokenizer)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: fn(*args, **kwargs))

    def wait(self, coroutine: Any) -> Any:
        """From a worker thread: the result of one of this slot's coroutines, run on the event loop."""
        if self._loop is None:
            raise RuntimeError("the model slot was not started")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            raise RuntimeError("wait() blocks: call it from a worker thread, not the event loop")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()


class BatchedEmbedder:
    """A :class:`~qwen3_rag.protocols.TextEmbedder` for worker threads (the Retriever, the write loop) whose texts
    join the slot's batches: the same vectors as the slot's model, computed with concurrent requests."""

    def __init__(self, slot: ModelSlot) -> None:
        self._slot = slot
        self._model: TextEmbedder = slot.model

    @property
    def dim(self) -> int:
        return self._model.dim

    def describe(self) -> dict[str, Any]:
        return self._model.describe()

    def same_model(self, fingerprint: str) -> bool:
        return isinstance(self._model, KnowsItsModel) and self._model.same_model(fingerprint)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._vectors(self._slot.wait(self._slot.embed(list(texts))))

    def embed_queries(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        return self._vectors(self._slot.wait(self._slot.embed(list(texts), query=True, instruction=instruction)))

    def _vectors(self, rows: Sequence[tuple[np.ndarray, int]]) -> np.ndarray:
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([vector for vector, _ in rows])


class BatchedReranker:
    """A :class:`~qwen3_rag.protocols.PairScorer` for worker threads whose pairs join the slot's batches."""

    def __init__(self, slot: ModelSlot) -> None:
        self._slot = slot

    def score_pairs(self, pairs: Sequence[tuple[str, str]], instruction: str | None = None) -> list[float]:
        return list(self._slot.wait(self._slot.score(list(pairs), instruction)))

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None,
               instruction: str | None = None) -> list[RerankResult]:
        docs = list(documents)
        return rank_documents(self.score_pairs([(query, d) for d in docs], instruction), docs, top_n)
