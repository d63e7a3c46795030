"""Opening a local store of any format: the manifest checked, and a store of an older format (1 or 2) brought to
the current one when it is opened for writing (:func:`checked_manifest`). The store itself is
:mod:`~qwen3_rag.indexers.store`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from qwen3_rag.indexers.connection import GuardedConnection, damaged, row_crc, vector_crc
from qwen3_rag.indexers.manifest import FORMAT_VERSION, IndexDamagedError
from qwen3_rag.indexers.store import (
    INSERT_CHUNK,
    INSERT_DOCUMENT,
    SCHEMA,
    Store,
    byte_offsets,
    chunk_crc,
    document_crcs,
    ids_blob,
)
from qwen3_rag.types import Chunk, Document, line_spans

logger = logging.getLogger(__name__)

__all__ = ["checked_manifest", "upgrade"]


def upgrade(store: Store, version: int) -> None:
    """Bring a store of an older format (1 or 2) to this one, inside one transaction (a crash leaves the old one).

    Format 2 gave each chunk its byte offsets and lines (its text is read from its document); format 3 gave every
    row its checksums and each document the list of its chunk ids.
    """
    if version not in (1, 2):
        raise ValueError(f"cannot upgrade index format {version}")
    store.begin()
    try:
        _to_format_3(store, version)
        manifest = store.get_meta("manifest")
        manifest["format_version"] = FORMAT_VERSION
        store.set_meta("manifest", manifest)
        store.commit()
    except BaseException:
        store.rollback()
        raise


def _to_format_3(store: Store, version: int) -> None:
    conn = store.conn
    conn.execute("DROP INDEX IF EXISTS documents_source")  # the schema makes it again, on the new table
    conn.execute("ALTER TABLE documents RENAME TO old_documents")
    conn.execute("ALTER TABLE chunks RENAME TO old_chunks")  # keeps its (doc_id, position) index until dropped
    for table in ("meta", "removals"):
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if have and "crc" not in have:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN crc INTEGER NOT NULL DEFAULT 0")
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    store.checked = True
    for key, value in conn.execute("SELECT key, value FROM meta").fetchall():
        conn.execute("UPDATE meta SET crc = ? WHERE key = ?", (row_crc((key, value)), key))
    conn.executemany("UPDATE removals SET crc = ? WHERE rowid = ?",
                     [(row_crc((g, i)), rowid) for rowid, g, i in
                      conn.execute("SELECT rowid, generation, id FROM removals").fetchall()])
    for (doc_id,) in conn.execute("SELECT doc_id FROM old_documents").fetchall():
        doc = Document(*conn.execute("SELECT doc_id, text, source FROM old_documents WHERE doc_id = ?",
                                     (doc_id,)).fetchone())
        metadata, fmeta, now = conn.execute("SELECT metadata, fmeta, updated_at FROM old_documents WHERE doc_id = ?",
                                            (doc_id,)).fetchone()
        digest = conn.execute("SELECT content_hash FROM old_documents WHERE doc_id = ?", (doc_id,)).fetchone()[0]
        rows = _old_chunks(conn, doc, version)
        listed = ids_blob([r[0] for r in rows])
        conn.execute(INSERT_DOCUMENT,
                     (doc_id, doc.source, digest, metadata, fmeta, len(rows), listed, now,
                      *document_crcs(doc_id, doc.source, digest, doc.text, metadata, fmeta, len(rows), listed),
                      doc.text))
        data = doc.text.encode("utf-8", "surrogatepass")
        conn.executemany(
            INSERT_CHUNK,
            [(*r[:11], chunk_crc(r[:11], data[r[5]:r[6]], doc.source, metadata), vector_crc(r[0], r[11]), r[11])
             for r in rows])
    conn.execute("DROP TABLE old_chunks")
    conn.execute("DROP TABLE old_documents")


def _old_chunks(conn: GuardedConnection, doc: Document, version: int) -> list[tuple[Any, ...]]:
    """A document's chunks in a table of format ``version``, as rows of format 2 (id, doc_id, position,
    start_char, end_char, start_byte, end_byte, start_line, end_line, page, headings, vector)."""
    if version == 2:
        return conn.execute("SELECT id, doc_id, position, start_char, end_char, start_byte, end_byte, start_line, "
                            "end_line, page, headings, vector FROM old_chunks WHERE doc_id = ? ORDER BY position",
                            (doc.id,)).fetchall()
    rows = conn.execute("SELECT id, doc_id, position, start_char, end_char, page, headings, vector FROM old_chunks "
                        "WHERE doc_id = ? ORDER BY position", (doc.id,)).fetchall()
    spans = [(int(r[3]), int(r[4])) for r in rows]
    chunks = [Chunk(doc.id, 0, "", a, b) for a, b in spans]
    return [(*r[:5], b[0], b[1], ln[0], ln[1], *r[5:])
            for r, b, ln in zip(rows, byte_offsets(doc.text, chunks), line_spans(doc.text, spans), strict=True)]


def checked_manifest(store: Store, root: Path, read_only: bool) -> dict[str, Any]:
    manifest = store.get_meta("manifest")
    if not isinstance(manifest, dict):
        raise damaged(store.path, "it holds no manifest")
    version = manifest.get("format_version")
    if version in (1, 2) and not read_only:
        logger.warning("upgrading the index at %s from format %d to %d", root, version, FORMAT_VERSION)
        upgrade(store, version)
        manifest = store.get_meta("manifest")
    elif version in (1, 2):
        raise IndexDamagedError(f"{str(root)!r} has index format {version}; open it once for writing (e.g. "
                                f"Index.open(path), or `qwen3-rag index` on it) to upgrade it to format "
                                f"{FORMAT_VERSION}")
    elif version != FORMAT_VERSION:
        raise IndexDamagedError(f"{str(root)!r} has index format version {version}; this qwen3-rag reads version "
                                f"{FORMAT_VERSION}. Upgrade qwen3-rag, or rebuild the index.")
    return dict(manifest)
