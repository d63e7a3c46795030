"""The SQLite document store of a local index: documents, chunks (offsets and float32 vectors) and metadata.

The store is the single source of truth of an index directory. It runs in WAL mode, so readers see the last
committed state while a writer works, and a crash at any instant leaves the last committed transaction intact.
Each text is stored once, in its document: a chunk keeps its character and UTF-8 byte offsets and its text is read
back as a slice of the document. Every chunk keeps its vector as a little-endian float32 BLOB, so the search
structures can always be rebuilt, compacted or re-trained from the store alone. The ``removals`` table logs which
chunk ids each commit removed, so a reader holding an older state catches up without rescanning every id.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qwen3_rag.indexers.chunking import PAGE_STARTS_KEY
from qwen3_rag.indexers.manifest import FORMAT_VERSION, IndexDamagedError, disk_error
from qwen3_rag.types import Chunk, Document, line_spans

STORE_FILE = "store.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    fmeta TEXT NOT NULL,
    n_chunks INTEGER NOT NULL,
    updated_at REAL NOT NULL
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
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id, position);
CREATE TABLE IF NOT EXISTS removals (generation INTEGER NOT NULL, id INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS removals_generation ON removals(generation);
"""

#: Ids per ``IN (...)`` query, well under SQLite's limit on bound parameters.
_IN_LIMIT = 500
#: The chunk text, sliced from its document's UTF-8 bytes (SQLite's substr on TEXT stops at a NUL character).
logger = logging.getLogger(__name__)

_CHUNK_TEXT = "substr(CAST(d.text AS BLOB), c.start_byte + 1, c.end_byte - c.start_byte)"
_CHUNK_COLS = ("c.id, c.doc_id, c.position, c.start_char, c.end_char, c.start_line, c.end_line, c.page, "
               f"c.headings, d.source, d.metadata, {_CHUNK_TEXT}")


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
    meta = meta_cache.get(row[1])
    if meta is None:
        meta = meta_cache[row[1]] = _metadata(row[10])
    return Chunk(doc_id=row[1], index=int(row[2]), text=bytes(row[11]).decode("utf-8", "surrogatepass"),
                 start=int(row[3]), end=int(row[4]), page=row[7], headings=tuple(json.loads(row[8])),
                 metadata=meta, start_line=int(row[5]), end_line=int(row[6]), chunk_id=int(row[0]), source=row[9])


def _damaged(path: Path, exc: sqlite3.DatabaseError) -> IndexDamagedError:
    return IndexDamagedError(
        f"{str(path)!r} is not a readable index store ({exc}); it is damaged or not a qwen3-rag index. Restore it "
        "from a backup, or build the index again in a new directory (the sources are not affected)")


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
        try:
            self.conn = self._connect()
            if not read_only:
                self.conn.execute("PRAGMA journal_mode=WAL")
                # NORMAL in WAL mode: a process crash never loses a commit; a power cut may lose the last ones but
                # never corrupts the database.
                self.conn.execute("PRAGMA synchronous=NORMAL")
                self.conn.executescript(SCHEMA)
            self.conn.execute("PRAGMA busy_timeout=30000")
            self.conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise _damaged(self.path, exc) from None
        self._in_tx = False
        self._snapshots = 0  # depth of nested snapshot() blocks
        self._snapshot_open = False

    def _connect(self) -> sqlite3.Connection:
        if not self.read_only:
            return sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        uri = self.path.resolve().as_uri()
        writable = all(os.access(p, os.W_OK) for p in (self.path, self.path.parent))
        # without write access SQLite cannot make the WAL index (-shm): read the file as an immutable snapshot
        mode = "mode=ro" if writable else "mode=ro&immutable=1"
        return sqlite3.connect(f"{uri}?{mode}", uri=True, isolation_level=None, check_same_thread=False)

    def close(self, checkpoint: bool = False) -> None:
        """Close; ``checkpoint`` folds the write-ahead log into the database file (a writer, at the end)."""
        if self._in_tx:
            self.rollback()
        if checkpoint and not self.read_only:
            try:
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError:  # a reader holds the log: it is folded in later
                pass
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
            self._execute("BEGIN IMMEDIATE")
            self._in_tx = True

    def commit(self) -> None:
        if self._in_tx:
            self._execute("COMMIT")
            self._in_tx = False

    def rollback(self) -> None:
        if self._in_tx:
            self._in_tx = False
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.OperationalError:  # SQLite already rolled back (e.g. after a disk-full error)
                pass

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        try:
            return self.conn.execute(sql, params)
        except sqlite3.OperationalError as exc:
            if "full" in str(exc):
                raise disk_error(OSError(28, str(exc)), self.path) from exc
            raise

    def snapshot(self) -> _Snapshot:
        """A read transaction: everything read inside it sees one committed state."""
        return _Snapshot(self)

    # -- meta -----------------------------------------------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value: Any) -> None:
        self._execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, dumps(value)))

    def allocate_ids(self, n: int) -> np.ndarray:
        """Reserve ``n`` new chunk ids from the persisted monotonic counter (inside the current transaction)."""
        start = int(self.get_meta("next_id", 0))
        self.set_meta("next_id", start + n)
        return np.arange(start, start + n, dtype=np.int64)

    # -- writes
    # -------------------------------------------------------------------------------------------------

    def put_documents(self, items: Sequence[tuple[Document, Sequence[Chunk]]], ids: np.ndarray,
                      vectors: np.ndarray) -> None:
        """Insert documents and their chunks (the caller deleted any previous versions).

        ``ids`` and ``vectors`` hold one row per chunk, the chunks of ``items`` in order.

        Raises:
            ValueError: a document's metadata holds a value JSON cannot (NaN, infinity).
        """
        now = time.time()
        doc_rows = []
        for doc, chunks in items:
            try:
                doc_rows.append((doc.id, doc.source, doc.content_hash, doc.text, dumps(doc.metadata),
                                 dumps(filter_fields(doc)), len(chunks), now))
            except ValueError as exc:
                raise ValueError(f"document {doc.id!r}: its metadata cannot be stored as JSON ({exc}); replace "
                                 "NaN and infinite numbers with null or a string") from None
        self.conn.executemany("INSERT INTO documents(doc_id, source, content_hash, text, metadata, fmeta, n_chunks, "
                              "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", doc_rows)
        vecs = np.ascontiguousarray(vectors, dtype="<f4")
        rows = ((doc.id, c, b) for doc, chunks in items for c, b in zip(chunks, byte_offsets(doc.text, chunks),
                                                                        strict=True))
        self.conn.executemany(
            "INSERT INTO chunks(id, doc_id, position, start_char, end_char, start_byte, end_byte, start_line, "
            "end_line, page, headings, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(int(i), doc_id, c.index, c.start, c.end, b[0], b[1], c.start_line, c.end_line, c.page,
              dumps(list(c.headings)), v.tobytes())
             for i, (doc_id, c, b), v in zip(ids, rows, vecs, strict=True)])

    def delete_documents(self, doc_ids: Sequence[str], generation: int) -> list[int]:
        """Delete documents and their chunks; return the removed chunk ids, logged under ``generation`` (the
        commit being made)."""
        removed: list[int] = []
        for part, marks in _parts(doc_ids):
            removed.extend(r[0] for r in self.conn.execute(f"SELECT id FROM chunks WHERE doc_id IN ({marks})", part))
            self.conn.execute(f"DELETE FROM chunks WHERE doc_id IN ({marks})", part)
            self.conn.execute(f"DELETE FROM documents WHERE doc_id IN ({marks})", part)
        self.conn.executemany("INSERT INTO removals(generation, id) VALUES (?, ?)", [(generation, i) for i in removed])
        return removed

    def removed_since(self, generation: int) -> np.ndarray:
        """The chunk ids removed by the commits after ``generation``."""
        rows = self.conn.execute("SELECT id FROM removals WHERE generation > ?", (generation,))
        return np.fromiter((r[0] for r in rows), dtype=np.int64)

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

    def document_states(self, doc_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """``doc_id -> (content hash, number of chunks)`` of each of ``doc_ids`` that exists."""
        out: dict[str, tuple[str, int]] = {}
        for part, marks in _parts(doc_ids):
            rows = self.conn.execute(
                f"SELECT doc_id, content_hash, n_chunks FROM documents WHERE doc_id IN ({marks})", part)
            out.update((doc_id, (digest, int(n))) for doc_id, digest, n in rows)
        return out

    def get_documents(self, doc_ids: Sequence[str]) -> list[Document]:
        """Documents in the order asked; unknown ids are left out."""
        found: dict[str, Document] = {}
        for part, marks in _parts(list(doc_ids)):
            for row in self.conn.execute(
                    f"SELECT doc_id, text, source, metadata FROM documents WHERE doc_id IN ({marks})", part):
                found[row[0]] = Document(id=row[0], text=row[1], source=row[2], metadata=json.loads(row[3]))
        return [found[i] for i in doc_ids if i in found]

    def iter_documents(self) -> Iterator[tuple[str, str, str]]:
        """Yield ``(doc_id, source, content_hash)`` for every document, by id."""
        yield from self.conn.execute("SELECT doc_id, source, content_hash FROM documents ORDER BY doc_id")

    def get_chunks(self, ids: Iterable[int]) -> list[Chunk]:
        """Chunks by id, in the order asked; unknown ids are left out."""
        wanted = [int(i) for i in ids]
        found: dict[int, Chunk] = {}
        cache: dict[str, dict[str, Any]] = {}
        for part, marks in _parts(wanted):
            q = f"SELECT {_CHUNK_COLS} FROM chunks c JOIN documents d ON d.doc_id = c.doc_id WHERE c.id IN ({marks})"
            for row in self.conn.execute(q, part):
                found[int(row[0])] = _chunk(row, cache)
        return [found[i] for i in wanted if i in found]

    def chunks_of(self, doc_id: str) -> list[Chunk]:
        q = (f"SELECT {_CHUNK_COLS} FROM chunks c JOIN documents d ON d.doc_id = c.doc_id WHERE c.doc_id = ? "
             "ORDER BY c.position")
        cache: dict[str, dict[str, Any]] = {}
        return [_chunk(row, cache) for row in self.conn.execute(q, (doc_id,))]

    def chunk_texts(self, ids: Sequence[int]) -> list[tuple[int, str]]:
        """``(chunk_id, text)`` of the chunks ``ids`` that exist, in the order asked; each document's text is read
        once, however many of its chunks are asked for."""
        spans: dict[int, tuple[str, int, int]] = {}
        for part, marks in _parts([int(i) for i in ids]):
            spans.update((int(r[0]), (r[1], r[2], r[3])) for r in self.conn.execute(
                f"SELECT id, doc_id, start_char, end_char FROM chunks WHERE id IN ({marks})", part))
        texts = {d.id: d.text for d in self.get_documents(sorted({s[0] for s in spans.values()}))}
        return [(int(i), texts[spans[i][0]][spans[i][1]:spans[i][2]]) for i in ids if int(i) in spans]

    def iter_chunks(self, batch_size: int = 4096, min_id: int = 0) -> Iterator[tuple[int, str]]:
        """Yield ``(chunk_id, text)`` of every chunk with id >= ``min_id``, by id (each batch reads the texts of its
        documents once)."""
        last = min_id - 1
        while True:
            rows = self.conn.execute("SELECT id, doc_id, start_char, end_char FROM chunks WHERE id > ? ORDER BY id "
                                     "LIMIT ?", (last, batch_size)).fetchall()
            if not rows:
                return
            texts = {d.id: d.text for d in self.get_documents(sorted({r[1] for r in rows}))}
            yield from ((int(i), texts[doc_id][a:b]) for i, doc_id, a, b in rows)
            last = int(rows[-1][0])

    def iter_vectors(self, dim: int, batch_size: int = 8192, min_id: int = 0) -> Iterator[tuple[np.ndarray,
                                                                                                  np.ndarray]]:
        """Yield ``(ids, vectors)`` batches of the stored vectors with id >= ``min_id``, by id."""
        last = min_id - 1
        while True:
            rows = self.conn.execute("SELECT id, vector FROM chunks WHERE id > ? ORDER BY id LIMIT ?",
                                     (last, batch_size)).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            yield ids, self._matrix([r[1] for r in rows], dim)
            last = int(ids[-1])

    def _matrix(self, blobs: list[bytes], dim: int) -> np.ndarray:
        data = b"".join(blobs)
        if len(data) != len(blobs) * dim * 4:
            raise IndexDamagedError(f"{str(self.path)!r} holds vectors that are not {dim} float32 values; the store "
                                    "is damaged: rebuild the index in a new directory")
        return np.frombuffer(data, dtype="<f4").reshape(len(blobs), dim).astype(np.float32)

    def vectors_of(self, ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, vectors)`` of the stored ids among ``ids``."""
        out_ids: list[int] = []
        blobs: list[bytes] = []
        for part, marks in _parts([int(i) for i in ids]):
            for i, blob in self.conn.execute(f"SELECT id, vector FROM chunks WHERE id IN ({marks})", part):
                out_ids.append(int(i))
                blobs.append(blob)
        return np.asarray(out_ids, dtype=np.int64), self._matrix(blobs, dim)

    def all_chunk_ids(self) -> np.ndarray:
        return np.fromiter((r[0] for r in self.conn.execute("SELECT id FROM chunks")), dtype=np.int64)

    def ids_where(self, sql: str, params: Sequence[Any]) -> np.ndarray:
        """Chunk ids whose document's filter JSON (``d.fmeta``) satisfies the SQL expression."""
        q = f"SELECT c.id FROM chunks c JOIN documents d ON d.doc_id = c.doc_id WHERE {sql}"
        return np.fromiter((r[0] for r in self.conn.execute(q, list(params))), dtype=np.int64)

    def doc_ids_where(self, sql: str, params: Sequence[Any]) -> list[str]:
        """Ids of the documents whose filter JSON (``d.fmeta``) satisfies the SQL expression, sorted."""
        q = f"SELECT d.doc_id FROM documents d WHERE {sql} ORDER BY d.doc_id"
        return [r[0] for r in self.conn.execute(q, list(params))]

    def docs_matching(self, predicate: Callable[[Mapping[str, Any]], bool]) -> list[str]:
        """Ids of the documents whose filter fields satisfy a Python predicate, sorted."""
        rows = self.conn.execute("SELECT doc_id, fmeta FROM documents ORDER BY doc_id")
        return [doc_id for doc_id, fmeta in rows if predicate(json.loads(fmeta))]

    def chunk_ids_of(self, doc_ids: Sequence[str]) -> np.ndarray:
        """The chunk ids of the documents ``doc_ids``."""
        out: list[int] = []
        for part, marks in _parts(list(doc_ids)):
            out.extend(r[0] for r in self.conn.execute(f"SELECT id FROM chunks WHERE doc_id IN ({marks})", part))
        return np.asarray(out, dtype=np.int64)


def upgrade(store: Store, version: int) -> None:
    """Bring a store of an older format to this one, inside one transaction (a crash leaves the old one)."""
    if version != 1:
        raise ValueError(f"cannot upgrade index format {version}")
    conn = store.conn
    store.begin()
    try:
        conn.execute("DROP INDEX IF EXISTS chunks_doc")  # the schema below makes it again, on the new table
        conn.execute("ALTER TABLE chunks RENAME TO chunks_v1")
        for statement in SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        docs = {doc_id: text for doc_id, text in conn.execute("SELECT doc_id, text FROM documents")}
        rows = conn.execute("SELECT id, doc_id, position, start_char, end_char, page, headings, vector "
                            "FROM chunks_v1 ORDER BY doc_id, position").fetchall()
        by_doc: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            by_doc.setdefault(row[1], []).append(row)
        for doc_id, doc_rows in by_doc.items():
            text = docs.get(doc_id, "")
            spans = [(int(r[3]), int(r[4])) for r in doc_rows]
            chunks = [Chunk(doc_id, 0, "", a, b) for a, b in spans]
            conn.executemany(
                "INSERT INTO chunks(id, doc_id, position, start_char, end_char, start_byte, end_byte, start_line, "
                "end_line, page, headings, vector) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r[0], r[1], r[2], r[3], r[4], b[0], b[1], ln[0], ln[1], r[5], r[6], r[7])
                 for r, b, ln in zip(doc_rows, byte_offsets(text, chunks), line_spans(text, spans), strict=True)])
        conn.execute("DROP TABLE chunks_v1")
        manifest = store.get_meta("manifest")
        manifest["format_version"] = 2
        store.set_meta("manifest", manifest)
        store.commit()
    except BaseException:
        store.rollback()
        raise


def checked_manifest(store: Store, root: Path, read_only: bool) -> dict[str, Any]:
    manifest = store.get_meta("manifest")
    if not isinstance(manifest, dict):
        raise IndexDamagedError(f"{str(root)!r}: the store holds no manifest; the index is damaged or was never "
                                "finished being created. Build it again in a new directory.")
    version = manifest.get("format_version")
    if version == 1 and not read_only:
        logger.warning("upgrading the index at %s from format 1 to %d", root, FORMAT_VERSION)
        upgrade(store, 1)
        manifest = store.get_meta("manifest")
    elif version == 1:
        raise IndexDamagedError(f"{str(root)!r} has index format 1; open it once for writing (e.g. Index.open(path)) "
                                f"to upgrade it to format {FORMAT_VERSION}")
    elif version != FORMAT_VERSION:
        raise IndexDamagedError(f"{str(root)!r} has index format version {version}; this qwen3-rag reads version "
                                f"{FORMAT_VERSION}. Upgrade qwen3-rag, or rebuild the index.")
    return dict(manifest)


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
