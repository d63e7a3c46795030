"""The stages of distributed ingestion, as Ray Data runs them on its workers, and the rows they pass on.

Every stage takes and gives pyarrow tables of one row format (:data:`ROWS`): one row per chunk, with the document's
text, metadata and token count on its first chunk's row, and one row per document that needs no embedding
(``unchanged``) or per file that gave none (``skipped``, ``failed``), so that these reach the driver in order with
the chunks. The embedding stage adds ``vector`` (empty on the rows that are no chunk, so a re-run that skips
everything ships no vectors) and ``embed_seconds``.

- :class:`PrepareStage` (CPU actors): reads files with the project's loaders, skips the documents whose content hash
  is stored (:func:`stored_keys`, taken from the index on the driver before the run), chunks the others with the
  project's chunker (the index's settings, the model's tokenizer) and keeps each chunk's token ids;
- :class:`EmbedStage` (one model per actor, on a GPU when it has one): the project's embedder, built from the
  index's model record and checked against it, fed the chunker's token ids exactly as a single process feeds them;
- :class:`WriteStage` (only for a backend that takes many writers): writes the documents that a batch holds whole,
  through the one write loop, and passes on the rows of the others for the driver to write.

:class:`Assembler` turns the rows back into documents, chunks and vectors, on the driver and in :class:`WriteStage`.
Nothing here imports Ray: the stages are plain callables that Ray Data instantiates on its workers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qwen3_rag._optional import require
from qwen3_rag.indexers.chunking import GROUP_CHARS, GROUP_DOCUMENTS, ChunkContext, Chunker
from qwen3_rag.indexers.loaders import LoadReport, RecordFields, load_listed
from qwen3_rag.indexers.manifest import check_embedder
from qwen3_rag.pipelines.documents import checked
from qwen3_rag.pipelines.model_inputs import ChunkInputs, token_framer
from qwen3_rag.pipelines.writing import DocumentWriter, stats_of_replacing, timed
from qwen3_rag.protocols import PARTIAL, StorageBackend, TextEmbedder, TokenEmbedder
from qwen3_rag.retrieval.models import load_embedder
from qwen3_rag.types import Chunk, Document, WriteStats

logger = logging.getLogger(__name__)

__all__ = ["ROWS", "Assembler", "EmbedStage", "Embedded", "PrepareStage", "Status", "WriteStage", "stored_keys"]

#: The columns of a row and their pyarrow types (``list<int32>`` and ``list<string>`` for ``ids`` and
#: ``headings``). ``input`` and ``ids``: what the model reads for the chunk, as text (empty when it is the chunk's
#: own ``text``, i.e. without a context line: :class:`~qwen3_rag.pipelines.model_inputs.ChunkInputs`) and as the
#: chunker's token ids.
#: ``kind``: ``chunk`` (``n_chunks`` 0: a document without chunks, one row), ``unchanged``,
#: ``skipped``, ``failed`` or, from :class:`WriteStage`, ``written`` (with ``added`` and ``chunks_removed``).
ROWS: dict[str, str] = {
    "kind": "string", "doc_id": "string", "source": "string", "reason": "string",
    "index": "int32", "n_chunks": "int32", "text": "string", "start": "int64", "end": "int64", "page": "int32",
    "start_line": "int64", "end_line": "int64", "headings": "list<string>", "input": "string",
    "ids": "list<int32>",
    "document": "string", "metadata": "string", "chunk_metadata": "string", "tokens": "int64",
    "added": "int32", "chunks_removed": "int64", "load_seconds": "float64", "chunk_seconds": "float64",
}
_DEFAULTS: dict[str, Any] = {"kind": "", "doc_id": "", "source": "", "reason": "", "index": 0, "n_chunks": 0,
                             "text": "", "start": 0, "end": 0, "page": -1, "start_line": 0, "end_line": 0,
                             "headings": [], "input": "", "ids": [], "document": "", "metadata": "",
                             "chunk_metadata": "", "tokens": 0, "added": 0, "chunks_removed": 0, "load_seconds": 0.0,
                             "chunk_seconds": 0.0}
#: Columns the driver reads as Python values (``ids`` and ``vector`` stay in arrow and numpy).
_READ = [name for name in ROWS if name not in ("input", "ids")]
KEY_BYTES = 16


def _pa() -> Any:
    return require("pyarrow", "ray", "distributed ingestion")


def _schema(pa: Any) -> Any:
    types = {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64(), "float64": pa.float64(),
             "list<string>": pa.list_(pa.string()), "list<int32>": pa.list_(pa.int32())}
    return pa.schema([(name, types[kind]) for name, kind in ROWS.items()])


def document_key(doc_id: str, content_hash: str) -> bytes:
    """A 16-byte digest of a document's id and content hash: equal keys, same stored content."""
    data = f"{doc_id}\x00{content_hash}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=KEY_BYTES).digest()


def stored_keys(index: StorageBackend) -> np.ndarray:
    """The sorted keys (:func:`document_key`) of every document the index stores whole: what the workers compare
    with to skip unchanged documents before they reach a model. 16 bytes per document, shared by all workers."""
    keys = [document_key(doc_id, content) for doc_id, _, content in index.iter_documents() if content != PARTIAL]
    return np.unique(np.array(keys, dtype=f"S{KEY_BYTES}")) if keys else np.zeros(0, dtype=f"S{KEY_BYTES}")


def _is_stored(stored: np.ndarray, key: bytes) -> bool:
    if not len(stored):
        return False
    at = int(np.searchsorted(stored, key))
    return at < len(stored) and bytes(stored[at]) == key.rstrip(b"\x00")  # numpy drops trailing NULs of S items


class _Rows:
    """Rows being built, column by column, in order."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {name: [] for name in ROWS}

    def __len__(self) -> int:
        return len(self.columns["kind"])

    def add(self, **values: Any) -> None:
        for name, column in self.columns.items():
            column.append(values.get(name, _DEFAULTS[name]))

    def status(self, kind: str, doc_id: str, source: str, reason: str = "") -> None:
        self.add(kind=kind, doc_id=doc_id, source=source, reason=reason)

    def document(self, doc: Document, chunks: Sequence[Chunk], inputs: Sequence[str],
                 ids: Sequence[Sequence[int]] | None, tokens: int) -> None:
        """One row per chunk (one row for a document without chunks), the document itself on the first; a chunk's
        model input is kept only where it differs from its text (a context line), so a text crosses once."""
        whole = {"document": doc.text, "metadata": json.dumps(doc.metadata, ensure_ascii=False),
                 "chunk_metadata": json.dumps(chunks[0].metadata if chunks else {}, ensure_ascii=False),
                 "tokens": tokens}
        base = {"kind": "chunk", "doc_id": doc.id, "source": doc.source, "n_chunks": len(chunks)}
        if not chunks:
            self.add(**base, **whole)
        for i, c in enumerate(chunks):
            self.add(**base, **(whole if i == 0 else {}), index=c.index, text=c.text, start=c.start, end=c.end,
                     page=-1 if c.page is None else c.page, start_line=c.start_line, end_line=c.end_line,
                     headings=list(c.headings), input=inputs[i] if inputs[i] != c.text else "",
                     ids=list(ids[i]) if ids is not None else [])

    def table(self, seconds: Mapping[str, float] | None = None) -> Any:
        """The rows as a pyarrow table; ``seconds`` (stage -> time) spread evenly over them, so sums add up."""
        pa = _pa()
        for stage, value in (seconds or {}).items():
            self.columns[f"{stage}_seconds"] = [value / max(1, len(self))] * len(self)
        return pa.Table.from_pydict(self.columns, schema=_schema(pa))


class _QuietReport(LoadReport):
    """A load report that only collects: the driver logs each entry when it gets the rows."""

    def skip(self, source: str, reason: str) -> None:
        self.skipped.append((source, reason))

    def fail(self, source: str, reason: str) -> None:
        self.failed.append((source, reason))


@dataclass
class _Group:
    """Documents to chunk together, in order with the status rows between them."""

    items: list[Document | tuple[str, str, str, str]] = field(default_factory=list)
    docs: int = 0
    chars: int = 0

    @property
    def full(self) -> bool:
        return self.docs >= GROUP_DOCUMENTS or self.chars >= GROUP_CHARS


#: Builds an embedder from an index's model record (its weights loaded on first use, if it has any).
Make = Callable[[Mapping[str, Any]], TextEmbedder]


class PrepareStage:
    """Files -> chunk rows: read with the project's loaders, skip what is stored unchanged, chunk the rest.

    Args:
        record: The index's model record (the chunker counts with that model's tokenizer; no weights load).
        chunk_size, chunk_overlap, context: The index's chunking.
        stored: :func:`stored_keys` of the index (or a Ray object reference to them).
        record_fields: Id / text / metadata fields of record files.
        make: What the embedding actors build their embedder with (here only its tokenizer is used).
    """

    def __init__(self, record: Mapping[str, Any], chunk_size: int, chunk_overlap: int, stored: Any,
                 record_fields: RecordFields | None = None, make: Make | None = None,
                 context: ChunkContext = "none") -> None:
        # the config and tokenizer only: nothing here embeds, so no weights load
        embedder = make(record) if make is not None else load_embedder(record=record, device="cpu")
        self.chunker = Chunker.for_embedder(embedder, chunk_size, chunk_overlap)
        self.with_ids = token_framer(embedder, self.chunker) is not None
        self.inputs = ChunkInputs(context, self.chunker)
        self.stored = stored if isinstance(stored, np.ndarray) else require("ray", "ray").get(stored)
        self.record_fields = record_fields

    def __call__(self, batch: Any) -> Iterator[Any]:
        """``batch``: ``path`` and ``doc_id`` as file-system bytes (``os.fsencode``), as :func:`iter_files
        <qwen3_rag.indexers.loaders.iter_files>` lists them. Yields a table of rows per group of documents."""
        group, seconds = _Group(), {"load": 0.0, "chunk": 0.0}
        for path, doc_id in zip(batch.column("path").to_pylist(), batch.column("doc_id").to_pylist(), strict=True):
            report = _QuietReport()
            documents = load_listed(Path(os.fsdecode(path)), os.fsdecode(doc_id), record_fields=self.record_fields,
                                    report=report)
            for doc in timed(documents, seconds, "load"):
                self._add(group, doc)
                if group.full:
                    yield self._chunk(group, seconds)
                    group = _Group()
                    seconds.update(load=0.0, chunk=0.0)  # in place: the loop above adds to this dict
            group.items.extend(("skipped", "", source, reason) for source, reason in report.skipped)
            group.items.extend(("failed", "", source, reason) for source, reason in report.failed)
        if group.items:
            yield self._chunk(group, seconds)

    def _add(self, group: _Group, doc: Document) -> None:
        try:
            doc = checked(doc)
        except (TypeError, ValueError) as exc:
            group.items.append(("failed", doc.id, doc.source, str(exc)))
            return
        if _is_stored(self.stored, document_key(doc.id, doc.content_hash)):
            group.items.append(("unchanged", doc.id, doc.source, ""))
            return
        group.items.append(doc)
        group.docs += 1
        group.chars += len(doc.text)

    def _chunk(self, group: _Group, seconds: dict[str, float]) -> Any:
        """The group's rows: its documents chunked (one tokenizer call), in order with its statuses."""
        started = time.perf_counter()
        docs = [item for item in group.items if isinstance(item, Document)]
        chunked = self.chunker.chunk_batch(docs, token_ids=self.with_ids)
        done = iter(range(len(docs)))
        rows = _Rows()
        for item in group.items:
            if not isinstance(item, Document):
                rows.status(*item)
                continue
            i = next(done)
            chunks = chunked.chunks[i]
            ids = self.inputs.ids(item, chunks, chunked.token_ids[i]) if chunked.token_ids is not None else None
            rows.document(item, chunks, self.inputs.texts(item, chunks), ids, chunked.doc_tokens[i])
        seconds["chunk"] += time.perf_counter() - started
        return rows.table(seconds)


class EmbedStage:
    """Chunk rows -> the same rows with ``vector`` (and ``embed_seconds``): one embedder per actor.

    Args:
        record: The index's model record.
        location: The index's location (for the message when the model built here is another).
        settings: :func:`~qwen3_rag.load_embedder` settings (``device``, ``max_tokens_per_batch``, ...).
        make: Builds the embedder from the record instead of :func:`~qwen3_rag.load_embedder` (given the record
            only).

    Raises:
        IndexMismatchError: the model built here is not the index's (another file on this node).
    """

    def __init__(self, record: Mapping[str, Any], location: str, settings: Mapping[str, Any] | None = None,
                 make: Make | None = None) -> None:
        self.embedder = make(record) if make is not None else load_embedder(record=record, **dict(settings or {}))
        check_embedder(record, self.embedder, location)
        self.dim = int(self.embedder.dim)

    def __call__(self, batch: Any) -> Any:
        pa = _pa()
        started = time.perf_counter()
        kinds, counts = batch.column("kind").to_pylist(), batch.column("n_chunks").to_pylist()
        todo = [i for i, (kind, n) in enumerate(zip(kinds, counts, strict=True)) if kind == "chunk" and n > 0]
        vectors = np.zeros((0, self.dim), dtype=np.float32)
        if todo:
            texts = [given or text for given, text in zip(batch.column("input").take(todo).to_pylist(),
                                                          batch.column("text").take(todo).to_pylist(), strict=True)]
            vectors = np.asarray(self._embed(batch.column("ids").take(todo).to_pylist(), texts), dtype=np.float32)
        seconds = (time.perf_counter() - started) / max(1, batch.num_rows)
        widths = np.zeros(batch.num_rows + 1, dtype=np.int32)
        widths[np.asarray(todo, dtype=np.int64) + 1] = self.dim
        column = pa.ListArray.from_arrays(pa.array(np.cumsum(widths, dtype=np.int32)), pa.array(vectors.reshape(-1)))
        return batch.append_column("vector", column).append_column(
            "embed_seconds", pa.array(np.full(batch.num_rows, seconds)))

    def _embed(self, ids: list[list[int]], texts: list[str]) -> np.ndarray:
        """The chunker's ids framed for the model, as a single process feeds them; the texts when there are none
        (the model's special tokens are no fixed frame)."""
        if isinstance(self.embedder, TokenEmbedder) and all(ids):
            framed = self.embedder.ids_from_content(ids)
            if framed is not None:
                return self.embedder.embed_tokenized(framed)
        return self.embedder.embed_documents(texts)


@dataclass(frozen=True)
class Status:
    """A row that is no chunk: a document found unchanged, a file skipped or failed, a document a worker wrote."""

    kind: str
    doc_id: str
    source: str
    reason: str = ""
    stats: WriteStats = field(default_factory=WriteStats)
    tokens: int = 0


@dataclass
class Embedded:
    """A document with its chunks and their vectors, and the rows of its table it came in."""

    document: Document
    n_chunks: int
    tokens: int
    chunk_metadata: Mapping[str, Any]
    chunks: list[Chunk] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return bool(self.rows) and len(self.chunks) == self.n_chunks

    def vector_rows(self, dim: int) -> np.ndarray:
        """The vectors as one ``(chunks, dim)`` array."""
        return np.stack(self.vectors) if self.vectors else np.zeros((0, dim), np.float32)


class Assembler:
    """Rows in order -> :class:`Status` es and whole :class:`Embedded` documents. A document whose rows go on in
    the next table is kept until they come (:attr:`open`); the rows of a document whose first row came in no table
    given here (the tail of one begun before) come back as ``(row, None)``."""

    def __init__(self) -> None:
        self.open: Embedded | None = None

    def take(self, table: Any) -> Iterator[tuple[int, Status | Embedded | None]]:
        """``(row, item)`` for each status and each document completed at that row."""
        cols = {name: table.column(name).to_pylist() for name in _READ if name in table.column_names}
        vectors = _Vectors(table)
        for row in range(table.num_rows):
            if cols["kind"][row] != "chunk":
                yield row, _status(cols, row)
                continue
            if cols["index"][row] == 0 and self.open is None:
                self.open = _begin(cols, row)
            elif self.open is None or self.open.document.id != cols["doc_id"][row]:
                yield row, None
                continue
            doc = self.open
            doc.rows.append(row)
            if doc.n_chunks > 0:
                doc.chunks.append(_chunk(cols, row, doc))
                doc.vectors.append(vectors[row])
            if doc.complete:
                self.open = None
                yield row, doc


class _Vectors:
    """The ``vector`` column: a row's vector by its row number (empty for a row without one, or no column)."""

    def __init__(self, table: Any) -> None:
        self._offsets = np.zeros(table.num_rows + 1, dtype=np.int64)
        self._values = np.zeros(0, dtype=np.float32)
        if "vector" in table.column_names:
            column = table.column("vector").combine_chunks()
            offsets = np.asarray(column.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
            self._offsets = offsets - offsets[0]  # flatten() starts at the first row's values, also in a slice
            self._values = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)

    def __getitem__(self, row: int) -> np.ndarray:
        return self._values[self._offsets[row]:self._offsets[row + 1]]


def _status(cols: Mapping[str, list[Any]], row: int) -> Status:
    stats = WriteStats(unchanged=int(cols["kind"][row] == "unchanged"))
    if cols["kind"][row] == "written":
        added = bool(cols["added"][row])
        stats = WriteStats(added=int(added), updated=int(not added), chunks_added=cols["n_chunks"][row],
                           chunks_removed=cols["chunks_removed"][row])
    return Status(cols["kind"][row], cols["doc_id"][row], cols["source"][row], cols["reason"][row], stats,
                  cols["tokens"][row])


def _begin(cols: Mapping[str, list[Any]], row: int) -> Embedded:
    doc = Document(id=cols["doc_id"][row], text=cols["document"][row], source=cols["source"][row],
                   metadata=json.loads(cols["metadata"][row] or "{}"))
    return Embedded(doc, cols["n_chunks"][row], cols["tokens"][row], json.loads(cols["chunk_metadata"][row] or "{}"))


def _chunk(cols: Mapping[str, list[Any]], row: int, doc: Embedded) -> Chunk:
    page = cols["page"][row]
    return Chunk(doc_id=doc.document.id, index=cols["index"][row], text=cols["text"][row], start=cols["start"][row],
                 end=cols["end"][row], page=None if page < 0 else page, headings=tuple(cols["headings"][row]),
                 metadata=doc.chunk_metadata, start_line=cols["start_line"][row], end_line=cols["end_line"][row])


class WriteStage:
    """For a backend that takes many writers: writes the documents a table holds whole (through the one write
    loop, on this worker's own connection to the backend) and gives back one ``written`` row for each (its first
    row, marked), with the rows of the other documents (begun in one table, ended in another, or an id repeated)
    and the statuses passed on as they are, for the driver.

    Args:
        location: The index's location (:attr:`StorageBackend.location
            <qwen3_rag.protocols.StorageBackend.location>`); the backend finds its credentials on the worker.
        commit_every: Chunks per commit.

    Raises:
        ValueError: the backend takes one writer at a time.
    """

    def __init__(self, location: str, commit_every: int) -> None:
        from qwen3_rag.indexers.index import Index

        self.index = Index.open(location)
        if not self.index.concurrent_writers:
            raise ValueError(f"the index at {location!r} takes one writer at a time; write it from the driver")
        self.commit_every = commit_every

    def __call__(self, table: Any) -> Any:
        whole: dict[str, Embedded] = {}
        keep: list[int] = []
        assembler = Assembler()
        for row, item in assembler.take(table):
            if isinstance(item, Embedded) and item.document.id not in whole:
                whole[item.document.id] = item
            else:
                keep.extend(item.rows if isinstance(item, Embedded) else [row])
        if assembler.open is not None:  # goes on in the next table
            keep.extend(assembler.open.rows)
        return self._mark(table, self._write(list(whole.values())), keep)

    def _write(self, docs: Sequence[Embedded]) -> dict[int, WriteStats]:
        """Write the documents; returns their counts by first row."""
        stored = self.index.document_states([d.document.id for d in docs])
        with DocumentWriter(self.index, chunker="whole", commit_every=self.commit_every) as writer:
            for d in docs:
                writer.add_embedded(d.document, d.chunks, d.vector_rows(self.index.dim))
        return {d.rows[0]: stats_of_replacing(stored.get(d.document.id)) for d in docs}

    @staticmethod
    def _mark(table: Any, written: Mapping[int, WriteStats], keep: Sequence[int]) -> Any:
        """The kept rows and the first row of each written document (marked ``written``, without its text), in
        order."""
        pa = _pa()
        rows = sorted([*written, *keep])
        out = table.take(rows)
        kinds, added, removed, text = (out.column(name).to_pylist() for name in
                                       ("kind", "added", "chunks_removed", "document"))
        for j, row in enumerate(rows):
            if row in written:
                kinds[j], added[j], removed[j], text[j] = ("written", written[row].added,
                                                           written[row].chunks_removed, "")
        for name, values in (("kind", kinds), ("added", added), ("chunks_removed", removed), ("document", text)):
            out = out.set_column(out.schema.get_field_index(name), name, pa.array(values, out.schema.field(name).type))
        return out
