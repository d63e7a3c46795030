"""What makes a directory an index: its manifest (format, model record, chunking, index type), the check that
refuses another model, the writer's lock file, and atomic file writes.

Shared by every storage backend: a backend stores :func:`new_manifest`'s record with its data and runs
:func:`check_model` when it is opened with an embedder.
"""

from __future__ import annotations

import copy
import datetime as _dt
import errno
import json
import logging
import os
import platform
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qwen3_rag.protocols import KnowsItsModel, TextEmbedder

if TYPE_CHECKING:
    from qwen3_rag.indexers.chunking import ChunkingConfig
    from qwen3_rag.indexers.vector_index import IndexSpec

logger = logging.getLogger(__name__)

#: Version of the on-disk format of a local index (docs/index-format.md); 1 and 2 are upgraded by the first writer.
FORMAT_VERSION = 3
MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".lock"
#: What a create() killed halfway leaves; a folder holding anything else is not made an index.
OWN_FILES = re.compile(rf"(store\.sqlite(-wal|-shm|-journal)?|{re.escape(LOCK_FILE)}|"
                        rf"{re.escape(MANIFEST_FILE)}|\.(vectors|bm25|manifest)\..+\.tmp)")


class IndexMismatchError(ValueError):
    """The index was built with another embedding model, dimension or pooling than the one given."""


class IndexLockedError(RuntimeError):
    """Another process is writing to the index."""


class IndexDamagedError(RuntimeError):
    """A file of the index cannot be read as what it should be."""


class DiskFullError(OSError):
    """A write failed for lack of space; nothing half-written was left behind."""

    def __str__(self) -> str:  # the message says it all, without OSError's "[Errno 28]"
        return str(self.strerror)


def library_versions() -> dict[str, str]:
    """The versions of what wrote an index (recorded in its manifest, for bug reports)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version()}
    for key, names in (("qwen3_rag", ("qwen3-rag",)), ("numpy", ("numpy",)), ("torch", ("torch",)),
                       ("transformers", ("transformers",)), ("faiss", ("faiss-cpu", "faiss-gpu-cu12", "faiss-gpu"))):
        for name in names:
            try:
                versions[key] = version(name)
                break
            except PackageNotFoundError:
                continue
    return versions


def describe_embedder(embedder: TextEmbedder) -> dict[str, Any]:
    """The model record of ``embedder`` (its ``describe()``), with ``dim`` always set."""
    info = dict(embedder.describe())
    info.setdefault("dim", int(embedder.dim))
    return info


def model_record(embedder: TextEmbedder | None, dim: int | None) -> dict[str, Any]:
    """The ``model`` section of a new index: the embedder's description, or only ``dim`` for an index whose
    vectors come with the documents.

    Raises:
        ValueError: neither an embedder nor ``dim``, or a ``dim`` the embedder does not produce.
    """
    if embedder is None:
        if dim is None:
            raise ValueError("Index.create needs an embedder, or dim= when the vectors come with the documents")
        return {"model": None, "dim": int(dim)}
    record = describe_embedder(embedder)
    if dim is not None and int(dim) != int(record["dim"]):
        raise ValueError(f"dim={dim} but the embedder produces {record['dim']} dimensions; leave dim out, or set "
                         "the dimension on the embedder (Embedder(dim=...))")
    return record


def chunking_record(chunking: ChunkingConfig, embedder: TextEmbedder | None) -> dict[str, Any]:
    """The ``chunking`` section of a new index: the settings, and whether chunks were counted in the model's tokens
    or in words (an embedder without a tokenizer)."""
    tokenizer = "model" if getattr(embedder, "tokenizer", None) is not None else "words"
    return {**chunking.to_manifest(), "tokenizer": tokenizer}


def new_manifest(model: Mapping[str, Any], chunking: Mapping[str, Any], index: Mapping[str, Any]) -> dict[str, Any]:
    """The record a new index stores: format version, creation time, model record, chunking, index type and the
    library versions."""
    return {
        "format_version": FORMAT_VERSION,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": dict(model),
        "dim": int(model["dim"]),
        "metric": "inner_product",
        "normalized": True,
        "instruction": model.get("instruction"),
        "chunking": dict(chunking),
        "index": dict(index),
        "versions": library_versions(),
    }


def _model_summary(info: Mapping[str, Any]) -> str:
    parts = [repr(info.get("model"))]
    if info.get("fingerprint"):
        parts.append(f"fingerprint {str(info['fingerprint'])[:24]}")
    parts.append(f"dim {info.get('dim')}")
    if info.get("pooling"):
        parts.append(f"{info['pooling']} pooling")
    return ", ".join(parts)


def _differences(stored: Mapping[str, Any], given: Mapping[str, Any],
                 same_model: Callable[[str], bool] | None) -> list[str]:
    problems = []
    if stored.get("fingerprint") and given.get("fingerprint"):
        if stored["fingerprint"] != given["fingerprint"] and not (same_model and same_model(stored["fingerprint"])):
            problems.append("model")
    elif stored.get("model") != given.get("model"):
        problems.append("model")
    if int(stored.get("dim", -1)) != int(given.get("dim", -2)):
        problems.append("dimension")
    if stored.get("pooling") and given.get("pooling") and stored["pooling"] != given["pooling"]:
        problems.append("pooling")
    return problems


def check_embedder(stored: Mapping[str, Any], embedder: TextEmbedder, location: str) -> None:
    """:func:`check_model` for an embedder object (one that knows its model also accepts a fingerprint an older
    version recorded for it)."""
    same = embedder.same_model if isinstance(embedder, KnowsItsModel) else None
    check_model(stored, describe_embedder(embedder), location, same)


def check_model(stored: Mapping[str, Any], given: Mapping[str, Any], location: str,
                same_model: Callable[[str], bool] | None = None) -> None:
    """Refuse a model other than the one the index was built with.

    Args:
        stored: The index's model record.
        given: The record of the model offered.
        location: Where the index is, for the message.
        same_model: Asked, when the fingerprints differ, whether the stored one names the given model anyway.

    Raises:
        IndexMismatchError: naming both models and what differs.
    """
    problems = _differences(stored, given, same_model)
    if problems:
        raise IndexMismatchError(
            f"the index at {location!r} was built with {_model_summary(stored)}, but the embedder given is "
            f"{_model_summary(given)} ({' and '.join(problems)} differ). Open it with the same model "
            f"({stored.get('model')!r}, dim {stored.get('dim')}), or build a new index elsewhere."
        )
    stored_max, given_max = stored.get("max_length"), given.get("max_length")
    if stored_max and given_max and stored_max != given_max:
        logger.warning(
            "the index at %r was built with max_length %s, the embedder given truncates at %s: documents added "
            "now are embedded differently from the stored ones; use max_length=%s",
            location, stored_max, given_max, stored_max,
        )


class ManifestProperties:
    """The parts of the storage contract a backend reads from its stored manifest (listed before the backend's
    base class; the backend's ``__init__`` calls :meth:`_load_manifest`)."""

    _manifest: dict[str, Any]
    _chunking: ChunkingConfig
    _embedder: TextEmbedder | None
    _read_only: bool
    _closed: bool
    spec: IndexSpec

    def _load_manifest(self, manifest: dict[str, Any], embedder: TextEmbedder | None, read_only: bool) -> None:
        from qwen3_rag.indexers.chunking import ChunkingConfig
        from qwen3_rag.indexers.vector_index import IndexSpec

        self._manifest = manifest
        self._embedder = embedder
        self._read_only = read_only
        self.spec = IndexSpec.parse(manifest["index"]["spec"])
        self._chunking = ChunkingConfig.from_manifest(manifest["chunking"])

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def dim(self) -> int:
        return int(self._manifest["dim"])

    @property
    def chunking(self) -> ChunkingConfig:
        return self._chunking

    @property
    def model_info(self) -> dict[str, Any]:
        """The embedder as recorded in the manifest (model id, revision, pooling, dim, ...)."""
        return dict(self._manifest.get("model", {}))

    @property
    def hybrid_settings(self) -> dict[str, Any] | None:
        """The hybrid fusion calibrated for this index (``qwen3-rag eval --calibrate``), or None."""
        settings = self._manifest.get("hybrid")
        return copy.deepcopy(settings) if settings is not None else None

    def _with_hybrid(self, manifest: dict[str, Any], settings: dict[str, Any] | None) -> dict[str, Any]:
        """``manifest`` with ``settings`` as its hybrid settings (None: without any); TypeError for a value JSON
        cannot hold."""
        self._require_writable()
        out = {key: value for key, value in manifest.items() if key != "hybrid"}
        if settings is not None:
            out["hybrid"] = json.loads(json.dumps(settings))
        return out

    @property
    def embedder(self) -> TextEmbedder | None:
        return self._embedder

    @embedder.setter
    def embedder(self, embedder: TextEmbedder) -> None:
        check_embedder(self._manifest["model"], embedder, self._where)
        self._embedder = embedder

    @property
    def _where(self) -> str:
        return str(getattr(self, "location", ""))  # the backend's location property

    def _query_rows(self, queries: np.ndarray) -> np.ndarray:
        """Query vectors as an ``(n, dim)`` float32 array (one vector may come as a row)."""
        q = np.asarray(queries, dtype=np.float32)
        q = q[None, :] if q.ndim == 1 else q
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"query vectors must have shape (n, {self.dim}), got {q.shape}")
        return q

    def _require_writable(self) -> None:
        if self._closed:
            raise RuntimeError(f"the index at {self._where!r} is closed")
        if self._read_only:
            raise PermissionError(f"the index at {self._where!r} was opened read-only")


class WriterLock:
    """The one-writer lock of an index directory: an exclusive ``flock`` on ``DIR/.lock`` holding the writer's pid.

    Raises:
        IndexLockedError: another process holds it.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self._fh = open(self.path, "a+")  # noqa: SIM115 - held open as the lock until release()
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory lock
            return
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "unknown"
            self._fh.close()
            raise IndexLockedError(
                f"another process (pid {holder}) is writing to the index at {str(folder)!r}; wait for it to "
                "finish, or open the index read-only"
            ) from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(str(os.getpid()))
        self._fh.flush()

    def release(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def temp_name(path: Path) -> Path:
    """The name a file is written under before it replaces ``path`` (hidden, per process)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path``, fsync it, then replace ``path`` in one step.

    Raises:
        DiskFullError: out of space (the temp file is removed).
        OSError: any other failure (the temp file is removed).
    """
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise disk_error(exc, path) from exc


def disk_error(exc: OSError, path: Path | str) -> OSError:
    """``exc`` as a :class:`DiskFullError` with a clear message when it is ENOSPC / EDQUOT, else ``exc``."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(exc.errno, f"no space left to write {str(path)!r}: free some space and run the same "
                                        "command again (committed work is kept)")
    return exc


def refuse_foreign(root: Path) -> None:
    """Refuse to make an index in a folder that holds other things (they could be overwritten or deleted)."""
    if not root.exists():
        return
    if not root.is_dir():
        raise FileExistsError(f"{str(root)!r} is a file, not a directory; choose a directory for the index")
    foreign = sorted(p.name for p in root.iterdir() if not OWN_FILES.fullmatch(p.name))
    if foreign:
        listed = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise FileExistsError(f"{str(root)!r} is not empty and is not an index (it holds {listed}); choose an empty "
                              "or new directory for the index")


def warn_long_chunks(embedder: TextEmbedder | None, chunk_size: int) -> None:
    max_length = getattr(embedder, "max_length", None)
    if isinstance(max_length, int) and chunk_size and chunk_size > max_length - 2:
        logger.warning("chunk_size %d is more than the embedder reads (%d tokens with its special tokens): the end "
                       "of long chunks is cut off when embedding; use chunk_size %d or less", chunk_size, max_length,
                       max_length - 2)
