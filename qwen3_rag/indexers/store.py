"""The SQLite document store: documents, chunks (with their float32 vectors) and index metadata.

The store is the single source of truth of an index directory. It runs in WAL mode, so readers see the last
committed state while a writer works, and a crash at any instant leaves the last committed transaction intact.
Every chunk row keeps its vector as a little-endian float32 BLOB, so the FAISS file can always be rebuilt,
compacted or re-trained from the store alone.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qwen3_rag.indexers.chunking import PAGE_STARTS_KEY
from qwen3_rag.types import Chunk, Document, Hit

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
    text TEXT NOT NULL,
    start_char INTEGER NOT NULL,
    end_char INTEGER NOT NULL,
    page INTEGER,
    headings TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id, position);
"""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


#: Ids per ``IN (...)`` query, well under SQLite's limit on bound parameters.
_IN_LIMIT = 500


def _parts(values: Sequence[Any]) -> Iterator[tuple[Sequence[Any], str]]:
    """``values`` in slices short enough for one ``IN (...)`` query, each with its ``?,?,...`` placeholders."""
    for start in range(0, len(values), _IN_LIMIT):
        part = values[start : start + _IN_LIMIT]
        yield part, ",".join("?" * len(part))


def _filter_fields(doc: Document) -> dict[str, Any]:
    """What metadata filters match a document's chunks on: its id, source and metadata (page starts left out)."""
    fields: dict[str, Any] = {"doc_id": doc.id, "source": doc.source}
    fields.update({k: v for k, v in doc.metadata.items() if k != PAGE_STARTS_KEY})
    return fields


@dataclass(frozen=True)
class StoredChunk:
    """A chunk as stored: its stable id, position, text, offsets, page, headings and its document's
    metadata."""

    chunk_id: int
    doc_id: str
    index: int
    text: str
    start: int
    end: int
    source: str = ""
    page: int | None = None
    headings: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_hit(self, score: float, scores: Mapping[str, float] | None = None) -> Hit:
        """This chunk as a :class:`~qwen3_rag.types.Hit` with ``score`` (and ``scores``, default
        ``dense``)."""
        return Hit(
            chunk_id=self.chunk_id,
            doc_id=self.doc_id,
            text=self.text,
            score=float(score),
            source=self.source,
            start=self.start,
            end=self.end,
            page=self.page,
            headings=self.headings,
            metadata=self.metadata,
            scores=dict(scores) if scores is not None else {"dense": float(score)},
        )

    def to_chunk(self) -> Chunk:
        """This chunk as a :class:`~qwen3_rag.types.Chunk`."""
        return Chunk(
            doc_id=self.doc_id,
            index=self.index,
            text=self.text,
            start=self.start,
            end=self.end,
            page=self.page,
            headings=self.headings,
            metadata=self.metadata,
        )


class Store:
    """SQLite access for one index directory; see the module docstring.

    Args:
        path: The database file.
        read_only: Open with ``mode=ro``; writes raise ``sqlite3.OperationalError``.
    """

    def __init__(self, path: str | Path, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if read_only:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            self.conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        else:
            self.conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a process crash never loses a commit; a power cut may lose the last ones but
            # never corrupts the database.
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(SCHEMA)
        self.conn.execute("PRAGMA busy_timeout=30000")
        self._in_tx = False

    def close(self) -> None:
        if self._in_tx:
            self.rollback()
        self.conn.close()

    # -- transactions
    # -------------------------------------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return self._in_tx

    def begin(self) -> None:
        if not self._in_tx:
            self.conn.execute("BEGIN IMMEDIATE")
            self._in_tx = True

    def commit(self) -> None:
        if self._in_tx:
            self.conn.execute("COMMIT")
            self._in_tx = False

    def rollback(self) -> None:
        if self._in_tx:
            self.conn.execute("ROLLBACK")
            self._in_tx = False

    def snapshot(self) -> _Snapshot:
        """A read transaction: everything read inside it sees one committed state."""
        return _Snapshot(self)

    # -- meta -----------------------------------------------------------------------------------------------

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value: Any) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, _dumps(value)))

    def allocate_ids(self, n: int) -> np.ndarray:
        """Reserve ``n`` new chunk ids from the persisted monotonic counter (inside the current
        transaction)."""
        start = int(self.get_meta("next_id", 0))
        self.set_meta("next_id", start + n)
        return np.arange(start, start + n, dtype=np.int64)

    # -- writes
    # -------------------------------------------------------------------------------------------------

    def put_documents(
        self, items: Sequence[tuple[Document, Sequence[Chunk]]], ids: np.ndarray, vectors: np.ndarray
    ) -> None:
        """Insert documents and their chunks (the caller deleted any previous versions).

        ``ids`` and ``vectors`` hold one row per chunk, the chunks of ``items`` in order.
        """
        now = time.time()
        self.conn.executemany(
            "INSERT INTO documents"
            "(doc_id, source, content_hash, text, metadata, fmeta, n_chunks, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (doc.id, doc.source, doc.content_hash, doc.text, _dumps(doc.metadata),
                 _dumps(_filter_fields(doc)), len(chunks), now)
                for doc, chunks in items
            ],
        )
        vecs = np.ascontiguousarray(vectors, dtype="<f4")
        rows = ((doc.id, c) for doc, chunks in items for c in chunks)
        self.conn.executemany(
            "INSERT INTO chunks(id, doc_id, position, text, start_char, end_char, page, headings, vector) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (int(i), doc_id, c.index, c.text, c.start, c.end, c.page, _dumps(list(c.headings)), v.tobytes())
                for i, (doc_id, c), v in zip(ids, rows, vecs, strict=True)
            ],
        )

    def delete_documents(self, doc_ids: Sequence[str]) -> list[int]:
        """Delete documents and their chunks; return the removed chunk ids (none for ids that do not exist)."""
        removed: list[int] = []
        for part, marks in _parts(doc_ids):
            removed.extend(r[0] for r in self.conn.execute(f"SELECT id FROM chunks WHERE doc_id IN ({marks})", part))
            self.conn.execute(f"DELETE FROM chunks WHERE doc_id IN ({marks})", part)
            self.conn.execute(f"DELETE FROM documents WHERE doc_id IN ({marks})", part)
        return removed

    # -- reads
    # --------------------------------------------------------------------------------------------------

    def count_documents(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0])

    def count_chunks(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def document_hash(self, doc_id: str) -> str | None:
        row = self.conn.execute("SELECT content_hash FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        return row[0] if row else None

    def document_states(self, doc_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """``doc_id -> (content hash, number of chunks)`` of each of ``doc_ids`` that exists."""
        out: dict[str, tuple[str, int]] = {}
        for part, marks in _parts(doc_ids):
            rows = self.conn.execute(
                f"SELECT doc_id, content_hash, n_chunks FROM documents WHERE doc_id IN ({marks})", part)
            out.update((doc_id, (digest, int(n))) for doc_id, digest, n in rows)
        return out

    def get_document(self, doc_id: str) -> Document | None:
        row = self.conn.execute(
            "SELECT doc_id, text, source, metadata FROM documents WHERE doc_id = ?", (doc_id,)
        ).fetchone()
        return Document(id=row[0], text=row[1], source=row[2], metadata=json.loads(row[3])) if row else None

    def iter_documents(self, with_text: bool = False) -> Iterator[tuple[str, str, str]]:
        """Yield ``(doc_id, source, content_hash)`` for every document, by id."""
        cur = self.conn.execute("SELECT doc_id, source, content_hash FROM documents ORDER BY doc_id")
        yield from cur

    _CHUNK_COLS = (
        "c.id, c.doc_id, c.position, c.text, c.start_char, c.end_char, c.page, c.headings, d.source, "
        "d.metadata"
    )

    def _row_to_chunk(self, row: Sequence[Any], meta_cache: dict[str, dict[str, Any]]) -> StoredChunk:
        meta = meta_cache.get(row[1])
        if meta is None:
            meta = {k: v for k, v in json.loads(row[9]).items() if k != PAGE_STARTS_KEY}
            meta_cache[row[1]] = meta
        return StoredChunk(
            chunk_id=int(row[0]),
            doc_id=row[1],
            index=int(row[2]),
            text=row[3],
            start=int(row[4]),
            end=int(row[5]),
            page=row[6],
            headings=tuple(json.loads(row[7])),
            source=row[8],
            metadata=meta,
        )

    def get_chunks(self, ids: Iterable[int]) -> list[StoredChunk]:
        """Chunks by id, in the order asked; unknown ids are left out."""
        wanted = [int(i) for i in ids]
        found: dict[int, StoredChunk] = {}
        cache: dict[str, dict[str, Any]] = {}
        for part, marks in _parts(wanted):
            q = (f"SELECT {self._CHUNK_COLS} FROM chunks c JOIN documents d ON d.doc_id = c.doc_id "
                 f"WHERE c.id IN ({marks})")
            for row in self.conn.execute(q, part):
                found[int(row[0])] = self._row_to_chunk(row, cache)
        return [found[i] for i in wanted if i in found]

    def chunks_of(self, doc_id: str) -> list[StoredChunk]:
        q = (
            f"SELECT {self._CHUNK_COLS} FROM chunks c JOIN documents d ON d.doc_id = c.doc_id "
            "WHERE c.doc_id = ? ORDER BY c.position"
        )
        cache: dict[str, dict[str, Any]] = {}
        return [self._row_to_chunk(row, cache) for row in self.conn.execute(q, (doc_id,))]

    def chunk_ids_of(self, doc_id: str) -> list[int]:
        return [
            r[0]
            for r in self.conn.execute("SELECT id FROM chunks WHERE doc_id = ? ORDER BY position", (doc_id,))
        ]

    def chunk_texts(self, ids: Sequence[int]) -> list[tuple[int, str]]:
        """``(chunk_id, text)`` of the chunks ``ids`` that exist, in the order asked."""
        wanted = [int(i) for i in ids]
        found: dict[int, str] = {}
        for part, marks in _parts(wanted):
            found.update(self.conn.execute(f"SELECT id, text FROM chunks WHERE id IN ({marks})", part))
        return [(i, found[i]) for i in wanted if i in found]

    def iter_chunks(self, batch_size: int = 1024) -> Iterator[tuple[int, str]]:
        """Yield ``(chunk_id, text)`` for every chunk, by id, reading ``batch_size`` rows at a time."""
        last = -1
        while True:
            rows = self.conn.execute(
                "SELECT id, text FROM chunks WHERE id > ? ORDER BY id LIMIT ?", (last, batch_size)
            ).fetchall()
            if not rows:
                return
            yield from ((int(i), t) for i, t in rows)
            last = int(rows[-1][0])

    def iter_vectors(self, dim: int, batch_size: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(ids, vectors)`` batches of every stored vector, by id."""
        last = -1
        while True:
            rows = self.conn.execute(
                "SELECT id, vector FROM chunks WHERE id > ? ORDER BY id LIMIT ?", (last, batch_size)
            ).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dim)
            yield ids, vecs.astype(np.float32)
            last = int(ids[-1])

    def vectors_of(self, ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, vectors)`` of the stored ids among ``ids``."""
        out_ids: list[int] = []
        blobs: list[bytes] = []
        ids = [int(i) for i in ids]
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            for i, blob in self.conn.execute(
                f"SELECT id, vector FROM chunks WHERE id IN ({','.join('?' * len(part))})", part
            ):
                out_ids.append(int(i))
                blobs.append(blob)
        vecs = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(out_ids), dim).astype(np.float32)
        return np.asarray(out_ids, dtype=np.int64), vecs

    def all_chunk_ids(self) -> np.ndarray:
        return np.fromiter((r[0] for r in self.conn.execute("SELECT id FROM chunks")), dtype=np.int64)

    def ids_where(self, sql: str, params: Sequence[Any]) -> np.ndarray:
        """Chunk ids whose document's filter JSON (``fmeta``) satisfies the SQL expression."""
        q = f"SELECT c.id FROM chunks c JOIN documents d ON d.doc_id = c.doc_id WHERE {sql}"
        return np.fromiter((r[0] for r in self.conn.execute(q, list(params))), dtype=np.int64)

    def ids_matching(self, predicate: Callable[[Mapping[str, Any]], bool]) -> np.ndarray:
        """Chunk ids whose document's metadata satisfies a Python predicate (evaluated once per document)."""
        out: list[int] = []
        for doc_id, fmeta in self.conn.execute("SELECT doc_id, fmeta FROM documents"):
            if predicate(json.loads(fmeta)):
                out.extend(self.chunk_ids_of(doc_id))
        return np.asarray(out, dtype=np.int64)


class _Snapshot:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._owns = False

    def __enter__(self) -> Store:
        if not self.store.in_transaction:
            self.store.conn.execute("BEGIN")
            self._owns = True
        return self.store

    def __exit__(self, *exc: object) -> None:
        if self._owns:
            self.store.conn.execute("COMMIT")
