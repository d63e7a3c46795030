"""Ingestion: files and folders -> an index, incrementally, in bounded memory, resumable.

Documents stream from the loaders into the one write loop (:class:`~qwen3_rag.pipelines.writing.DocumentWriter`):
only new and changed documents are chunked and embedded, every ``commit_every`` chunks are committed, so a run that
is interrupted (Ctrl-C, ``kill -9``) loses at most the batch in flight and the next run continues where it stopped;
``prune=True`` deletes the documents whose source is gone.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qwen3_rag.indexers.chunking import ChunkContext
from qwen3_rag.indexers.index import Index
from qwen3_rag.indexers.loaders import LoadReport, RecordFields, iter_documents
from qwen3_rag.pipelines.writing import DEFAULT_COMMIT_EVERY, DocumentWriter, IngestReport, timed
from qwen3_rag.protocols import StorageBackend, TextEmbedder
from qwen3_rag.retrieval.models import load_embedder

if TYPE_CHECKING:
    from qwen3_rag.pipelines.distributed import RayOptions

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_COMMIT_EVERY", "IngestReport", "ingest", "open_for_writing"]


def open_for_writing(index: str | os.PathLike[str] | StorageBackend, *, embedder: TextEmbedder | None = None,
                     model: str | None = None, chunk_size: int | None = None, chunk_overlap: int | None = None,
                     chunk_context: ChunkContext | None = None, index_type: str | None = None, bm25: bool = True,
                     **embedder_settings: Any) -> tuple[StorageBackend, bool]:
    """The index to write into: ``index`` itself when it is open, else the index at that location opened (or
    created) with ``embedder``, or with an embedder built for ``model`` (default: the index's own model).

    Returns:
        ``(index, owned)``: ``owned`` is True when it was opened here (the caller closes it).
    """
    if not isinstance(index, (str, os.PathLike)):
        return index, False
    if embedder is None:
        record = Index.read_manifest(index)["model"] if Index.exists(index) else None
        embedder = load_embedder(model, record=record, **embedder_settings)
    opened = Index.open_or_create(index, embedder, chunk_size=chunk_size, chunk_overlap=chunk_overlap,
                                  chunk_context=chunk_context, index_type=index_type, bm25=bm25)
    return opened, True


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(unit="doc", desc="indexing", dynamic_ncols=True)
        self.t0 = time.perf_counter()

    def __call__(self, docs: int, report: IngestReport) -> None:
        if self.bar is None:
            return
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        self.bar.update(docs)
        self.bar.set_postfix(chunks=report.chunks_added, tok_s=f"{report.tokens / elapsed:,.0f}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def ingest(sources: Iterable[str | os.PathLike[str]], index: str | os.PathLike[str] | StorageBackend, *,
           embedder: TextEmbedder | None = None, model: str | None = None, chunk_size: int | None = None,
           chunk_overlap: int | None = None, chunk_context: ChunkContext | None = None,
           index_type: str | None = None, dim: int | None = None,
           device: str = "auto", batch_size: int | None = None, max_tokens_per_batch: int | None = None,
           compile: bool = False, include: Sequence[str] = (), exclude: Sequence[str] = (), prune: bool = False,
           record_fields: RecordFields | None = None, follow_links: bool = False,
           commit_every: int = DEFAULT_COMMIT_EVERY, show_progress: bool = False, bm25: bool = True,
           pipelined: bool | None = None, ray: RayOptions | str | None = None) -> IngestReport:
    """Index files and folders into an index (created on first use), incrementally.

    Args:
        sources: Files and folders (see :func:`~qwen3_rag.indexers.loaders.iter_documents`).
        index: An index location (a directory, or a backend URI) or an open, writable index.
        embedder: The embedder; default one built from ``model`` (or the index's model).
        model: Model id or local directory when no ``embedder`` is given.
        chunk_size: Tokens per chunk for a new index (default 128; an existing index keeps its own).
        chunk_overlap: Overlap in tokens for a new index (default 32).
        chunk_context: For a new index: embed each chunk after a first line with its document's title and heading
            path (``"title+headings"``) or alone (``"none"``, the default); the stored text is the source's either
            way (:class:`~qwen3_rag.indexers.chunking.ChunkingConfig`).
        index_type: Vector index type for a new index (``Flat``, ``HNSW32``, ``IVF1024,Flat``, ``IVF1024,PQ16``).
        dim: Output dimension (Matryoshka truncation) when the embedder is built here.
        device: Device for the embedder built here.
        batch_size: Cap on texts per forward pass for the embedder built here.
        max_tokens_per_batch: Padded tokens per forward pass for the embedder built here.
        compile: ``torch.compile`` the embedder built here (faster on GPUs for large corpora).
        include: Globs a file must match. exclude: Globs that drop a file.
        prune: Delete indexed documents that this run's sources no longer produce.
        record_fields: Id / text / metadata fields of .jsonl / .json / .csv records.
        follow_links: Follow symbolic links that lead out of the source folders (default: skip them, with a
            reason); see :func:`~qwen3_rag.indexers.loaders.iter_documents`.
        commit_every: Chunks per commit.
        show_progress: Show a tqdm bar (documents, chunks, tokens/s).
        bm25: For a new index: keep its BM25 index (for hybrid search) up to date with every write (default on;
            off, it is built when first searched).
        pipelined: Embed in a background thread, and chunk in another, while the calling thread reads and writes.
            None (default): on when the embedder runs on an accelerator, where it hides chunking behind the model;
            off on a CPU, whose cores the model already fills (BENCHMARKS.md, "4. Ingestion").
        ray: Read, chunk and embed on Ray (:mod:`qwen3_rag.pipelines.distributed`): ``"local"`` (Ray started on
            this machine for the run), ``"auto"`` (the running cluster, ``RAY_ADDRESS``), a ``ray://HOST:PORT``
            address, or :class:`~qwen3_rag.pipelines.distributed.RayOptions` (actors, GPUs per actor, batch
            size). The workers build the index's model from its record with ``device``, ``batch_size``,
            ``max_tokens_per_batch`` and ``compile``; the index is written as without Ray.

    Returns:
        An :class:`~qwen3_rag.pipelines.writing.IngestReport`.

    Raises:
        FileNotFoundError: a source does not exist (checked before anything is written).
        IndexMismatchError: the index was built with another model.
    """
    paths = [Path(s) for s in sources]
    missing = [str(s) for s in paths if not s.exists()]
    if missing:
        raise FileNotFoundError(f"source(s) not found: {', '.join(missing)}")
    if not isinstance(commit_every, int) or commit_every < 1:
        raise ValueError(f"commit_every must be an int >= 1, got {commit_every!r}")
    started = time.perf_counter()
    settings = {"device": device, "batch_size": batch_size, "max_tokens_per_batch": max_tokens_per_batch,
                "compile": compile}
    distributed = _distributed(ray, settings)
    # with Ray the model runs on the workers; here it only names the model and tokenizes (no weights load)
    here = {**settings, "device": "cpu", "compile": False} if distributed else settings
    idx, owned = open_for_writing(index, embedder=embedder, model=model, chunk_size=chunk_size,
                                  chunk_overlap=chunk_overlap, chunk_context=chunk_context, index_type=index_type,
                                  bm25=bm25, dim=dim, **here)
    try:
        walk = {"include": include, "exclude": exclude, "record_fields": record_fields, "follow_links": follow_links}
        report = _run(idx, paths, walk, prune, commit_every, show_progress, distributed or _read_here,
                      _pipelined(idx, pipelined) and distributed is None)
    finally:
        closing = time.perf_counter()
        if owned:
            idx.close()
    report.timings["commit"] += time.perf_counter() - closing
    report.seconds = time.perf_counter() - started
    logger.info("ingestion finished: %s", report.summary().replace("\n", "; "))
    return report


def _distributed(ray: RayOptions | str | None, settings: dict[str, Any]) -> _Feed | None:
    """How the writer is fed on Ray (None: read, chunk and embed in this process)."""
    if ray is None:
        return None
    from qwen3_rag.pipelines.distributed import RayOptions, ingest_on_ray

    return functools.partial(ingest_on_ray, options=RayOptions.of(ray), settings=settings)


def _pipelined(index: StorageBackend, pipelined: bool | None) -> bool:
    if pipelined is not None:
        return pipelined
    device = getattr(index.embedder, "device", None)
    return device is not None and getattr(device, "type", str(device)) not in ("cpu", "auto")


_Feed = Callable[[DocumentWriter, list[Path], dict[str, Any], LoadReport], None]


def _read_here(writer: DocumentWriter, sources: list[Path], walk: dict[str, Any], loads: LoadReport) -> None:
    """Read the documents in this process, one at a time, into the writer."""
    for doc in timed(iter_documents(sources, report=loads, **walk), writer.report.timings, "load"):
        writer.add(doc)


def _run(idx: StorageBackend, sources: list[Path], walk: dict[str, Any], prune: bool, commit_every: int,
         show_progress: bool, feed: _Feed, pipelined: bool) -> IngestReport:
    if idx.embedder is None:
        raise ValueError("ingest needs an index opened with an embedder")
    loads = LoadReport()
    progress = _Progress(show_progress)
    writer = DocumentWriter(idx, commit_every=commit_every, pipelined=pipelined, on_progress=progress,
                            on_duplicate=lambda doc, reason: loads.fail(doc.source, reason))
    report = writer.report
    try:
        with writer:
            feed(writer, sources, walk, loads)
        if prune:
            report.pruned, pruned_chunks = _prune(idx, writer.seen, loads)
            report.chunks_removed += pruned_chunks
    finally:
        progress.close()
    report.skipped, report.failed = len(loads.skipped), len(loads.failed)
    report.failures, report.skips = list(loads.failed), list(loads.skipped)
    return report


def _prune(idx: StorageBackend, seen: set[str], loads: LoadReport) -> tuple[int, int]:
    """Delete the stored documents not seen in this run (except those of files that failed to load); returns the
    documents and chunks deleted."""
    failed_sources = [s for s, _ in loads.failed]

    def from_failed(source: str) -> bool:
        return any(source == f or source.startswith(f + "#") for f in failed_sources)

    gone = [doc_id for doc_id, source, _ in idx.iter_documents() if doc_id not in seen and not from_failed(source)]
    if not gone:
        return 0, 0
    logger.info("pruning %d documents whose source is gone", len(gone))
    chunks = sum(n for _, n in idx.document_states(gone).values())
    idx.delete(gone)
    return len(gone), chunks
