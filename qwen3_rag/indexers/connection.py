"""The SQLite connection of a local index's store: every error comes out as what it means for the index, and the
checksums every stored row carries.

SQLite reports a damaged file in many ways (``database disk image is malformed``, ``file is not a database``,
``malformed JSON``, text that is not UTF-8, a constraint that cannot fail on a sound store), at any query and even
while rows are fetched. :class:`GuardedConnection` turns each into :class:`IndexDamagedError` naming the file and
what to do, a full disk into :class:`DiskFullError`, a database another process holds too long into
:class:`IndexLockedError`, and leaves the errors that are bugs (misuse of the API) alone.

SQLite keeps no checksum of its pages, so a damaged byte inside a value is read back as a different value. Every
row of the store therefore carries a CRC-32 of its values (:func:`row_crc`, :func:`vector_crc`), checked whenever
it is read back: a damaged store gives an error, never a different answer.
"""

from __future__ import annotations

import errno
import sqlite3
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from qwen3_rag.indexers.manifest import IndexDamagedError, IndexLockedError, disk_error

__all__ = ["GuardedConnection", "damaged", "row_crc", "sqlite_error", "str_crc", "vector_crc"]

# SQLite's primary result codes (https://www.sqlite.org/rescode.html) that are not damage
_BUSY, _LOCKED, _NOMEM, _READONLY, _INTERRUPT, _IOERR, _FULL, _CANTOPEN = 5, 6, 7, 8, 9, 10, 13, 14


def damaged(path: Path, problem: str) -> IndexDamagedError:
    """The error for a store that cannot be read as what it should be."""
    return IndexDamagedError(
        f"{str(path)!r} is damaged: {problem}. Restore the index directory from a backup, or build the index "
        "again in a new directory (the sources are not affected)")


def sqlite_error(exc: sqlite3.Error, path: Path) -> BaseException:
    """What a SQLite error on the store at ``path`` means for the index.

    Returns:
        :class:`DiskFullError` (out of space), :class:`IndexLockedError` (another process held the database past
        the busy timeout), :class:`PermissionError` (the file cannot be written), :class:`OSError` (an I/O error
        or a file that cannot be opened), :class:`MemoryError`, ``exc`` itself for a misuse of the API (a bug)
        or an interrupted query, and :class:`IndexDamagedError` for everything else.
    """
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if isinstance(exc, (sqlite3.ProgrammingError, sqlite3.InterfaceError)) or code == _INTERRUPT:
        return exc
    if code == _FULL:
        return disk_error(OSError(errno.ENOSPC, str(exc)), path)
    if code in (_BUSY, _LOCKED):
        return IndexLockedError(f"{str(path)!r} is held by another process ({exc}); try again when it is done")
    if code == _READONLY:
        return PermissionError(errno.EACCES, f"{str(path)!r} cannot be written ({exc}); open the index read-only, "
                                             "or give this user write access to its directory")
    if code in (_IOERR, _CANTOPEN):
        return OSError(errno.EIO, f"cannot read or write {str(path)!r} ({exc})")
    if code == _NOMEM:
        return MemoryError(f"SQLite ran out of memory reading {str(path)!r}")
    return damaged(path, f"SQLite cannot read it ({exc})")


class GuardedConnection:
    """A :class:`sqlite3.Connection` whose errors, also those raised while rows are fetched, are translated by
    :func:`sqlite_error`."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path

    @classmethod
    def connect(cls, path: Path, target: str, uri: bool = False) -> GuardedConnection:
        try:
            conn = sqlite3.connect(target, uri=uri, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise sqlite_error(exc, path) from exc
        return cls(conn, path)

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        try:
            return Rows(self._conn.execute(sql, params), self.path)
        except sqlite3.Error as exc:
            raise sqlite_error(exc, self.path) from exc

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            self._conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise sqlite_error(exc, self.path) from exc

    def executescript(self, sql: str) -> None:
        try:
            self._conn.executescript(sql)
        except sqlite3.Error as exc:
            raise sqlite_error(exc, self.path) from exc

    def close(self) -> None:
        self._conn.close()


class Rows:
    """The rows of one query, fetched with errors translated."""

    def __init__(self, cursor: sqlite3.Cursor, path: Path) -> None:
        self._cursor = cursor
        self._path = path

    def __iter__(self) -> Iterator[Any]:
        try:
            for row in self._cursor:  # noqa: UP028 - ``yield from`` would close the cursor, maybe on a closed connection
                yield row
        except sqlite3.Error as exc:
            raise sqlite_error(exc, self._path) from exc

    def fetchone(self) -> Any:
        try:
            return self._cursor.fetchone()
        except sqlite3.Error as exc:
            raise sqlite_error(exc, self._path) from exc

    def fetchall(self) -> list[Any]:
        try:
            return self._cursor.fetchall()
        except sqlite3.Error as exc:
            raise sqlite_error(exc, self._path) from exc


_STR = zlib.crc32(b"\x1fs")


def row_crc(values: Iterable[Any], crc: int = 0) -> int:
    """CRC-32 of a row's values, each with its type, so a damaged byte or a damaged type both change it.

    Raises:
        TypeError: for a value SQLite cannot hold (a store read back from a damaged file never gives one).
    """
    for value in values:
        if isinstance(value, str):
            crc = zlib.crc32(value.encode("utf-8", "surrogatepass"), zlib.crc32(b"\x1fs", crc))
        elif isinstance(value, bytes):
            crc = zlib.crc32(value, zlib.crc32(b"\x1fb", crc))
        elif value is None:
            crc = zlib.crc32(b"\x1fn", crc)
        elif isinstance(value, int):
            crc = zlib.crc32(b"%d" % value, zlib.crc32(b"\x1fi", crc))
        elif isinstance(value, float):
            crc = zlib.crc32(repr(value).encode(), zlib.crc32(b"\x1ff", crc))
        else:
            raise TypeError(f"no checksum for a {type(value).__name__}")
    return crc


def str_crc(data: bytes) -> int:
    """:func:`row_crc` of a row holding one str, from the str's UTF-8 bytes (when they are at hand anyway)."""
    return zlib.crc32(data, _STR)


def vector_crc(chunk_id: int, vector: bytes) -> int:
    """CRC-32 of a chunk's vector BLOB, seeded with its id (a vector moved to another row does not match); -1,
    which no stored checksum is, for a value that is not a BLOB."""
    if not isinstance(vector, bytes) or not isinstance(chunk_id, int):
        return -1
    return zlib.crc32(vector, chunk_id & 0xFFFFFFFF)
