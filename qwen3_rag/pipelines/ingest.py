"""Ingestion: files and folders -> an index directory, incrementally, in bounded memory, resumable.

Documents stream from the loaders one at a time; only the chunks waiting to be embedded (at most about
``commit_every``) are held. Every ``commit_every`` chunks the store commits, so a run that is interrupted
(Ctrl-C, ``kill -9``) loses at most that batch and the next run continues where it stopped: documents whose
content hash is already stored are not embedded again, changed documents are re-embedded and replace all their
chunks, and ``prune=True`` deletes the documents whose source is gone.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen3_rag.indexers.chunking import GROUP_CHARS, GROUP_DOCUMENTS, ChunkBatch
from qwen3_rag.indexers.index import Index, PendingChunks
from qwen3_rag.indexers.loaders import LoadReport, RecordFields, iter_documents
from qwen3_rag.types import Chunk, Document

logger = logging.getLogger(__name__)

#: Chunks embedded and committed together; bounds memory and the work lost by an interruption.
DEFAULT_COMMIT_EVERY = 512
#: Documents are chunked in groups of this many (or of ``GROUP_CHARS`` characters), with one tokenizer call.
CHUNK_BATCH_DOCUMENTS = GROUP_DOCUMENTS


@dataclass
class IngestReport:
    """What an ingestion run did.

    Attributes:
        added, updated, unchanged, skipped, failed, pruned: Documents (skipped and failed count files too).
        chunks_added, chunks_removed: Chunks written and deleted.
        tokens: Tokens embedded.
        seconds: Wall time.
        failures: ``(source, reason)`` of every file or record that failed.
        skips: ``(source, reason)`` of every file skipped (binary, empty).
        timings: Seconds spent in each stage: ``load`` (reading and parsing files), ``chunk``, ``embed``,
            ``index`` (store look-ups and writes, FAISS adds), ``commit`` (transactions and the final FAISS file),
            ``tokenize`` (the model's input ids, made on the calling thread: from the token ids the chunker
            already computed, or by tokenizing when pipelined and those cannot be reused) and ``wait`` (the
            calling thread waiting for the embedder or, pipelined, the chunker). When embedding and chunking run
            beside the rest (``pipelined``), they overlap the other stages, so the stages add up to more than the
            wall time.
    """

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    pruned: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0
    tokens: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    skips: list[tuple[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("load", "chunk", "tokenize", "embed", "index", "commit", "wait"),
                                              0.0)
    )

    @property
    def embedded_nothing(self) -> bool:
        """True when the run changed nothing (a re-run on an unchanged corpus)."""
        return not (self.added or self.updated or self.pruned)

    def summary(self) -> str:
        """A few human-readable lines for the end of a run."""
        rate = self.tokens / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"documents: {self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.skipped} skipped, {self.failed} failed"
            + (f", {self.pruned} pruned" if self.pruned else ""),
            f"chunks: {self.chunks_added} added, {self.chunks_removed} removed; "
            f"{self.tokens} tokens embedded "
            f"in {self.seconds:.1f}s ({rate:,.0f} tokens/s)",
        ]
        for source, reason in self.failures:
            lines.append(f"  failed: {source}: {reason}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in (
                "added",
                "updated",
                "unchanged",
                "skipped",
                "failed",
                "pruned",
                "chunks_added",
                "chunks_removed",
                "tokens",
                "seconds",
                "timings",
            )
        }


def load_embedder(
    model: str | None,
    *,
    dim: int | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    index_path: str | os.PathLike[str] | None = None,
    compile: bool = False,
) -> Any:
    """Build the :class:`~qwen3_rag.Embedder` for an ingestion run.

    With ``model=None`` an existing index's model (and dimension) is reused, else the default Qwen3 model.
    """
    from qwen3_rag.retrieval.embedding import DEFAULT_EMBEDDING_MODEL, Embedder

    if index_path is not None and Index.exists(index_path):
        stored = Index.read_manifest(index_path)["model"]
        if model is None:
            model = stored.get("model")
            logger.info("using the index's model %s", model)
        if dim is None and stored.get("dim"):
            dim = int(stored["dim"])
    embedder = Embedder(model or DEFAULT_EMBEDDING_MODEL, device=device, batch_size=batch_size, dim=dim,
                        compile=compile)
    return embedder


def ingest(
    sources: Iterable[str | os.PathLike[str]],
    index: str | os.PathLike[str] | Index,
    *,
    embedder: Any = None,
    model: str | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    index_type: str | None = None,
    dim: int | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    compile: bool = False,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    prune: bool = False,
    record_fields: RecordFields | None = None,
    commit_every: int = DEFAULT_COMMIT_EVERY,
    show_progress: bool = False,
    attach: Sequence[Callable[[Index], Any]] = (),
    bm25: bool = True,
    pipelined: bool | None = None,
) -> IngestReport:
    """Index files and folders into an index directory (created on first use), incrementally.

    Args:
        sources: Files and folders (see :func:`~qwen3_rag.indexers.loaders.iter_documents`).
        index: The index directory, or an open writable :class:`~qwen3_rag.indexers.index.Index`.
        embedder: The embedder; default one built from ``model`` (or the index's model).
        model: Model id or local directory when no ``embedder`` is given.
        chunk_size: Tokens per chunk for a new index (default 128; an existing index keeps its own).
        chunk_overlap: Overlap in tokens for a new index (default 32).
        index_type: FAISS spec for a new index (``Flat``, ``HNSW32``, ``IVF1024,Flat``, ``IVF1024,PQ16``).
        dim: Output dimension (Matryoshka truncation) when the embedder is built here.
        device: Device for the embedder built here.
        batch_size: Embedding batch size for the embedder built here.
        compile: ``torch.compile`` the embedder built here (faster on GPUs for large corpora).
        include: Globs a file must match. exclude: Globs that drop a file.
        prune: Delete indexed documents that this run's sources no longer produce.
        record_fields: Id / text / metadata fields of .jsonl / .json / .csv records.
        commit_every: Chunks per commit.
        show_progress: Show a tqdm bar (documents, chunks, tokens/s).
        attach: Callables run on the open index before loading starts, e.g. ``BM25Sidecar.attach`` to keep a
            sidecar in step with every commit of this run.
        bm25: Build the BM25 index (for hybrid search) during ingestion and keep it in step (default on).
        pipelined: Embed each batch in a background thread, and chunk the next documents in another, while the
            calling thread reads documents and writes the previous batch; writes still happen in order on the
            calling thread. None (default): on when the embedder runs on an accelerator, where chunking is as slow
            as the model and this hides it; off on a CPU, whose cores the model already fills (see BENCHMARKS.md,
            4. Ingestion).

    Returns:
        An :class:`IngestReport`.

    Raises:
        FileNotFoundError: if a source does not exist (checked before anything is written).
        IndexMismatchError: if the index was built with another model.
    """
    paths = [Path(s) for s in sources]
    missing = [str(s) for s in paths if not s.exists()]
    if missing:
        raise FileNotFoundError(f"source(s) not found: {', '.join(missing)}")
    if commit_every < 1:
        raise ValueError(f"commit_every must be >= 1, got {commit_every}")
    started = time.perf_counter()
    owns = not isinstance(index, Index)
    if isinstance(index, Index):
        idx = index
    else:
        if embedder is None:
            embedder = load_embedder(model, dim=dim, device=device, batch_size=batch_size, index_path=index,
                                     compile=compile)
        idx = Index.open_or_create(
            index,
            embedder,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            index_type=index_type,
            dim=None,
        )
    try:
        hooks = list(attach)
        if bm25:
            from qwen3_rag.indexers.bm25 import BM25Sidecar

            if BM25Sidecar.attach not in hooks:
                hooks.insert(0, BM25Sidecar.attach)
        for hook in hooks:
            hook(idx)
        if pipelined is None:
            accelerator = getattr(idx.embedder, "device", None)
            kind = getattr(accelerator, "type", str(accelerator))
            pipelined = accelerator is not None and kind not in ("cpu", "auto")
        report = _run(idx, paths, include, exclude, prune, record_fields, commit_every, show_progress, pipelined)
    finally:
        closing = time.perf_counter()
        if owns:
            idx.close()
        closing = time.perf_counter() - closing
    report.timings["commit"] += closing
    report.seconds = time.perf_counter() - started
    logger.info("ingestion finished: %s", report.summary().replace("\n", "; "))
    return report


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(unit="doc", desc="indexing", dynamic_ncols=True)
        self.t0 = time.perf_counter()

    def update(self, docs: int, report: IngestReport) -> None:
        if self.bar is None:
            return
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        self.bar.update(docs)
        self.bar.set_postfix(
            chunks=report.chunks_added, tok_s=f"{report.tokens / elapsed:,.0f}", refresh=False
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Worker:
    """Runs one call of ``fn`` at a time, in order, in a daemon thread (so Ctrl-C never waits for it to finish)."""

    def __init__(self, fn: Callable[[list[Any]], Any], name: str) -> None:
        self._fn = fn
        self._requests: queue.SimpleQueue[tuple[Future[Any], list[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, items: list[Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._requests.put((future, items))
        return future

    def close(self) -> None:
        self._requests.put(None)

    def _loop(self) -> None:
        while (item := self._requests.get()) is not None:
            future, items = item
            try:
                future.set_result(self._fn(items))
            except BaseException as exc:  # handed to the caller through the future
                future.set_exception(exc)


def _run(
    idx: Index,
    sources: list[Path],
    include: Sequence[str],
    exclude: Sequence[str],
    prune: bool,
    record_fields: RecordFields | None,
    commit_every: int,
    show_progress: bool,
    pipelined: bool = True,
) -> IngestReport:
    if idx.chunker is None or idx.embedder is None:
        raise ValueError("ingest needs an index opened with an embedder")
    chunker, embedder = idx.chunker, idx.embedder
    report = IngestReport()
    loads = LoadReport()
    seen: set[str] = set()
    pending = PendingChunks(embedder, chunker)
    progress = _Progress(show_progress)
    timings = report.timings

    # An embedder that takes token ids is fed them: the chunker tokenizes every chunk anyway (to check its size)
    # and the embedder only adds its special tokens (ids_from_content, as each document's chunks are queued), so
    # nothing is tokenized twice. Otherwise, when pipelined, this thread tokenizes the next batch while the worker
    # only runs the model, so a GPU does not wait for the tokenizer.
    split = pending.wants_token_ids or (pipelined and callable(getattr(embedder, "embed_tokenized", None))
                                  and callable(getattr(embedder, "tokenize", None)))

    def embed(items: list[Any]) -> Any:
        t = time.perf_counter()
        vectors = getattr(embedder, "embed_tokenized" if split else "embed_documents")(items)
        timings["embed"] += time.perf_counter() - t  # one writer: the worker thread, or this one
        return vectors

    worker = _Worker(embed, "qwen3-rag-embed") if pipelined else None
    in_flight: tuple[Future[Any], list[tuple[Document, list[Chunk]]]] | None = None

    def write(batch: list[tuple[Document, list[Chunk]]], vectors: Any) -> None:
        # intermediate commits leave the FAISS file behind (rewriting it every batch would cost O(n^2));
        # close() writes it, and a run killed before that rebuilds it from the store on the next open
        t = time.perf_counter()
        with idx.batch(flush_vectors=False):
            idx.add_chunked(batch, vectors)
            written = time.perf_counter()
        timings["index"] += written - t
        timings["commit"] += time.perf_counter() - written

    def wait_for(future: Future[Any]) -> Any:
        """The result of a background call; the time this thread waits for it counts as ``wait``."""
        t = time.perf_counter()
        result = future.result()
        timings["wait"] += time.perf_counter() - t
        return result

    def drain() -> None:
        """Write the batch whose embedding is in flight (waiting for it)."""
        nonlocal in_flight
        if in_flight is not None:
            (future, batch), in_flight = in_flight, None
            write(batch, wait_for(future))

    def flush() -> None:
        nonlocal in_flight
        if not pending.batch:
            return
        batch, ids = pending.take()
        items: list[Any]
        if ids is not None:
            items = ids
        else:
            t = time.perf_counter()
            texts = [c.text for _, chunks in batch for c in chunks]
            items = embedder.tokenize(texts) if split else texts
            timings["tokenize"] += time.perf_counter() - t
        if worker is None:
            write(batch, embed(items))
            return
        future = worker.submit(items)
        drain()  # the previous batch is written while this one is embedded
        in_flight = (future, batch)

    to_chunk: list[Document] = []
    to_chunk_chars = 0

    def chunk_docs(docs: list[Document]) -> ChunkBatch:
        t = time.perf_counter()
        chunked = chunker.chunk_batch(docs, token_ids=pending.wants_token_ids)
        timings["chunk"] += time.perf_counter() - t  # one writer: the chunk worker, or this thread
        return chunked

    # Pipelined, a second thread chunks the next documents while this one writes: the tokenizer's Rust side
    # releases the GIL, so it runs beside the writes instead of between them.
    chunk_worker = _Worker(chunk_docs, "qwen3-rag-chunk") if pipelined else None
    chunking: tuple[Future[ChunkBatch], list[Document]] | None = None

    def queue_chunks(docs: list[Document], chunked: ChunkBatch) -> None:
        report.tokens += sum(chunked.doc_tokens)
        for i, (doc, chunks) in enumerate(zip(docs, chunked.chunks, strict=True)):
            report.chunks_added += len(chunks)
            t = time.perf_counter()  # framing the chunker's ids for the model
            pending.add(doc, chunks, chunked.token_ids[i] if chunked.token_ids is not None else None)
            timings["tokenize"] += time.perf_counter() - t
            if pending.n_chunks >= commit_every:
                flush()
        progress.update(len(docs), report)

    def take_chunks() -> None:
        """Queue the chunks of the group being chunked in the background (waiting for them)."""
        nonlocal chunking
        if chunking is not None:
            (future, docs), chunking = chunking, None
            queue_chunks(docs, wait_for(future))

    def changed(docs: list[Document]) -> list[Document]:
        """The new and changed documents among ``docs`` (one store query), counted into the report."""
        t = time.perf_counter()
        out, counts = idx.changed(docs)
        timings["index"] += time.perf_counter() - t
        for name in ("added", "updated", "unchanged", "chunks_removed"):  # the writes replace the removed chunks
            setattr(report, name, getattr(report, name) + getattr(counts, name))
        if counts.unchanged:
            progress.update(counts.unchanged, report)
        return out

    def chunk_batch() -> None:
        """Chunk the new and changed documents among those read so far (one tokenizer call for all of them),
        queue their chunks."""
        nonlocal chunking, to_chunk_chars
        docs = changed(to_chunk) if to_chunk else []
        to_chunk.clear()
        to_chunk_chars = 0
        if not docs:
            return
        if chunk_worker is None:
            queue_chunks(docs, chunk_docs(docs))
            return
        future = chunk_worker.submit(docs)
        take_chunks()  # the previous group, chunked while this one was read
        chunking = (future, docs)

    try:
        documents = iter(
            iter_documents(sources, include=include, exclude=exclude, record_fields=record_fields, report=loads)
        )
        while True:
            t = time.perf_counter()
            doc = next(documents, None)
            timings["load"] += time.perf_counter() - t
            if doc is None:
                break
            if doc.id in seen:
                loads.fail(doc.source, f"duplicate document id {doc.id!r} (the first one was kept)")
                continue
            seen.add(doc.id)
            to_chunk.append(doc)
            to_chunk_chars += len(doc.text)
            if len(to_chunk) >= CHUNK_BATCH_DOCUMENTS or to_chunk_chars >= GROUP_CHARS:
                chunk_batch()
        chunk_batch()
        take_chunks()
        flush()
        drain()
        if prune:
            report.pruned, pruned_chunks = _prune(idx, seen, loads)
            report.chunks_removed += pruned_chunks
    finally:
        progress.close()
        for background in (worker, chunk_worker):
            if background is not None:
                background.close()
    report.skipped = len(loads.skipped)
    report.failed = len(loads.failed)
    report.failures = list(loads.failed)
    report.skips = list(loads.skipped)
    return report


def _prune(idx: Index, seen: set[str], loads: LoadReport) -> tuple[int, int]:
    """Delete the stored documents not seen in this run (except those of files that failed to load); returns the
    documents and chunks deleted."""
    failed_sources = [s for s, _ in loads.failed]

    def from_failed(source: str) -> bool:
        return any(source == f or source.startswith(f + "#") for f in failed_sources)

    gone = [
        doc_id for doc_id, source, _ in idx.iter_documents() if doc_id not in seen and not from_failed(source)
    ]
    if not gone:
        return 0, 0
    logger.info("pruning %d documents whose source is gone", len(gone))
    chunks = len(idx)
    idx.delete(gone)
    return len(gone), chunks - len(idx)
