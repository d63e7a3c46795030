"""The one write loop: documents -> changed? -> chunk -> embed -> write, in bounded memory, resumable.

:class:`DocumentWriter` is what every write of documents goes through: ingestion of files
(:func:`~qwen3_rag.pipelines.ingest.ingest`), :func:`ingest_documents`, evaluation's corpus indexing and both
framework vector stores. Documents are grouped; each group is checked against the stored content hashes (one look-up
per group), the new and changed ones are chunked (one tokenizer call per group), their chunks are embedded in batches
of ``commit_every`` and each batch is written and committed. A document with more chunks than that is written in
parts, one per commit, marked partly written until its last part (:meth:`StorageBackend.write
<qwen3_rag.protocols.StorageBackend.write>`), so memory and the work between two commits are bounded by chunks,
however long one document is. A run that is interrupted loses at most the batch in flight; the next run skips what
was committed and writes a partly written document again from its start. Pipelined, the model runs in one
background thread and the chunker in another while the calling thread reads and writes, so on an accelerator
chunking and writing overlap the model (BENCHMARKS.md, "4. Ingestion").
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

import numpy as np

from qwen3_rag.indexers.chunking import GROUP_CHARS, GROUP_DOCUMENTS, ChunkBatch, Chunker
from qwen3_rag.pipelines.documents import DocumentError, as_document, check_vectors, checked, whole_document
from qwen3_rag.pipelines.model_inputs import ChunkInputs, Framer, token_framer
from qwen3_rag.protocols import PARTIAL, StorageBackend, TextEmbedder, TokenEmbedder
from qwen3_rag.types import Chunk, Document, WriteStats

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_COMMIT_EVERY", "ChunkInputs", "DocumentError", "DocumentWriter", "IngestReport", "as_document",
           "ingest_documents", "stats_of_replacing", "whole_document"]

#: Chunks embedded and committed together; bounds memory and the work lost by an interruption.
DEFAULT_COMMIT_EVERY = 512
_STAGES = ("load", "chunk", "tokenize", "embed", "index", "commit", "wait")

Chunking = Chunker | Literal["whole"] | None


@dataclass
class IngestReport:
    """What a write run did.

    Attributes:
        added, updated, unchanged, skipped, failed, pruned: Documents (skipped and failed count files too).
        chunks_added, chunks_removed: Chunks written and deleted.
        tokens: Tokens of the documents chunked.
        seconds: Wall time.
        failures: ``(source, reason)`` of every file or record that failed.
        skips: ``(source, reason)`` of every file skipped (binary, empty).
        timings: Seconds per stage: ``load`` (reading and parsing files), ``chunk``, ``tokenize`` (the model's
            input ids, made on the calling thread), ``embed``, ``index`` (store look-ups and writes), ``commit``
            and ``wait`` (the calling thread waiting for the embedder or, pipelined, the chunker). Pipelined,
            embedding and chunking overlap the other stages, so the stages add up to more than the wall time.
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
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_STAGES, 0.0))

    @property
    def embedded_nothing(self) -> bool:
        """True when the run changed nothing (a re-run on an unchanged corpus)."""
        return not (self.added or self.updated or self.pruned)

    def count(self, stats: WriteStats) -> None:
        """Add a store's change counts (documents added, updated, unchanged; chunks the updates remove)."""
        for name in ("added", "updated", "unchanged", "chunks_removed"):
            setattr(self, name, getattr(self, name) + getattr(stats, name))

    def summary(self) -> str:
        """A few human-readable lines for the end of a run."""
        rate = self.tokens / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"documents: {self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.skipped} skipped, {self.failed} failed" + (f", {self.pruned} pruned" if self.pruned else ""),
            f"chunks: {self.chunks_added} added, {self.chunks_removed} removed; {self.tokens} tokens embedded "
            f"in {self.seconds:.1f}s ({rate:,.0f} tokens/s)",
        ]
        lines.extend(f"  failed: {source}: {reason}" for source, reason in self.failures)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        names = ("added", "updated", "unchanged", "skipped", "failed", "pruned", "chunks_added", "chunks_removed",
                 "tokens", "seconds", "timings")
        return {name: getattr(self, name) for name in names}


class _Worker:
    """Runs one call of ``fn`` at a time, in order, in a daemon thread (so Ctrl-C never waits for it to finish)."""

    def __init__(self, fn: Callable[[Any], Any], name: str) -> None:
        self._fn = fn
        self._requests: queue.SimpleQueue[tuple[Future[Any], Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, items: Any) -> Future[Any]:
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


@dataclass
class _Part:
    """A document's chunks (all of them, or one part of a document written across commits) waiting to be written,
    and how: ``append`` to the parts before, ``complete`` the document (see :meth:`StorageBackend.write
    <qwen3_rag.protocols.StorageBackend.write>`)."""

    document: Document
    chunks: list[Chunk]
    append: bool = False
    complete: bool = True


class _Pending:
    """Chunks waiting to be embedded, in document order, with the model's input ids when it can take them."""

    def __init__(self, frame: Framer | None, inputs: ChunkInputs) -> None:
        self.frame = frame
        self.inputs = inputs
        self.batch: list[_Part] = []
        self.ids: list[list[int]] = []
        self.n_chunks = 0

    def add(self, part: _Part, token_ids: list[list[int]] | None) -> None:
        self.batch.append(part)
        self.n_chunks += len(part.chunks)
        if self.frame is not None and token_ids is not None:
            self.ids.extend(self.frame(self.inputs.ids(part.document, part.chunks, token_ids)))

    def texts(self, batch: list[_Part]) -> list[str]:
        """What the model reads for every chunk of ``batch``, in order."""
        return [text for part in batch for text in self.inputs.texts(part.document, part.chunks)]

    def take(self) -> tuple[list[_Part], list[list[int]] | None]:
        batch, ids = self.batch, (self.ids if self.frame is not None else None)
        self.batch, self.ids, self.n_chunks = [], [], 0
        return batch, ids


class DocumentWriter:
    """Write documents into an index: only new and changed ones are chunked, embedded and written.

    Use it as a context manager (or call :meth:`close`), feeding documents with :meth:`add`; the report is
    :attr:`report`.

    Args:
        index: An open, writable index (any :class:`~qwen3_rag.protocols.StorageBackend`).
        embedder: What embeds the chunks; default the index's embedder. Not needed when every document comes
            with its vector.
        chunker: None: chunk with the index's settings and the embedder's tokenizer; ``"whole"``: each document is
            one chunk, exactly as given; or a :class:`~qwen3_rag.Chunker`.
        replace: Replace a stored document whose content changed (False: that is an error, ValueError).
        commit_every: Chunks embedded and committed together (a document with more is written in parts).
        pipelined: Embed in one background thread and chunk in another (for accelerators).
        group_documents: Documents looked up and chunked together (default 64; also bounded by characters).
        on_duplicate: Called with a document whose id came before in this run (then skipped); default: ValueError.
        on_progress: Called with the number of documents just handled and the report.

    Raises:
        ValueError: no embedder, or the index is read-only.
    """

    def __init__(self, index: StorageBackend, embedder: TextEmbedder | None = None, *, chunker: Chunking = None,
                 replace: bool = True, commit_every: int = DEFAULT_COMMIT_EVERY, pipelined: bool = False,
                 group_documents: int | None = None, on_duplicate: Callable[[Document, str], None] | None = None,
                 on_progress: Callable[[int, IngestReport], None] | None = None) -> None:
        if not isinstance(commit_every, int) or isinstance(commit_every, bool) or commit_every < 1:
            raise ValueError(f"commit_every must be an int >= 1, got {commit_every!r}")
        if index.read_only:
            raise ValueError(f"the index at {index.location!r} was opened read-only; open it writable to add documents")
        self.index = index
        self.embedder = embedder if embedder is not None else index.embedder
        if chunker is None and self.embedder is not None:
            chunker = Chunker.for_embedder(self.embedder, index.chunking.chunk_size, index.chunking.chunk_overlap)
        self.chunker: Chunker | None = chunker if isinstance(chunker, Chunker) else None
        self.replace = replace
        self.commit_every = commit_every
        self.group_documents = group_documents or GROUP_DOCUMENTS
        self.report = IngestReport()
        self._on_duplicate = on_duplicate
        self._on_progress = on_progress
        self._seen: set[str] = set()
        self._group: list[Document] = []
        self._group_chars = 0
        self._embedded: list[tuple[_Part, np.ndarray]] = []  # chunks that came with their vectors
        self._embedded_chunks = 0
        frame = token_framer(self.embedder, self.chunker) if self.embedder is not None else None
        # documents stored whole ("whole": a framework's own splits) are embedded exactly as given
        self._pending = _Pending(frame, ChunkInputs(index.chunking.context if self.chunker else "none", self.chunker))
        # An embedder that takes token ids is fed the ones the chunker made (nothing is tokenized twice); otherwise,
        # pipelined, this thread tokenizes the next batch while the worker runs the model.
        self._split = frame is not None or (pipelined and isinstance(self.embedder, TokenEmbedder))
        self._embed_worker = _Worker(self._embed, "qwen3-rag-embed") if pipelined else None
        self._chunk_worker = _Worker(self._chunk, "qwen3-rag-chunk") if pipelined else None
        self._in_flight: tuple[Future[Any], list[_Part]] | None = None
        self._chunking: tuple[Future[ChunkBatch], list[Document]] | None = None
        self._started = time.perf_counter()

    # -- feeding ---------------------------------------------------------------------------------------------

    def add(self, document: Document, vector: np.ndarray | None = None) -> None:
        """Queue one document; with ``vector`` it is stored as one chunk with that vector (no embedding), always
        replacing a stored version.

        Raises:
            ValueError: the document's text is not valid Unicode, or its metadata breaks the rule of
                :func:`~qwen3_rag.types.check_metadata` (nothing of it is queued).
        """
        document = checked(document)
        if not self._first(document):
            return
        if vector is not None:
            self._queue_embedded(*whole_document(document), np.asarray(vector, dtype=np.float32).reshape(1, -1))
            return
        if self.embedder is None:
            raise ValueError("writing documents without vectors needs an embedder: open the index with one, or "
                             "pass embedder=")
        self._group.append(document)
        self._group_chars += len(document.text)
        if len(self._group) >= self.group_documents or self._group_chars >= GROUP_CHARS:
            self._chunk_group()

    def add_embedded(self, document: Document, chunks: Sequence[Chunk], vectors: np.ndarray, *,
                     tokens: int = 0) -> None:
        """Queue a document that was chunked and embedded elsewhere (by a worker of distributed ingestion): its
        chunks in order with one vector each. It replaces a stored version, like :meth:`add`; one with more chunks
        than ``commit_every`` is written in parts.

        Args:
            document: The whole document (its text and metadata are stored).
            chunks: Its chunks, ``index`` 0, 1, ... (none for a whitespace-only document).
            vectors: ``(len(chunks), dim)``, in the order of the chunks.
            tokens: Its content tokens, for the report's throughput.

        Raises:
            ValueError: as :meth:`add`, or a number of vectors that is not the number of chunks.
        """
        rows = np.asarray(vectors, dtype=np.float32)
        if rows.ndim != 2 or len(rows) != len(chunks):
            raise ValueError(f"document {document.id!r}: {len(chunks)} chunks need {len(chunks)} vectors (one row "
                             f"each), got an array of shape {rows.shape}")
        document = checked(document)
        if self._first(document):
            self.report.tokens += tokens
            self._queue_embedded(document, list(chunks), rows)

    def add_handled(self, document: Document, stats: WriteStats, *, tokens: int = 0) -> None:
        """Count a document that another process handled, with its counts: a worker of distributed ingestion found
        it unchanged (``WriteStats(unchanged=1)``), or wrote it to a backend that takes many writers. Pruning keeps
        it, and the same id again is a duplicate. ``document`` needs only its id and source."""
        if self._first(document):
            self.report.count(stats)
            self.report.chunks_added += stats.chunks_added
            self.report.tokens += tokens
            self._progress(1)

    @property
    def seen(self) -> set[str]:
        """The ids of every document given so far (written, unchanged or queued)."""
        return self._seen

    def add_all(self, documents: Iterable[Document]) -> IngestReport:
        """:meth:`add` each document; returns the report so far."""
        for document in documents:
            self.add(document)
        return self.report

    def close(self) -> IngestReport:
        """Write everything queued and stop the background threads; returns the report."""
        try:
            self._chunk_group()
            self._take_chunks()
            self._flush()
            self._drain()
            self._write_embedded()
        finally:
            for worker in (self._embed_worker, self._chunk_worker):
                if worker is not None:
                    worker.close()
        self.report.seconds = time.perf_counter() - self._started
        return self.report

    def __enter__(self) -> DocumentWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            for worker in (self._embed_worker, self._chunk_worker):
                if worker is not None:
                    worker.close()

    # -- stages ----------------------------------------------------------------------------------------------

    def _first(self, document: Document) -> bool:
        """Whether ``document``'s id is new in this run; a repeat goes to ``on_duplicate`` (without one it is a
        ValueError)."""
        if document.id not in self._seen:
            self._seen.add(document.id)
            return True
        if self._on_duplicate is None:
            raise ValueError(f"document id {document.id!r} appears twice in one write; ids must be unique")
        self._on_duplicate(document, f"duplicate document id {document.id!r} (the first one was kept)")
        return False

    def _parts(self, n_chunks: int, queued: Callable[[], int]) -> Iterator[tuple[int, int]]:
        """``(start, end)`` of the parts a document of ``n_chunks`` chunks is queued in: what fits beside the
        ``queued()`` chunks of the batch, then the rest (``queued`` is asked again after each part, whose batch the
        caller may have written). One part, maybe empty, for a document that fits."""
        start = 0
        while True:
            end = min(n_chunks, start + self.commit_every - queued())
            yield start, end
            if end == n_chunks:
                return
            start = end

    def _time(self, stage: str, started: float) -> float:
        now = time.perf_counter()
        self.report.timings[stage] += now - started
        return now

    def _chunk(self, docs: list[Document]) -> ChunkBatch:
        started = time.perf_counter()
        if self.chunker is None:  # whole documents
            pairs = [whole_document(d) for d in docs]
            chunked = ChunkBatch([chunks for _, chunks in pairs], [0] * len(docs))
        else:
            chunked = self.chunker.chunk_batch(docs, token_ids=self._pending.frame is not None)
        self._time("chunk", started)  # one writer: the chunk worker, or this thread
        return chunked

    def _embed(self, items: list[Any]) -> np.ndarray:
        started = time.perf_counter()
        embedder = cast(TextEmbedder, self.embedder)
        if not items:
            vectors = np.zeros((0, embedder.dim), np.float32)
        elif self._split:
            vectors = cast(TokenEmbedder, embedder).embed_tokenized(items)
        else:
            vectors = embedder.embed_documents(items)
        self._time("embed", started)  # one writer: the embed worker, or this thread
        return vectors

    def _wait(self, future: Future[Any]) -> Any:
        started = time.perf_counter()
        result = future.result()
        self._time("wait", started)
        return result

    def _chunk_group(self) -> None:
        """Look the group up (one query) and chunk its new and changed documents (one tokenizer call)."""
        docs, self._group, self._group_chars = self._group, [], 0
        if not docs:
            return
        started = time.perf_counter()
        todo, counts = self.index.changed(docs, replace=self.replace)
        self._time("index", started)
        self.report.count(counts)
        if counts.unchanged:
            self._progress(counts.unchanged)
        if not todo:
            return
        if self._chunk_worker is None:
            self._queue_chunks(todo, self._chunk(todo))
            return
        future = self._chunk_worker.submit(todo)
        self._take_chunks()  # the previous group, chunked while this one was read
        self._chunking = (future, todo)

    def _take_chunks(self) -> None:
        if self._chunking is not None:
            (future, docs), self._chunking = self._chunking, None
            self._queue_chunks(docs, self._wait(future))

    def _queue_chunks(self, docs: list[Document], chunked: ChunkBatch) -> None:
        self.report.tokens += sum(chunked.doc_tokens)
        for i, (doc, chunks) in enumerate(zip(docs, chunked.chunks, strict=True)):
            self.report.chunks_added += len(chunks)
            token_ids = chunked.token_ids[i] if chunked.token_ids is not None else None
            # a document with more chunks than fit goes in parts, one per commit
            for start, end in self._parts(len(chunks), lambda: self._pending.n_chunks):
                part = _Part(doc, chunks[start:end], append=start > 0, complete=end == len(chunks))
                started = time.perf_counter()
                self._pending.add(part, token_ids[start:end] if token_ids is not None else None)
                self._time("tokenize", started)  # framing the chunker's ids for the model
                if self._pending.n_chunks >= self.commit_every:
                    self._flush()
        self._progress(len(docs))

    def _flush(self) -> None:
        """Embed the queued chunks (in the background when pipelined) and write the batch before."""
        if not self._pending.batch:
            return
        batch, ids = self._pending.take()
        items: list[Any]
        if ids is not None:
            items = ids
        else:
            started = time.perf_counter()
            texts = self._pending.texts(batch)
            items = cast(TokenEmbedder, self.embedder).tokenize(texts) if self._split else texts
            self._time("tokenize", started)
        if self._embed_worker is None:
            self._write(batch, self._embed(items))
            return
        future = self._embed_worker.submit(items)
        self._drain()  # the previous batch is written while this one is embedded
        self._in_flight = (future, batch)

    def _drain(self) -> None:
        if self._in_flight is not None:
            (future, batch), self._in_flight = self._in_flight, None
            self._write(batch, self._wait(future))

    def _write(self, batch: Sequence[_Part], vectors: np.ndarray) -> None:
        """Write one batch in one commit: one write per run of parts written the same way (a batch holds at most
        the last part of one document and the first of another besides whole documents)."""
        # intermediate commits do not rewrite the search structures' files (that would cost O(n^2) over a bulk
        # load); closing the index does, and readers catch up from the store meanwhile
        started = time.perf_counter()
        check_vectors([(p.document, p.chunks) for p in batch], vectors)
        with self.index.transaction(publish=False):
            row = 0
            for (append, complete), run in itertools.groupby(batch, key=lambda p: (p.append, p.complete)):
                parts = list(run)
                n = sum(len(p.chunks) for p in parts)
                self.index.write([(p.document, p.chunks) for p in parts], vectors[row:row + n], append=append,
                                 complete=complete)
                row += n
            started = self._time("index", started)
        self._time("commit", started)

    def _queue_embedded(self, document: Document, chunks: list[Chunk], vectors: np.ndarray) -> None:
        for start, end in self._parts(len(chunks), lambda: self._embedded_chunks):
            part = _Part(document, chunks[start:end], append=start > 0, complete=end == len(chunks))
            self._embedded.append((part, vectors[start:end]))
            self._embedded_chunks += end - start
            if self._embedded_chunks >= self.commit_every:
                self._write_embedded()

    def _write_embedded(self) -> None:
        if not self._embedded:
            return
        items, self._embedded, self._embedded_chunks = self._embedded, [], 0
        firsts = [part.document.id for part, _ in items if not part.append]  # counted once, at their first part
        stored = self.index.document_states(firsts)
        for doc_id in firsts:
            self.report.count(stats_of_replacing(stored.get(doc_id)))
        self.report.chunks_added += sum(len(part.chunks) for part, _ in items)
        self._write([part for part, _ in items], np.concatenate([v for _, v in items]))
        self._progress(sum(part.complete for part, _ in items))

    def _progress(self, n: int) -> None:
        if self._on_progress is not None:
            self._on_progress(n, self.report)


_T = TypeVar("_T")


def timed(items: Iterable[_T], seconds: dict[str, float], stage: str) -> Iterator[_T]:
    """``items``, one at a time, adding the time spent waiting for each to ``seconds[stage]`` (a reader, a
    loader, a distributed pipeline)."""
    stream = iter(items)
    while True:
        started = time.perf_counter()
        try:
            item = next(stream)
        except StopIteration:
            return
        finally:
            seconds[stage] += time.perf_counter() - started
        yield item


def stats_of_replacing(state: tuple[str, int] | None) -> WriteStats:
    """The counts of writing a document whose stored state (:meth:`StorageBackend.document_states
    <qwen3_rag.protocols.StorageBackend.document_states>`) is ``state``: added when it is not stored or only partly
    written, else updated; the chunks it had are removed."""
    new = state is None or state[0] == PARTIAL
    return WriteStats(added=int(new), updated=int(not new), chunks_removed=state[1] if state is not None else 0)


def ingest_documents(documents: Iterable[Document | str | dict[str, Any]], index: StorageBackend, *,
                     embedder: TextEmbedder | None = None, replace: bool = True,
                     commit_every: int = DEFAULT_COMMIT_EVERY, pipelined: bool = False) -> IngestReport:
    """Write documents into an open index: new and changed ones are chunked (with the index's settings), embedded
    and stored, unchanged ones skipped.

    Args:
        documents: :class:`~qwen3_rag.Document` s, plain strings (the id is a hash of the text) or dicts with
            ``text`` (and ``id``, ``source``, ``metadata``).
        index: An open, writable index.
        embedder: Default the index's embedder.
        replace: Replace documents whose content changed (False: a changed document is a ValueError, nothing
            of the batch it is in is written).
        commit_every: Chunks embedded and committed together.
        pipelined: Embed and chunk in background threads (for accelerators).

    Returns:
        The :class:`IngestReport` (``added``, ``updated``, ``unchanged``, ``chunks_added``, ...).

    Raises:
        ValueError: a document id repeats, a document changed with ``replace=False``, or no embedder.
    """
    with DocumentWriter(index, embedder, replace=replace, commit_every=commit_every, pipelined=pipelined) as writer:
        writer.add_all(as_document(d) for d in documents)
    return writer.report
