"""The SQLite document store of a local index: documents, chunks (offsets and float32 vectors) and metadata.

The store is the single source of truth of an index directory. While a writer works it runs in WAL mode, so
readers see the last committed state, and a crash at any instant leaves the last committed transaction intact; a
writer that closes leaves it in rollback-journal mode, so a reader then needs no ``-wal`` / ``-shm`` files and
writes nothing into the directory. Each text is stored once, in its document: a chunk keeps its character and
UTF-8 byte offsets and its text is read back as a slice of the document. Every chunk keeps its vector as a
little-endian float32 BLOB, so the search structures can always be rebuilt, compacted or re-trained from the store
alone. The ``removals`` table logs which chunk ids each commit removed, so a reader holding an older state catches
up without rescanning every id.

Every row carries CRC-32 checksums of its values (format 3), checked whenever it is read back, and every SQLite
error is reported as what it means for the index (:mod:`qwen3_rag.indexers.connection`): a damaged store gives
:class:`~qwen3_rag.indexers.manifest.IndexDamagedError`, never a different answer. What is not checked on every
read, and why: ``document_states`` and ``iter_documents`` (a damaged hash or source only makes a document be
written again), and the index b-trees beyond the counts compared on every full scan.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qwen3_rag.indexers.chunking import PAGE_STARTS_KEY
from qwen3_rag.indexers.connection import GuardedConnection, damaged, row_crc, str_crc, vector_crc
from qwen3_rag.indexers.manifest import IndexLockedError
from qwen3_rag.protocols import PARTIAL
from qwen3_rag.types import Chunk, Document

logger = logging.getLogger(__name__)

STORE_FILE = "store.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL, crc INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    metadata TEXT NOT NULL,
    fmeta TEXT NOT NULL,
    n_chunks INTEGER NOT NULL,
    chunk_ids BLOB NOT NULL,
    updated_at REAL NOT NULL,
    crc INTEGER NOT NULL,
    tcrc INTEGER NOT NULL,
    fcrc INTEGER NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_source ON documents(source);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    start_char INTEGER NOT NULL,
    end_char INTEGER NOT NULL,
    start_byte INTEGER NOT NULL,
    end_byte INTEGER NOT NULL,
    start_line INTEGER NOT NULL,
    end_line INTEGER NOT NULL,
    page INTEGER,
    headings TEXT NOT NULL,
    crc INTEGER NOT NULL,
    vcrc INTEGER NOT NULL,
    vector BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS removals (generation INTEGER NOT NULL, id INTEGER NOT NULL, crc INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS removals_generation ON removals(generation);
"""
# A document's text and a chunk's vector come last: the columns before them are read without walking their overflow
# pages. A document lists its chunk ids (int64, little-endian, in order) under its checksum, so its chunks are found
# by id, never through an index a damaged page could leave incomplete.

#: Ids per ``IN (...)`` query, well under SQLite's limit on bound parameters.
_IN_LIMIT = 500
#: The chunk text, sliced from its document's UTF-8 bytes (SQLite's substr on TEXT stops at a NUL character).
_CHUNK_TEXT = "substr(CAST(d.text AS BLOB), c.start_byte + 1, c.end_byte - c.start_byte)"
#: A chunk's columns (its checksum covers the first 11, then its text and its document's source and metadata).
_CHUNK_OWN = ("c.id, c.doc_id, c.position, c.start_char, c.end_char, c.start_byte, c.end_byte, c.start_line, "
              "c.end_line, c.page, c.headings, c.crc")
_CHUNK_COLS = f"{_CHUNK_OWN}, d.source, d.metadata, {_CHUNK_TEXT}"
_CHUNK_QUERY = f"SELECT {_CHUNK_COLS} FROM chunks c LEFT JOIN documents d ON d.doc_id = c.doc_id"
#: The chunks the documents list (a full scan of the chunks table must find as many rows).
_LISTED_CHUNKS = "SELECT COALESCE(SUM(n_chunks), 0) FROM documents"
INSERT_DOCUMENT = ("INSERT INTO documents(doc_id, source, content_hash, metadata, fmeta, n_chunks, chunk_ids, "
                    "updated_at, crc, tcrc, fcrc, text) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
INSERT_CHUNK = ("INSERT INTO chunks(id, doc_id, position, start_char, end_char, start_byte, end_byte, start_line, "
                 "end_line, page, headings, crc, vcrc, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
#: The columns of a document row its checksum ``crc`` covers, then ``crc``.
_DOC_COLS = "doc_id, source, content_hash, metadata, n_chunks, chunk_ids, crc"


def dumps(value: Any) -> str:
    """Canonical JSON for the store; NaN and infinities are refused, since SQLite's JSON functions (the filters)
    cannot read them.

    Raises:
        ValueError: for a value JSON cannot hold.
    """
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str, allow_nan=False)


def _parts(values: Sequence[Any]) -> Iterator[tuple[Sequence[Any], str]]:
    """``values`` in slices short enough for one ``IN (...)`` query, each with its ``?,?,...`` placeholders."""
    for start in range(0, len(values), _IN_LIMIT):
        part = values[start : start + _IN_LIMIT]
        yield part, ",".join("?" * len(part))


def filter_fields(doc: Document) -> dict[str, Any]:
    """What metadata filters match a document's chunks on: its id, source and metadata (page starts left out)."""
    fields: dict[str, Any] = {"doc_id": doc.id, "source": doc.source}
    fields.update({k: v for k, v in doc.metadata.items() if k != PAGE_STARTS_KEY})
    return fields


def byte_offsets(text: str, chunks: Sequence[Chunk]) -> list[tuple[int, int]]:
    """The UTF-8 byte offsets of each chunk's span (chunks in document order, as a chunker makes them)."""
    if text.isascii():
        return [(c.start, c.end) for c in chunks]
    out = []
    at = at_bytes = 0
    for c in chunks:
        # spans overlap and move forward: encode only the text between consecutive offsets
        start = at_bytes + len(text[at:c.start].encode("utf-8", "surrogatepass")) if c.start >= at \
            else at_bytes - len(text[c.start:at].encode("utf-8", "surrogatepass"))
        end = start + len(text[c.start:c.end].encode("utf-8", "surrogatepass"))
        out.append((start, end))
        at, at_bytes = c.start, start
    return out


def _metadata(raw: str) -> dict[str, Any]:
    return {k: v for k, v in json.loads(raw).items() if k != PAGE_STARTS_KEY}


def _chunk(row: Sequence[Any], meta_cache: dict[str, dict[str, Any]]) -> Chunk:
    """A chunk from a checked row of :data:`_CHUNK_COLS`."""
    meta = meta_cache.get(row[1])
    if meta is None:
        meta = meta_cache[row[1]] = _metadata(row[13])
    return Chunk(doc_id=row[1], index=int(row[2]), text=bytes(row[14]).decode("utf-8", "surrogatepass"),
                 start=int(row[3]), end=int(row[4]), page=row[9], headings=tuple(json.loads(row[10])),
                 metadata=meta, start_line=int(row[7]), end_line=int(row[8]), chunk_id=int(row[0]), source=row[12])


def chunk_crc(fields: Sequence[Any], text: Any, source: Any, metadata: Any) -> int:
    """The checksum of a chunk: its own columns (without ``crc``), its text and its document's source and
    metadata (all a search hit shows)."""
    return row_crc((*fields, text, source, metadata))


def document_crcs(doc_id: str, source: str, digest: str, text: str, metadata: str, fmeta: str, n_chunks: int,
                   chunk_ids: bytes) -> tuple[int, int, int]:
    """The checksums of a document row: of its small columns, of its text, of its filter fields (each is read
    without the others)."""
    return (row_crc((doc_id, source, digest, metadata, n_chunks, chunk_ids)), row_crc((text,)),
            row_crc((doc_id, fmeta)))


def ids_blob(ids: Sequence[int] | np.ndarray) -> bytes:
    return np.asarray(ids, dtype="<i8").tobytes()


def connect_uri(path: Path, read_only: bool) -> str:
    """The SQLite URI a reader opens ``path`` with.

    A reader that could write the directory opens the file read-only (SQLite makes the ``-wal`` / ``-shm`` files
    only while the store is in WAL mode, that is while a writer has it open). One that cannot write opens it as an
    immutable snapshot, unless a write-ahead log holds commits that are not in the file yet (a writer killed on a
    now read-only mount): SQLite reads that log read-only when its ``-shm`` file is there.
    """
    uri = path.resolve().as_uri()
    if not read_only:
        return uri
    writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    if writable or (wal.is_file() and wal.stat().st_size > 0 and shm.is_file()):
        return f"{uri}?mode=ro"
    if wal.is_file() and wal.stat().st_size > 0:
        logger.warning("%s holds commits that this user cannot read without write access to %s (its -shm file is "
                       "missing); reading the state before them", wal, path.parent)
    return f"{uri}?mode=ro&immutable=1"


class Store:
    """SQLite access for one index directory; see the module docstring.

    Args:
        path: The database file.
        read_only: Never write. A directory or file that cannot be written (a read-only mount, a copy made
            without its ``-wal`` / ``-shm`` files) is opened as an immutable snapshot.

    Raises:
        IndexDamagedError: the file is not a readable SQLite database.
    """

    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.conn = GuardedConnection.connect(self.path, connect_uri(self.path, read_only), uri=True)
        try:
            self.conn.execute("PRAGMA busy_timeout=30000")
            if not read_only:
                self.conn.execute("PRAGMA journal_mode=WAL")
                # NORMAL in WAL mode: a process crash never loses a commit; a power cut may lose the last ones but
                # never corrupts the database.
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.executescript(SCHEMA)
            #: The rows carry checksums (format 3; an older store is upgraded by its first writer).
            self.checked = any(row[1] == "crc" for row in self.conn.execute("PRAGMA table_info(meta)"))
        except BaseException:
            self.conn.close()
            raise
        self._in_tx = False
        self._snapshots = 0  # depth of nested snapshot() blocks
        self._snapshot_open = False
        self._filters_checked: int | None = None  # the generation whose filter fields were checked

    def close(self, checkpoint: bool = False) -> None:
        """Close; ``checkpoint`` (a writer, at the end) folds the write-ahead log into the database file and leaves
        WAL mode, unless a reader holds the log (then the next writer does it)."""
        try:
            if self._in_tx:
                self.rollback()
            if checkpoint and not self.read_only:
                try:
                    self.conn.execute("PRAGMA busy_timeout=0")
                    self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                    self.conn.execute("PRAGMA journal_mode=DELETE")
                except (IndexLockedError, OSError) as exc:  # committed work is in the log either way
                    logger.debug("%s stays in WAL mode: %s", self.path, exc)
        finally:
            self.conn.close()

    # -- transactions
    # -------------------------------------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return self._in_tx

    def begin(self) -> None:
        if self._snapshot_open:
            raise RuntimeError("a write cannot start inside a read snapshot of the same connection")
        if not self._in_tx:
            self.conn.execute("BEGIN IMMEDIATE")
            self._in_tx = True

    def commit(self) -> None:
        if self._in_tx:
            self.conn.execute("COMMIT")
            self._in_tx = False

    def rollback(self) -> None:
        if self._in_tx:
            self._in_tx = False
            if not self.conn.in_transaction:  # SQLite rolled back by itself (e.g. after a full disk)
                return
            try:
                self.conn.execute("ROLLBACK")
            except (OSError, RuntimeError) as exc:  # never hide the error that led here
                logger.warning("rolling back %s failed: %s", self.path, exc)

    def snapshot(self) -> _Snapshot:
        """A read transaction: everything read inside it sees one committed state."""
        return _Snapshot(self)

    # -- meta -----------------------------------------------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute(f"SELECT value, {'crc' if self.checked else 'NULL'} FROM meta WHERE key = ?",
                                (key,)).fetchone()
        if row is None:
            return default
        if self.checked and row_crc((key, row[0])) != row[1]:
            raise damaged(self.path, f"its {key!r} record does not match its checksum")
        try:
            return json.loads(row[0])
        except (TypeError, ValueError):
            raise damaged(self.path, f"its {key!r} record is not JSON") from None

    def set_meta(self, key: str, value: Any) -> None:
        text = dumps(value)
        if self.checked:
            self.conn.execute("INSERT OR REPLACE INTO meta(key, value, crc) VALUES (?, ?, ?)",
                              (key, text, row_crc((key, text))))
        else:
            self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, text))

    def allocate_ids(self, n: int) -> np.ndarray:
        """Reserve ``n`` new chunk ids from the persisted monotonic counter (inside the current transaction)."""
        start = int(self.get_meta("next_id", 0))
        self.set_meta("next_id", start + n)
        return np.arange(start, start + n, dtype=np.int64)

    # -- writes
    # -------------------------------------------------------------------------------------------------

    def put_documents(self, items: Sequence[tuple[Document, Sequence[Chunk]]], ids: np.ndarray,
                      vectors: np.ndarray, *, append: bool = False, complete: bool = True) -> None:
        """Insert documents and their chunks (the caller deleted any previous versions).

        ``ids`` and ``vectors`` hold one row per chunk, the chunks of ``items`` in order. ``append`` adds the chunks
        to documents stored before (a document written in parts); ``complete=False`` stores the documents with
        :data:`~qwen3_rag.protocols.PARTIAL` as their content hash.

        Raises:
            ValueError: a document's metadata holds a value JSON cannot (NaN, infinity), or ``append`` names a
                document that is not stored.
        """
        now = time.time()
        vecs = np.ascontiguousarray(vectors, dtype="<f4")
        doc_rows, chunk_rows = [], []
        row = 0
        for doc, chunks in items:
            try:
                metadata, fmeta = dumps(doc.metadata), dumps(filter_fields(doc))
            except ValueError as exc:
                raise ValueError(f"document {doc.id!r}: its metadata cannot be stored as JSON ({exc}); replace "
                                 "NaN and infinite numbers with null or a string") from None
            digest = doc.content_hash if complete else PARTIAL
            chunk_ids = ids[row:row + len(chunks)]
            if append:
                self._extend_document(doc, digest, metadata, chunk_ids, now)
            else:
                listed = ids_blob(chunk_ids)
                doc_rows.append((doc.id, doc.source, digest, metadata, fmeta, len(chunks), listed, now,
                                 *document_crcs(doc.id, doc.source, digest, doc.text, metadata, fmeta, len(chunks),
                                                 listed), doc.text))
            for c, (start_byte, end_byte) in zip(chunks, byte_offsets(doc.text, chunks), strict=True):
                chunk_id, blob = int(ids[row]), vecs[row].tobytes()
                fields = (chunk_id, doc.id, int(c.index), int(c.start), int(c.end), start_byte, end_byte,
                          int(c.start_line), int(c.end_line), None if c.page is None else int(c.page),
                          dumps(list(c.headings)))
                text = doc.text[c.start:c.end].encode("utf-8", "surrogatepass")
                chunk_rows.append((*fields, chunk_crc(fields, text, doc.source, metadata),
                                   vector_crc(chunk_id, blob), blob))
                row += 1
        self.conn.executemany(INSERT_DOCUMENT, doc_rows)
        self.conn.executemany(INSERT_CHUNK, chunk_rows)

    def _extend_document(self, doc: Document, digest: str, metadata: str, chunk_ids: np.ndarray, now: float) -> None:
        """List ``chunk_ids`` after the chunks of a stored document and store ``digest`` as its content hash."""
        rows = self._document_rows([doc.id], text=False)
        if doc.id not in rows:
            raise ValueError(f"document {doc.id!r} is not stored, so no part can be appended to it; write its "
                             "first part with append=False")
        listed = rows[doc.id].chunk_ids + ids_blob(chunk_ids)
        n = len(listed) // 8
        self.conn.execute("UPDATE documents SET content_hash = ?, n_chunks = ?, chunk_ids = ?, updated_at = ?, "
                          "crc = ? WHERE doc_id = ?",
                          (digest, n, listed, now, row_crc((doc.id, doc.source, digest, metadata, n, listed)), doc.id))

    def delete_documents(self, doc_ids: Sequence[str], generation: int) -> list[int]:
        """Delete documents and their chunks; return the removed chunk ids, logged under ``generation`` (the
        commit being made)."""
        rows = self._document_rows(doc_ids, text=False)
        removed = [int(i) for doc_id in doc_ids if doc_id in rows for i in rows[doc_id].ids()]
        for part, marks in _parts(removed):
            self.conn.execute(f"DELETE FROM chunks WHERE id IN ({marks})", part)
        for part, marks in _parts(doc_ids):
            self.conn.execute(f"DELETE FROM documents WHERE doc_id IN ({marks})", part)
        self.conn.executemany("INSERT INTO removals(generation, id, crc) VALUES (?, ?, ?)",
                              [(generation, i, row_crc((generation, i))) for i in removed])
        return removed

    def removed_since(self, generation: int) -> np.ndarray:
        """The chunk ids removed by the commits after ``generation``."""
        out = []
        for logged, chunk_id, crc in self.conn.execute("SELECT generation, id, crc FROM removals WHERE generation > ?",
                                                       (generation,)):
            if row_crc((logged, chunk_id)) != crc:
                raise damaged(self.path, f"a removal logged under generation {logged} does not match its checksum")
            out.append(chunk_id)
        return np.asarray(out, dtype=np.int64)

    def prune_removals(self, keep: int) -> None:
        """Forget the removals of all but about the last ``keep``; readers older than what is kept rebuild their
        state (``removals_from`` in the meta table tells them)."""
        total = int(self.conn.execute("SELECT COUNT(*) FROM removals").fetchone()[0])
        if total <= keep:
            return
        cut = self.conn.execute("SELECT generation FROM removals ORDER BY generation DESC LIMIT 1 OFFSET ?",
                                (keep,)).fetchone()[0]
        self.conn.execute("DELETE FROM removals WHERE generation <= ?", (cut,))
        self.set_meta("removals_from", int(cut))

    # -- reads
    # --------------------------------------------------------------------------------------------------

    def count_documents(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0])

    def count_chunks(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def _check_scan(self, scanned: int) -> None:
        """A full scan of the chunks found as many rows as the documents list (a damaged page loses rows
        silently)."""
        listed = int(self.conn.execute(_LISTED_CHUNKS).fetchone()[0])
        if listed != scanned:
            raise damaged(self.path, f"its chunks table holds {scanned} rows but its documents list {listed}")

    def document_states(self, doc_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """``doc_id -> (content hash, number of chunks)`` of each of ``doc_ids`` that exists (not checked: a
        damaged value only makes the document be written again)."""
        out: dict[str, tuple[str, int]] = {}
        for part, marks in _parts(doc_ids):
            rows = self.conn.execute(
                f"SELECT doc_id, content_hash, n_chunks FROM documents WHERE doc_id IN ({marks})", part)
            out.update((doc_id, (digest, int(n))) for doc_id, digest, n in rows)
        return out

    def _document_rows(self, doc_ids: Sequence[str], text: bool = True) -> dict[str, _DocumentRow]:
        """The checked rows of the documents ``doc_ids`` that exist (with their texts when ``text``)."""
        found: dict[str, _DocumentRow] = {}
        columns = f"{_DOC_COLS}, tcrc, text" if text else _DOC_COLS
        for part, marks in _parts(list(doc_ids)):
            for row in self.conn.execute(f"SELECT {columns} FROM documents WHERE doc_id IN ({marks})", part):
                found[row[0]] = self._checked_document(row)
        return found

    def _checked_document(self, row: Sequence[Any]) -> _DocumentRow:
        """A document from a row of :data:`_DOC_COLS` (then ``tcrc, text`` when it was read), checked."""
        data = None
        if len(row) > 7:
            data = row[8].encode("utf-8", "surrogatepass") if isinstance(row[8], str) else b"\xff"
        if row_crc(row[:6]) != row[6] or not isinstance(row[5], bytes) or len(row[5]) % 8 or \
                (data is not None and str_crc(data) != row[7]):
            raise damaged(self.path, f"document {row[0]!r} does not match its checksum")
        return _DocumentRow(row[1], row[3], row[5], row[8] if data is not None else "", data)

    def get_documents(self, doc_ids: Sequence[str]) -> list[Document]:
        """Documents in the order asked; unknown ids are left out."""
        rows = self._document_rows(doc_ids)
        return [Document(id=i, text=rows[i].text, source=rows[i].source, metadata=json.loads(rows[i].metadata))
                for i in doc_ids if i in rows]

    def iter_documents(self) -> Iterator[tuple[str, str, str]]:
        """Yield ``(doc_id, source, content_hash)`` for every document, by id (not checked: a damaged value only
        makes a document be written or pruned again)."""
        yield from self.conn.execute("SELECT doc_id, source, content_hash FROM documents ORDER BY doc_id")

    def _checked_chunk(self, row: Sequence[Any]) -> Sequence[Any]:
        if chunk_crc(row[:11], row[14], row[12], row[13]) != row[11]:
            raise damaged(self.path, f"chunk {row[0]} does not match its checksum")
        return row

    def get_chunks(self, ids: Iterable[int], strict: bool = False) -> list[Chunk]:
        """Chunks by id, in the order asked; unknown ids are left out (``strict``: the ids were listed by a
        document, so one not found is damage)."""
        wanted = [int(i) for i in ids]
        found: dict[int, Chunk] = {}
        cache: dict[str, dict[str, Any]] = {}
        for part, marks in _parts(wanted):
            for row in self.conn.execute(f"{_CHUNK_QUERY} WHERE c.id IN ({marks})", part):
                found[int(row[0])] = _chunk(self._checked_chunk(row), cache)
        if strict and len(found) != len(set(wanted)):
            missing = next(i for i in wanted if i not in found)
            raise damaged(self.path, f"chunk {missing}, which its document lists, is missing")
        return [found[i] for i in wanted if i in found]

    def chunks_of(self, doc_id: str) -> list[Chunk]:
        """One document's chunks, in order."""
        return self.get_chunks(self.chunk_ids_of([doc_id], strict=False).tolist(), strict=True)

    def iter_chunks(self, batch_size: int = 4096, min_id: int = 0) -> Iterator[tuple[int, str]]:
        """Yield ``(chunk_id, text)`` of every chunk with id >= ``min_id``, by id (each batch reads the texts of its
        documents once)."""
        last, scanned = min_id - 1, 0
        docs: dict[str, _DocumentRow] = {}
        while True:
            rows = self.conn.execute(f"SELECT {_CHUNK_OWN} FROM chunks c WHERE c.id > ? "
                                     "ORDER BY c.id LIMIT ?", (last, batch_size)).fetchall()
            if not rows:
                break
            wanted = {r[1] for r in rows}
            docs = {i: d for i, d in docs.items() if i in wanted}  # a long document spans batches: read it once
            docs.update(self._document_rows(sorted(wanted - docs.keys())))
            for row in rows:
                doc = docs.get(row[1])
                text = _slice(doc.data, row[5], row[6]) if doc is not None else None
                if doc is None or chunk_crc(row[:11], text, doc.source, doc.metadata) != row[11]:
                    raise damaged(self.path, f"chunk {row[0]} does not match its checksum")
                yield int(row[0]), doc.text[row[3]:row[4]]
            scanned += len(rows)
            last = int(rows[-1][0])
        if min_id == 0:
            self._check_scan(scanned)

    def iter_vectors(self, dim: int, batch_size: int = 8192, min_id: int = 0) -> Iterator[tuple[np.ndarray,
                                                                                                  np.ndarray]]:
        """Yield ``(ids, vectors)`` batches of the stored vectors with id >= ``min_id``, by id."""
        last, scanned = min_id - 1, 0
        while True:
            rows = self.conn.execute("SELECT id, vector, vcrc FROM chunks WHERE id > ? ORDER BY id LIMIT ?",
                                     (last, batch_size)).fetchall()
            if not rows:
                break
            ids, vectors = self._vectors(rows, dim)
            yield ids, vectors
            scanned += len(rows)
            last = int(ids[-1])
        if min_id == 0:
            self._check_scan(scanned)

    def _vectors(self, rows: Sequence[Sequence[Any]], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, vectors)`` of checked ``(id, vector, vcrc)`` rows."""
        for chunk_id, blob, crc in rows:
            if vector_crc(chunk_id, blob) != crc:
                raise damaged(self.path, f"the vector of chunk {chunk_id} does not match its checksum")
        data = b"".join(r[1] for r in rows)
        if len(data) != len(rows) * dim * 4:
            raise damaged(self.path, f"it holds vectors that are not {dim} float32 values")
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return ids, np.frombuffer(data, dtype="<f4").reshape(len(rows), dim).astype(np.float32)

    def vectors_of(self, ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, vectors)`` of the stored ids among ``ids``."""
        rows: list[Sequence[Any]] = []
        for part, marks in _parts([int(i) for i in ids]):
            rows.extend(self.conn.execute(f"SELECT id, vector, vcrc FROM chunks WHERE id IN ({marks})", part))
        return self._vectors(rows, dim)

    def all_chunk_ids(self) -> np.ndarray:
        ids = np.fromiter((r[0] for r in self.conn.execute("SELECT id FROM chunks NOT INDEXED")), dtype=np.int64)
        self._check_scan(len(ids))
        return ids

    def _check_filter_fields(self) -> None:
        """Check the filter fields of every document, once per commit: a damaged one could make a filter miss a
        document or match it wrongly, and the filters read them inside SQLite."""
        generation = self.get_meta("generation", 0)
        if self._filters_checked == generation:
            return
        for doc_id, fmeta, fcrc in self.conn.execute("SELECT doc_id, fmeta, fcrc FROM documents"):
            if row_crc((doc_id, fmeta)) != fcrc:
                raise damaged(self.path, f"the filter fields of document {doc_id!r} do not match their checksum")
        if not self._in_tx:
            self._filters_checked = generation

    def doc_ids_where(self, sql: str, params: Sequence[Any]) -> list[str]:
        """Ids of the documents whose filter JSON (``d.fmeta``) satisfies the SQL expression, sorted."""
        self._check_filter_fields()
        q = f"SELECT d.doc_id FROM documents d WHERE {sql} ORDER BY d.doc_id"
        return [r[0] for r in self.conn.execute(q, list(params))]

    def chunk_ids_where(self, sql: str, params: Sequence[Any]) -> np.ndarray:
        """The chunk ids of the documents whose filter JSON (``d.fmeta``) satisfies the SQL expression."""
        self._check_filter_fields()
        rows = self.conn.execute(f"SELECT {_DOC_COLS} FROM documents d WHERE {sql}", list(params))
        return _concat([self._checked_document(row).ids() for row in rows])

    def docs_matching(self, predicate: Callable[[Mapping[str, Any]], bool]) -> list[str]:
        """Ids of the documents whose filter fields satisfy a Python predicate, sorted."""
        out = []
        for doc_id, fmeta, fcrc in self.conn.execute("SELECT doc_id, fmeta, fcrc FROM documents ORDER BY doc_id"):
            if row_crc((doc_id, fmeta)) != fcrc:
                raise damaged(self.path, f"the filter fields of document {doc_id!r} do not match their checksum")
            if predicate(json.loads(fmeta)):
                out.append(doc_id)
        return out

    def chunk_ids_of(self, doc_ids: Sequence[str], strict: bool = True) -> np.ndarray:
        """The chunk ids of the documents ``doc_ids``, each document's in order (``strict``: the documents were
        found by a filter, so one not found is damage; else unknown ones are left out)."""
        rows = self._document_rows(doc_ids, text=False)
        if strict and len(rows) != len(set(doc_ids)):
            missing = next(i for i in doc_ids if i not in rows)
            raise damaged(self.path, f"document {missing!r} cannot be found by its id")
        return _concat([rows[i].ids() for i in doc_ids if i in rows])


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


class _DocumentRow:
    """A checked document row: its source, metadata JSON, chunk ids and (when read) text and its UTF-8 bytes."""

    __slots__ = ("chunk_ids", "data", "metadata", "source", "text")

    def __init__(self, source: str, metadata: str, chunk_ids: bytes, text: str, data: bytes | None) -> None:
        self.source, self.metadata, self.chunk_ids, self.text, self.data = source, metadata, chunk_ids, text, data

    def ids(self) -> np.ndarray:
        return np.frombuffer(self.chunk_ids, dtype="<i8").astype(np.int64)


def _slice(data: bytes | None, start: Any, end: Any) -> bytes | None:
    """``data[start:end]``, or None when the offsets read back are not integers (then the checksum fails)."""
    if data is None or not isinstance(start, int) or not isinstance(end, int):
        return None
    return data[start:end]


class _Snapshot:
    """A read transaction, reentrant: the outermost one begins and ends it; inside a write transaction it is
    that transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __enter__(self) -> Store:
        store = self.store
        if store._snapshots == 0 and not store.in_transaction:
            store.conn.execute("BEGIN")
            store._snapshot_open = True
        store._snapshots += 1
        return store

    def __exit__(self, *exc: object) -> None:
        store = self.store
        store._snapshots -= 1
        if store._snapshots == 0 and store._snapshot_open:
            store._snapshot_open = False
            store.conn.execute("COMMIT")
