"""Milvus locations and connections: parsing ``milvus://``, ``milvuss://`` and ``milvus-lite://`` URIs (the token
kept out of every public form), connecting a ``pymilvus.MilvusClient``, and sharing one in-process Milvus Lite
server per file among this process's indexes. The index itself is :mod:`qwen3_rag.indexers.milvus`."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from qwen3_rag._optional import require
from qwen3_rag.indexers.index import Location, redact_location
from qwen3_rag.indexers.manifest import IndexLockedError
from qwen3_rag.indexers.milvus_store import DOCUMENTS_SUFFIX, META_SUFFIX, MilvusStore

__all__ = ["CONNECT_TIMEOUT", "DEFAULT_PORT", "TOKEN_VARIABLE", "MilvusLocation", "connect", "connected",
           "disconnect"]

#: The environment variable a Milvus server's token is read from when the URI has none.
TOKEN_VARIABLE = "QWEN3_RAG_MILVUS_TOKEN"
DEFAULT_PORT = 19530
#: Seconds to wait for a Milvus server to answer when connecting.
CONNECT_TIMEOUT = 10.0
_SCHEMES = ("milvus", "milvuss", "milvus-lite")
_COLLECTION = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_NAME = 255 - max(len(DOCUMENTS_SUFFIX), len(META_SUFFIX))
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


@dataclass(frozen=True)
class MilvusLocation:
    """A parsed Milvus location (see the module docstring); :attr:`public` is it without credentials.

    Attributes:
        scheme: ``milvus``, ``milvuss`` or ``milvus-lite``.
        address: ``HOST:PORT``, or the path of the Lite file.
        collection: The chunk collection.
        secure: TLS to the server.
        db_name: The server's database (empty: the default).
        token: The server's token (never shown).
    """

    scheme: str
    address: str
    collection: str
    secure: bool = False
    db_name: str = ""
    token: str = field(default="", repr=False)

    @classmethod
    def parse(cls, location: Location) -> MilvusLocation:
        """Parse a ``milvus://``, ``milvuss://`` or ``milvus-lite://`` location.

        Raises:
            ValueError: naming what is wrong and the expected form (never showing a token).
        """
        text = os.fspath(location)
        scheme, sep, rest = text.partition("://")
        scheme = scheme.lower()
        if not sep or scheme not in _SCHEMES:
            raise ValueError(f"not a Milvus location: {redact_location(text)!r}; expected "
                             "milvus://HOST:PORT/COLLECTION or milvus-lite://PATH/TO/FILE.db/COLLECTION")
        if scheme == "milvus-lite":
            return cls._parse_lite(rest)
        return cls._parse_server(scheme, text)

    @classmethod
    def _parse_lite(cls, rest: str) -> MilvusLocation:
        path, _, collection = rest.rpartition("/")
        if "?" in rest or not path.endswith(".db"):
            raise ValueError(f"expected milvus-lite://PATH/TO/FILE.db/COLLECTION (the Milvus Lite file ends in .db, "
                             f"the collection follows it), got 'milvus-lite://{rest}'")
        return cls("milvus-lite", path, _checked_collection(collection))

    @classmethod
    def _parse_server(cls, scheme: str, text: str) -> MilvusLocation:
        parts, shown = urlsplit(text), redact_location(text)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        unknown = sorted(set(query) - {"token", "secure", "db"})
        if unknown:
            raise ValueError(f"unknown option {', '.join(unknown)} in {shown!r}; a Milvus URI takes token=, "
                             "secure=true and db=NAME")
        secure = query.get("secure", "true" if scheme == "milvuss" else "false").lower()
        if secure not in _TRUE + _FALSE:
            raise ValueError(f"secure= must be true or false, got {secure!r}")
        if not parts.hostname:
            raise ValueError(f"{shown!r} names no host; expected {scheme}://HOST:PORT/COLLECTION")
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise ValueError(f"{shown!r} has an invalid port; expected {scheme}://HOST:PORT/COLLECTION") from None
        if parts.username and not query.get("token"):
            query["token"] = unquote(parts.username) + (":" + unquote(parts.password) if parts.password else "")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return cls(scheme, f"{host}:{port}", _checked_collection(parts.path.lstrip("/")), secure=secure in _TRUE,
                   db_name=query.get("db", ""), token=query.get("token") or os.environ.get(TOKEN_VARIABLE, ""))

    @property
    def lite(self) -> bool:
        return self.scheme == "milvus-lite"

    @property
    def uri(self) -> str:
        """What ``pymilvus.MilvusClient`` connects to."""
        if self.lite:
            return self.address
        return f"{'https' if self.secure else 'http'}://{self.address}"

    @property
    def public(self) -> str:
        """The location as shown: no token."""
        if self.lite:
            return f"milvus-lite://{self.address}/{self.collection}"
        options = [f"db={self.db_name}"] if self.db_name else []
        if self.secure and self.scheme == "milvus":
            options.append("secure=true")
        return f"{self.scheme}://{self.address}/{self.collection}" + ("?" + "&".join(options) if options else "")


def _checked_collection(name: str) -> str:
    if not _COLLECTION.fullmatch(name) or "__" in name or len(name) > _MAX_NAME:
        raise ValueError(
            f"{name!r} cannot name a Milvus index: use letters, digits and single underscores, starting with a "
            f"letter or an underscore, at most {_MAX_NAME} characters (the index also uses the collections "
            f"NAME{DOCUMENTS_SUFFIX} and NAME{META_SUFFIX})")
    return name


# -- connections ---------------------------------------------------------------------------------------------

_LITE_LOCK = threading.Lock()
# no keepalive pings to the in-process server: Milvus Lite answers idle pings with GOAWAY "too_many_pings", which
# gRPC prints to stderr during a long ingest
_LITE_GRPC = {"grpc.keepalive_time_ms": 2**31 - 1, "grpc.keepalive_permit_without_calls": False}
_LITE_USERS: dict[str, int] = {}  # Lite file -> open connections of this process


def connect(loc: MilvusLocation) -> Any:
    """A ``pymilvus.MilvusClient`` for ``loc``; for Milvus Lite the file's in-process server is started (or shared)
    and counted, so that closing the last index on it releases the file to other processes.

    Raises:
        IndexLockedError: another process has the Lite file open.
        ConnectionError: the server cannot be reached.
    """
    pymilvus = require("pymilvus", "milvus", "a Milvus index")
    if not loc.lite:
        try:
            return pymilvus.MilvusClient(uri=loc.uri, token=loc.token, db_name=loc.db_name, timeout=CONNECT_TIMEOUT)
        except pymilvus.exceptions.MilvusException as exc:
            raise ConnectionError(f"cannot connect to Milvus at {loc.public}: {exc.message}; check that the "
                                  "server runs and the token is right") from None
    require("milvus_lite", "milvus", "a Milvus Lite index (milvus-lite://)")
    path = os.path.abspath(loc.address)
    with _LITE_LOCK:
        if not _LITE_USERS.get(path):
            _check_lite_unlocked(loc, path)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        client = pymilvus.MilvusClient(uri=path, grpc_options=_LITE_GRPC)
        _LITE_USERS[path] = _LITE_USERS.get(path, 0) + 1
    return client


def _check_lite_unlocked(loc: MilvusLocation, path: str) -> None:
    """Raise IndexLockedError when another process holds the Lite file (Milvus Lite would log a traceback)."""
    from milvus_lite.server_manager import server_manager_instance

    lock = Path(path) / "LOCK"  # Milvus Lite's flock; a server this process runs already holds it
    if not lock.is_file() or path in getattr(server_manager_instance, "_servers", {}):
        return
    import fcntl

    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise IndexLockedError(f"another process has the Milvus Lite file of {loc.public!r} open (Milvus Lite "
                                   "serves one process at a time); wait for it to finish, or use a Milvus server "
                                   "for several processes") from None
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def disconnect(loc: MilvusLocation, client: Any) -> None:
    client.close()
    if not loc.lite:
        return
    path = os.path.abspath(loc.address)
    with _LITE_LOCK:
        _LITE_USERS[path] -= 1
        if _LITE_USERS[path] == 0:
            del _LITE_USERS[path]
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(path)


@contextmanager
def connected(loc: MilvusLocation) -> Iterator[MilvusStore]:
    client = connect(loc)
    try:
        yield MilvusStore(client, loc.collection)
    finally:
        disconnect(loc, client)
