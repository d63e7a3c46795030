"""The running server's state: a thread and a batcher per model, and per index its lock, its
:class:`~qwen3_rag.Retriever` and its chunker.

A local index is not safe to use from several threads at once, so each served index sits behind a
:class:`SerializedIndex`: every operation on it, and every ``reading()`` / ``transaction()`` block, holds the index's
lock. The model work of a search or a write (embedding, reranking) happens outside the lock, in the models' own
threads, batched with other requests.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from qwen3_rag.indexers.bm25 import BM25Config
from qwen3_rag.indexers.chunking import Chunker
from qwen3_rag.pipelines.search import Retriever
from qwen3_rag.protocols import StorageBackend
from qwen3_rag.server.batching import BatchedEmbedder, BatchedReranker, ModelSlot
from qwen3_rag.server.config import ServerConfig
from qwen3_rag.server.resources import OpenIndex, Resources, served_name

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["NotServed", "Runtime", "SerializedIndex", "ServedIndex"]


class NotServed(LookupError):
    """A model or index name that the server does not serve (answered 404)."""


class SerializedIndex:
    """An index whose operations run one at a time: each call, and each ``reading()`` or ``transaction()`` block,
    holds ``lock`` (reentrant, so the calls inside a block go through)."""

    def __init__(self, index: StorageBackend, lock: threading.RLock | None = None) -> None:
        self._index = index
        self._lock = lock or threading.RLock()

    def __getattr__(self, name: str) -> Any:
        with self._lock:  # properties such as ``manifest`` read the store
            value = getattr(self._index, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def serialized(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return serialized

    @contextmanager
    def reading(self) -> Iterator[SerializedIndex]:
        with self._lock, self._index.reading():
            yield self

    @contextmanager
    def transaction(self, *, publish: bool = True) -> Iterator[SerializedIndex]:
        with self._lock, self._index.transaction(publish=publish):
            yield self


@dataclass
class ServedIndex:
    """One served index: ``index`` (serialized), its embedder's slot, the retriever and chunker requests use, and
    ``write_lock``, which lets one write request at a time through the write loop."""

    name: str
    opened: OpenIndex
    index: StorageBackend
    slot: ModelSlot
    retriever: Retriever
    chunker: Chunker
    write_lock: threading.Lock
    keyword_config: BM25Config  # what highlights follow: the index's BM25 tokenisation, read at start

    @property
    def writable(self) -> bool:
        return self.opened.writable


class Runtime:
    """Slots for the models of ``resources`` and the served indexes, built before the server answers requests.

    Args:
        resources: What :func:`~qwen3_rag.server.resources.load_resources` loaded.
        config: The limits and batching settings.
        observe: Makes the metrics callbacks of a slot: ``observe(kind, name)`` returns
            ``(on_depth, on_batch, on_tokens)``.
    """

    def __init__(self, resources: Resources, config: ServerConfig,
                 observe: Callable[[str, str], tuple[Callable[[int], None], ...]] | None = None) -> None:
        self.resources = resources
        self.config = config
        #: Threads for index work (searches, writes), which waits on the models' batchers and the index locks.
        self.workers = ThreadPoolExecutor(max_workers=32, thread_name_prefix="qwen3-rag-worker")

        def slot(model: Any, kind: str, name: str | None = None) -> ModelSlot:
            name = name or served_name(model)
            callbacks = observe(kind, name) if observe is not None else (None, None, None)
            return ModelSlot(model, kind, name, max_batch=config.max_batch, batch_wait_ms=config.batch_wait_ms,
                             max_queue=config.max_queue, on_depth=callbacks[0], on_batch=callbacks[1],
                             on_tokens=callbacks[2])

        self.embedders = [slot(embedder, "embed", resources.model_name if i == 0 else None)
                          for i, embedder in enumerate(resources.embedders)]
        self.reranker = slot(resources.reranker, "rerank") if resources.reranker is not None else None
        self.reranker_proxy = BatchedReranker(self.reranker) if self.reranker is not None else None
        by_model = {id(s.model): s for s in self.embedders}
        self.indexes = {opened.name: _serve(opened, by_model[id(opened.embedder)]) for opened in resources.indexes}

    @property
    def slots(self) -> list[ModelSlot]:
        return self.embedders + ([self.reranker] if self.reranker is not None else [])

    def start(self) -> None:
        """Start every model's batcher (on the running event loop)."""
        for slot in self.slots:
            slot.start()

    async def stop(self) -> None:
        """Stop the batchers and model threads, then close the indexes."""
        for slot in self.slots:
            await slot.stop()
        self.workers.shutdown(wait=True)
        self.resources.close()

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on a worker thread (index work; a cancelled request stops waiting at once)."""
        return await asyncio.get_running_loop().run_in_executor(self.workers, functools.partial(fn, *args, **kwargs))

    def embedder(self, model: str | None) -> ModelSlot:
        """The embedding slot clients call ``model`` (its served name, id, or the last part of its path); None: the
        default.

        Raises:
            NotServed: no served embedding model has that name.
        """
        if model is None:
            return self.embedders[0]
        for slot in self.embedders:
            model_id = served_name(slot.model)
            if model in (slot.name, model_id, model_id.rstrip("/").rsplit("/", 1)[-1]):
                return slot
        names = ", ".join(repr(s.name) for s in self.embedders)
        raise NotServed(f"the model {model!r} is not served here; this server embeds with {names}")

    def index(self, name: str) -> ServedIndex:
        """The served index called ``name``.

        Raises:
            NotServed: no index of that name is served (names are only ever looked up here, never opened).
        """
        served = self.indexes.get(name)
        if served is None:
            known = ", ".join(repr(n) for n in self.indexes) or "none"
            raise NotServed(f"no index named {name!r} is served here (served: {known})")
        return served


def _serve(opened: OpenIndex, slot: ModelSlot) -> ServedIndex:
    index = cast(StorageBackend, SerializedIndex(opened.index))
    chunking = opened.index.chunking
    chunker = Chunker.for_embedder(opened.embedder, chunking.chunk_size, chunking.chunk_overlap)
    chunker.count_tokens("warm-up")  # makes the chunker's own tokenizer copy now, before the model thread runs
    retriever = Retriever(index, embedder=BatchedEmbedder(slot), query_cache_size=0)
    return ServedIndex(opened.name, opened, index, slot, retriever, chunker, threading.Lock(),
                       opened.index.keyword_config)
