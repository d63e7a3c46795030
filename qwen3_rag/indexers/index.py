"""The on-disk index: a directory with a manifest, a SQLite document store and a FAISS file.

Layout of an index directory::

    DIR/manifest.json        a human-readable mirror of the manifest (format version, model, chunking,
                             index spec, counts, library versions), rewritten atomically with the FAISS
                             file (after each commit; once at the end of a bulk load)
    DIR/store.sqlite         the source of truth (SQLite, WAL): documents, chunks (text, offsets and the
                             float32 vector as a BLOB), and a ``meta`` table (manifest, id counter,
                             generation)
    DIR/vectors.<gen>.faiss  the FAISS index of generation ``gen`` (always a CPU index); a cache, rebuilt
                             from the vectors in SQLite when it is missing or older than the store
    DIR/.lock                held (flock) by the one writer
    DIR/<sidecar>/           files of sidecars such as the BM25 index (see below)

Public API (what the search / BM25 layer builds on)::

    index = Index.create(dir, embedder, chunk_size=..., chunk_overlap=..., index_type="Flat")
    index = Index.open(dir, embedder=None, read_only=False)     # refuses another model / dim
    index = Index.open_or_create(dir, embedder, ...)
    index.add(docs) / index.upsert(docs) -> WriteStats          # chunk + embed + store, committed
    index.add_chunks(doc, chunks, vectors)                      # pre-embedded
    index.add_chunked([(doc, chunks), ...], vectors)            # many pre-embedded (the ingest pipeline)
    index.delete(doc_ids) -> int                                # removes every chunk of those documents
    with index.batch(): ...                                     # one commit for many writes
    index.commit()
    index.count() -> IndexCounts(documents, chunks, vectors)
    index.get_document(doc_id) / index.get_documents(ids) / index.has_document(doc_id)
    index.document_hash(doc_id) -> str | None ; index.document_hashes(ids) -> {doc_id: hash}
    index.changed(docs, replace=True) -> (new or changed docs, WriteStats)   # one look-up per 500 documents
    index.iter_documents() -> (doc_id, source, hash)
    index.get_chunks(chunk_ids) -> list[StoredChunk]            # input order, missing ids left out
    index.get_vectors(chunk_ids) -> np.ndarray (n, dim) float32  # stored unit vectors; KeyError if missing
    index.chunks_of(doc_id) -> list[StoredChunk]
    index.iter_chunks(batch_size=1024) -> Iterator[tuple[int, str]]   # (chunk_id, text) for BM25 building
    index.chunk_texts(chunk_ids) -> list[tuple[int, str]]      # (chunk_id, text), input order, no metadata
    index.search_vectors(query_vectors (n, d), k, filter=None) -> (ids (n, k) int64, scores (n, k) float32)
                                                                # -1 / -inf pad missing hits
    index.search(query: str, k, filter=None) -> list[Hit]       # embeds the query with the index's embedder
    index.hits(ids, scores) -> list[Hit]                        # qwen3_rag.types.Hit with scores={"dense": s}
    index.scored_chunks(ids, scores) -> list[(StoredChunk, score)]
    index.matching_ids(filter) -> np.ndarray int64              # chunk ids whose metadata match a filter
    index.chunk_ids(doc_id) -> list[int]
    index.manifest -> dict ; index.model_info -> dict ; index.generation -> int ; index.path -> Path ; index.dim -> int
    index.refresh() -> bool                                     # a reader picks up newer commits now
                                                                # (searches do it once the FAISS file is out)
    Index.exists(dir) -> bool ; Index.read_manifest(dir) -> dict   # without opening anything
    index.register_sidecar(sidecar) ; index.sidecar_dir(name) -> Path   # see below
    index.close()  (also a context manager)

One process writes at a time (a lock file); any number of ``read_only=True`` readers run beside it and see the
last commit. An ``Index`` object is not thread-safe.

Sidecars (e.g. a BM25 index kept in step): an object with ``name: str``,
``on_commit(index, generation, added_ids, removed_ids)`` and optionally ``flush(index)``. After every commit of
the SQLite store the index calls ``on_commit`` with the chunk ids added and removed by that commit; whenever it
writes its FAISS file (every commit, except the intermediate commits of a bulk load, and on close) it then calls
``flush``, where a sidecar writes its own files. A sidecar without ``flush`` saves in ``on_commit``. A sidecar
stores its files under ``index.sidecar_dir(name)`` tagged with the generation it reflects, written with
tmp-file + ``os.replace``; when it opens and finds its generation older than ``index.generation`` (a kill
between the store commit and the sidecar write, or during a bulk load) it rebuilds from ``index.iter_chunks()``.
That is the same rule the FAISS file follows, so all files agree with the store, which is the single source of
truth, and a bulk load writes each file once instead of once per commit. ``ingest(...,
attach=[BM25Sidecar.attach])`` keeps a sidecar in step during an ingestion run.

Vectors are addressed by stable int64 chunk ids from a persisted, monotonic counter: an id is never reused, so
a delete or an update can never make a vector point at the wrong chunk.

Filters (see :mod:`qwen3_rag.indexers.filters`) are a small Mongo-style dict, e.g.
``{"year": {"$gte": 2020}, "$or": [{"lang": "en"}, {"lang": "de"}]}`` or any callable ``metadata -> bool``;
they are applied inside the FAISS search with an id selector, so a filtered top-k returns k hits whenever k
matching chunks exist.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from qwen3_rag.indexers.chunking import (
    DEFAULT_CHUNK_OVERLAP,
    DEFAULT_CHUNK_SIZE,
    GROUP_CHARS,
    GROUP_DOCUMENTS,
    Chunker,
    ChunkingConfig,
)
from qwen3_rag.indexers.filters import Filter, to_sql
from qwen3_rag.indexers.store import Store, StoredChunk
from qwen3_rag.indexers.vector_index import IndexSpec, VectorIndex
from qwen3_rag.types import Chunk, Document, Hit, content_hash

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
STORE_FILE = "store.sqlite"
LOCK_FILE = ".lock"
#: A filtered search on an approximate index (HNSW, IVF) is done exactly when at most this many chunks match.
EXACT_FILTER_LIMIT = 4096


class IndexMismatchError(ValueError):
    """The index was built with another embedding model, dimension or pooling than the one given."""


class IndexLockedError(RuntimeError):
    """Another process is writing to the index."""


class Sidecar(Protocol):
    """Something stored beside the index and kept in step with it (e.g. a BM25 index)."""

    name: str

    def on_commit(
        self, index: Index, generation: int, added_ids: Collection[int], removed_ids: Collection[int]
    ) -> None: ...

    # Optional: ``def flush(self, index: Index) -> None``, called when the index writes its FAISS file.


@dataclass(frozen=True)
class IndexCounts:
    """Documents, chunks and searchable vectors (vectors == chunks in a consistent index)."""

    documents: int
    chunks: int
    vectors: int


@dataclass
class WriteStats:
    """What one ``add`` / ``upsert`` call did, in documents and chunks."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0

    def add(self, other: WriteStats) -> None:
        """Add ``other``'s counts to these."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def _library_versions() -> dict[str, str]:
    import faiss

    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "faiss": getattr(faiss, "__version__", "unknown"),
        "sqlite": sqlite3.sqlite_version,
    }
    try:
        from importlib.metadata import version

        versions["qwen3_rag"] = version("qwen3-rag")
    except Exception:
        versions["qwen3_rag"] = "unknown"
    for name in ("torch", "transformers"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:
            pass
    return versions


def describe_embedder(embedder: Any) -> dict[str, Any]:
    """The manifest's model record: ``embedder.describe()``, or the little a fake embedder offers."""
    if hasattr(embedder, "describe"):
        info = dict(embedder.describe())
    else:
        info = {"model": getattr(embedder, "model_id", type(embedder).__name__)}
    info.setdefault("dim", int(embedder.dim))
    return info


def _model_summary(info: Mapping[str, Any]) -> str:
    parts = [repr(info.get("model"))]
    if info.get("fingerprint"):
        parts.append(f"fingerprint {str(info['fingerprint'])[:12]}")
    parts.append(f"dim {info.get('dim')}")
    if info.get("pooling"):
        parts.append(f"{info['pooling']} pooling")
    return ", ".join(parts)


def check_model(stored: Mapping[str, Any], given: Mapping[str, Any], path: str | Path) -> None:
    """Refuse to use an index with another model, dimension or pooling.

    Raises:
        IndexMismatchError: naming both models.
    """
    problems = []
    if stored.get("fingerprint") and given.get("fingerprint"):
        if stored["fingerprint"] != given["fingerprint"]:
            problems.append("model")
    elif stored.get("model") != given.get("model"):
        problems.append("model")
    if int(stored.get("dim", -1)) != int(given.get("dim", -2)):
        problems.append("dimension")
    if stored.get("pooling") and given.get("pooling") and stored["pooling"] != given["pooling"]:
        problems.append("pooling")
    if problems:
        raise IndexMismatchError(
            f"the index at {str(path)!r} was built with {_model_summary(stored)}, but the embedder given is "
            f"{_model_summary(given)} ({' and '.join(problems)} differ). Use the same model "
            f"(--model {stored.get('model')} --dim {stored.get('dim')}) "
            "or build a new index in another directory."
        )
    stored_max, given_max = stored.get("max_length"), given.get("max_length")
    if stored_max and given_max and stored_max != given_max:
        logger.warning(
            "the index at %r was built with max_length %s, the embedder given truncates at %s: documents "
            "added now are embedded differently from the stored ones; pass max_length=%s (--max-length %s)",
            str(path), stored_max, given_max, stored_max, stored_max,
        )


class _Lock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh = open(path, "a+")
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory lock
            return
        try:
            fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.seek(0)
            holder = self.fh.read().strip() or "unknown"
            self.fh.close()
            raise IndexLockedError(
                f"another process (pid {holder}) is writing to the index at {str(path.parent)!r}; "
                "wait for it to "
                "finish, or open the index read-only"
            ) from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(str(os.getpid()))
        self.fh.flush()

    def release(self) -> None:
        if not self.fh.closed:
            self.fh.close()


def token_id_framer(embedder: Any, chunker: Chunker | None) -> Callable[[list[list[int]]], list[list[int]]] | None:
    """``embedder.ids_from_content`` when the embedder can be fed the token ids ``chunker`` makes while checking
    chunk sizes, else None.

    That is an embedder with ``ids_from_content``, ``tokenize`` and ``embed_tokenized`` (an
    :class:`~qwen3_rag.Embedder`) whose tokenizer is the one the chunker counts with, and whose special tokens form
    a fixed frame; the chunks are then never tokenized a second time. Callers frame each document's ids as its
    chunks are queued, so only ``max_length`` ids per chunk wait for the model.
    """
    if (chunker is None or chunker.tokenizer is None or chunker.tokenizer is not getattr(embedder, "tokenizer", None)
            or not all(callable(getattr(embedder, name, None))
                       for name in ("ids_from_content", "tokenize", "embed_tokenized"))):
        return None
    if embedder.ids_from_content([]) is None:  # no fixed frame of special tokens: the texts must be tokenized
        return None
    return cast(Callable[[list[list[int]]], list[list[int]]], embedder.ids_from_content)


class PendingChunks:
    """Chunks waiting to be embedded, in document order, with the model's input ids made as they are queued.

    When the embedder can be fed the chunker's token ids (:func:`token_id_framer`), each document's ids are framed
    when it is added, so only ``max_length`` ids per chunk wait; otherwise :meth:`take` gives no ids and the caller
    embeds the texts. Shared by :meth:`Index.add` and ingestion.
    """

    def __init__(self, embedder: Any, chunker: Chunker | None) -> None:
        self.frame = token_id_framer(embedder, chunker)
        self.batch: list[tuple[Document, list[Chunk]]] = []
        self.n_chunks = 0
        self._ids: list[list[int]] = []

    @property
    def wants_token_ids(self) -> bool:
        """Whether :meth:`add` needs the chunker's token ids (``chunk_batch(..., token_ids=True)``)."""
        return self.frame is not None

    def add(self, document: Document, chunks: list[Chunk], token_ids: list[list[int]] | None) -> None:
        self.batch.append((document, chunks))
        self.n_chunks += len(chunks)
        if self.frame is not None and token_ids is not None:
            self._ids.extend(self.frame(token_ids))

    def take(self) -> tuple[list[tuple[Document, list[Chunk]]], list[list[int]] | None]:
        """The queued documents with their chunks, and the model's ids of those chunks (None: embed the texts)."""
        batch, ids = self.batch, self._ids if self.frame is not None else None
        self.batch, self._ids, self.n_chunks = [], [], 0
        return batch, ids


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _normalize(vectors: np.ndarray) -> np.ndarray:
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if v.size and not np.allclose(norms, 1.0, atol=1e-3):
        v = v / np.maximum(norms, 1e-12)
    return v


def _as_document(item: Document | str | Mapping[str, Any]) -> Document:
    if isinstance(item, Document):
        return item
    if isinstance(item, str):
        return Document(id=content_hash(item)[:32], text=item)
    if isinstance(item, Mapping):
        text = str(item["text"])
        meta = dict(item.get("metadata") or {})
        return Document(
            id=str(item.get("id") or content_hash(text, meta)[:32]),
            text=text,
            source=str(item.get("source", "")),
            metadata=meta,
        )
    raise TypeError(f"expected a Document, a str or a dict with 'text', got {type(item).__name__}")


class Index:
    """An index directory (see the module docstring). Create it with :meth:`create`, open it with
    :meth:`open`.

    Example:
        >>> index = Index.create("my-index", embedder)                    # doctest: +SKIP
        >>> index.upsert([Document(id="a", text="FAISS is a library.")])  # doctest: +SKIP
        >>> index.search("what is faiss?", k=3)                           # doctest: +SKIP

    Attributes:
        ef_search: HNSW search breadth (None: ``max(64, 2k, n / 4000)`` for ``n`` vectors).
        nprobe: IVF lists searched (None: ``max(16, nlist / 16)``).
    """

    ef_search: int | None = None
    nprobe: int | None = None

    def __init__(
        self,
        path: Path,
        store: Store,
        manifest: dict[str, Any],
        embedder: Any,
        read_only: bool,
        lock: _Lock | None,
        use_gpu: bool | str,
    ) -> None:
        self.path = path
        self._store = store
        self._manifest = manifest
        self.embedder = embedder
        self.read_only = read_only
        self._lock = lock
        self._use_gpu = use_gpu
        self.dim = int(manifest["dim"])
        self.spec = IndexSpec.parse(manifest["index"]["spec"])
        chunking = manifest["chunking"]
        self.chunking = ChunkingConfig(int(chunking["chunk_size"]), int(chunking["chunk_overlap"]))
        self.chunker: Chunker | None = (
            Chunker.for_embedder(embedder, self.chunking.chunk_size, self.chunking.chunk_overlap)
            if embedder is not None
            else None
        )
        self._vectors: VectorIndex | None = None
        self._vectors_generation = -1
        self._saved_generation = -1
        self._generation = int(store.get_meta("generation", 0))
        self._depth = 0
        self._added: list[int] = []
        self._removed: list[int] = []
        self._sidecars: list[Sidecar] = []
        self._closed = False

    # -- opening
    # ----------------------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        embedder: Any = None,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
        index_type: str = "Flat",
        dim: int | None = None,
        use_gpu: bool | str = "auto",
    ) -> Index:
        """Create a new, empty index directory.

        Args:
            path: The directory (created; it must not hold an index yet).
            embedder: The :class:`~qwen3_rag.Embedder` (or anything with its interface) used for documents.
            chunk_size: Maximum tokens per chunk (0: one chunk per document).
            chunk_overlap: Tokens shared by consecutive chunks.
            index_type: ``Flat``, ``HNSW<M>``, ``IVF<n>,Flat`` or ``IVF<n>,PQ<m>``.
            dim: The vector dimension when no embedder is given (vectors then come through
                :meth:`add_chunks`).
            use_gpu: ``"auto"``: search on faiss GPUs when present; the file is always a CPU index.

        Raises:
            FileExistsError: if ``path`` already holds an index.
            ValueError: for bad chunking settings or index type.
        """
        root = Path(path)
        if cls.exists(root):
            raise FileExistsError(
                f"{str(root)!r} already holds an index; open it with Index.open() or choose another directory"
            )
        if embedder is None and dim is None:
            raise ValueError(
                "Index.create needs an embedder, or dim= when vectors are added with add_chunks()"
            )
        model: dict[str, Any] = (
            describe_embedder(embedder) if embedder is not None else {"model": None, "dim": int(dim or 0)}
        )
        if dim is not None and int(dim) != int(model["dim"]):
            raise ValueError(
                f"dim={dim} but the embedder produces {model['dim']} dimensions; "
                "set the dimension on the embedder (Embedder(dim=...))"
            )
        config = ChunkingConfig(chunk_size, chunk_overlap)
        max_length = getattr(embedder, "max_length", None)
        if isinstance(max_length, int) and chunk_size and chunk_size > max_length - 2:
            logger.warning(
                "chunk_size %d is more than %s reads (%d tokens with its special tokens): the end of long "
                "chunks will be cut off when embedding; use chunk_size %d or less",
                chunk_size,
                model.get("model"),
                max_length,
                max_length - 2,
            )
        spec = IndexSpec.parse(index_type)
        spec.check_dim(int(model["dim"]))
        root.mkdir(parents=True, exist_ok=True)
        lock = _Lock(root / LOCK_FILE)
        try:
            store = Store(root / STORE_FILE)
            manifest = {
                "format_version": FORMAT_VERSION,
                "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "model": model,
                "dim": int(model["dim"]),
                "metric": "inner_product",
                "normalized": True,
                "instruction": model.get("instruction"),
                "chunking": {
                    "chunk_size": config.chunk_size,
                    "chunk_overlap": config.chunk_overlap,
                    "tokenizer": "model" if getattr(embedder, "tokenizer", None) is not None else "words",
                },
                "index": {"spec": spec.spec},
                "versions": _library_versions(),
            }
            store.begin()
            store.set_meta("manifest", manifest)
            store.set_meta("generation", 0)
            store.set_meta("next_id", 0)
            store.commit()
        except BaseException:
            lock.release()
            raise
        index = cls(root, store, manifest, embedder, False, lock, use_gpu)
        index._write_manifest_file()
        return index

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        embedder: Any = None,
        *,
        read_only: bool = False,
        use_gpu: bool | str = "auto",
    ) -> Index:
        """Open an existing index directory.

        Args:
            path: The index directory.
            embedder: Needed to add documents or search with text; checked against the manifest.
            read_only: Open without the writer lock (any number of readers can run beside one writer).
            use_gpu: See :meth:`create`.

        Raises:
            FileNotFoundError: if there is no index at ``path``.
            IndexMismatchError: if ``embedder`` is another model, dimension or pooling.
            IndexLockedError: if another process is writing (not for ``read_only``).
        """
        root = Path(path)
        if not (root / STORE_FILE).exists():
            raise FileNotFoundError(
                f"no index at {str(root)!r} ({STORE_FILE} is missing); build one with "
                "`qwen3-rag index SOURCES --index DIR` or Index.create()"
            )
        lock = None if read_only else _Lock(root / LOCK_FILE)
        try:
            store = Store(root / STORE_FILE, read_only=read_only)
            manifest = store.get_meta("manifest")
            if manifest is None:
                raise ValueError(
                    f"{str(root)!r}: the store has no manifest; the index is damaged or was never "
                    "finished being created. Build it again in a new directory."
                )
            version = manifest.get("format_version")
            if version != FORMAT_VERSION:
                raise ValueError(
                    f"{str(root)!r} has index format version {version}; this qwen3-rag reads "
                    f"version {FORMAT_VERSION}. Rebuild the index with this version."
                )
            if embedder is not None:
                check_model(manifest["model"], describe_embedder(embedder), root)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        if not read_only:
            for tmp in root.glob(
                ".*.tmp"
            ):  # left by a writer that was killed mid-write; we hold the lock now
                tmp.unlink(missing_ok=True)
        return cls(root, store, manifest, embedder, read_only, lock, use_gpu)

    @classmethod
    def open_or_create(
        cls,
        path: str | os.PathLike[str],
        embedder: Any = None,
        *,
        chunk_size: int | None = None,
        chunk_overlap: int | None = None,
        index_type: str | None = None,
        dim: int | None = None,
        use_gpu: bool | str = "auto",
    ) -> Index:
        """Open the index at ``path`` or create it. Settings given must match an existing index.

        Raises:
            ValueError: when a setting differs from the existing index (naming both values).
            IndexMismatchError: see :meth:`open`.
        """
        root = Path(path)
        if not cls.exists(root):
            return cls.create(
                root,
                embedder,
                chunk_size=DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size,
                chunk_overlap=DEFAULT_CHUNK_OVERLAP if chunk_overlap is None else chunk_overlap,
                index_type=index_type or "Flat",
                dim=dim,
                use_gpu=use_gpu,
            )
        index = cls.open(root, embedder, use_gpu=use_gpu)
        try:
            given = {
                "chunk_size": chunk_size,
                "chunk_overlap": chunk_overlap,
                "index type": IndexSpec.parse(index_type).spec if index_type else None,
            }
            have = {
                "chunk_size": index.chunking.chunk_size,
                "chunk_overlap": index.chunking.chunk_overlap,
                "index type": index.spec.spec,
            }
            for name, value in given.items():
                if value is not None and value != have[name]:
                    raise ValueError(
                        f"the index at {str(root)!r} has {name} {have[name]!r}, not {value!r}; "
                        f"leave the option out to keep {have[name]!r}, or build a new index"
                    )
        except BaseException:
            index.close()
            raise
        return index

    @staticmethod
    def exists(path: str | os.PathLike[str]) -> bool:
        """True when ``path`` holds an index."""
        store = Path(path) / STORE_FILE
        if not store.exists():
            return False
        try:  # a store without a manifest is a create() that was killed halfway: not an index
            conn = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
            try:
                return conn.execute("SELECT 1 FROM meta WHERE key = 'manifest'").fetchone() is not None
            finally:
                conn.close()
        except sqlite3.Error:
            return True  # something is there; let open() report what is wrong with it

    @staticmethod
    def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
        """The stored manifest of the index at ``path`` (without counts), read without loading anything.

        Raises:
            FileNotFoundError: if there is no index at ``path``.
        """
        if not Index.exists(path):
            raise FileNotFoundError(f"no index at {str(path)!r}")
        store = Store(Path(path) / STORE_FILE, read_only=True)
        try:
            return dict(store.get_meta("manifest"))
        finally:
            store.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None and self._store.in_transaction:
            self.rollback()
        self.close()

    def close(self) -> None:
        """Commit pending writes, write the FAISS file if it is behind, release the writer lock."""
        if self._closed:
            return
        try:
            if not self.read_only:
                self.commit()
                if self._vectors is not None and self._saved_generation != self._generation:
                    self._save_vectors()
                    self._write_manifest_file()
                self._flush_sidecars()
        finally:
            self._closed = True
            self._store.close()
            if self._lock is not None:
                self._lock.release()

    # -- properties
    # -------------------------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        """The number of the last commit of the store (0 for a new index)."""
        return self._generation

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest with current counts and generation."""
        out = dict(self._manifest)
        counts = self.count()
        out["counts"] = {"documents": counts.documents, "chunks": counts.chunks, "vectors": counts.vectors}
        out["generation"] = self._generation
        out["index"] = dict(out["index"], effective=self._effective_type())
        return out

    @property
    def model_info(self) -> dict[str, Any]:
        """The embedder as recorded in the manifest (model id, revision, pooling, dim, ...); no file is read."""
        return dict(self._manifest.get("model", {}))

    @property
    def instruction(self) -> str | None:
        """The default query instruction recorded for the model."""
        return self._manifest.get("instruction")

    def sidecar_dir(self, name: str) -> Path:
        """The folder where the sidecar ``name`` keeps its files (created on demand)."""
        folder = self.path / name
        if not self.read_only:
            folder.mkdir(exist_ok=True)
        return folder

    def register_sidecar(self, sidecar: Sidecar) -> None:
        """Call ``sidecar.on_commit(index, generation, added_ids, removed_ids)`` after every commit, and
        ``sidecar.flush(index)`` (when it has one) whenever the FAISS file is written.

        Raises:
            PermissionError: on a read-only index.
        """
        if self.read_only:
            raise PermissionError("register_sidecar needs a writable index (opened without read_only=True)")
        self._sidecars.append(sidecar)

    def _effective_type(self) -> str:
        return self.vectors.effective_type

    # -- vectors
    # ----------------------------------------------------------------------------------------------

    @property
    def vectors(self) -> VectorIndex:
        """The FAISS side, loaded on first use (rebuilt from the store if its file is missing or stale)."""
        if self._vectors is None:
            self._load_vectors()
        assert self._vectors is not None
        return self._vectors

    def _vector_file(self, generation: int) -> Path:
        return self.path / f"vectors.{generation}.faiss"

    def _load_vectors(self) -> None:
        with self._store.snapshot() as store:
            gen = int(store.get_meta("generation", 0))
            path = self._vector_file(gen)
            vi: VectorIndex | None = None
            if path.exists():
                try:
                    vi = VectorIndex.load(path, self.dim, self.spec, use_gpu=self._use_gpu)
                except Exception as exc:  # a damaged cache is rebuilt, never trusted
                    logger.warning("cannot read %s (%s); rebuilding it from the store", path, exc)
            alive = store.all_chunk_ids()
            if vi is not None:
                # the file must hold exactly the store's chunk ids (plus HNSW tombstones), else it is rebuilt
                held = vi.ids()
                if self.spec.kind == "hnsw":
                    vi.remove(np.setdiff1d(held, alive))  # held but deleted: tombstones
                missing = np.setdiff1d(alive, held).size
                if missing or len(held) - len(vi.tombstones) != len(alive):
                    logger.warning(
                        "%s holds %d vectors but the store %d chunks; rebuilding", path, len(vi), len(alive)
                    )
                    vi = None
            rebuilt = vi is None
            if vi is None:
                logger.info("building the vector index of %s (generation %d) from the store", self.path, gen)
                vi = self._build_from_store(store)
        self._vectors = vi
        self._vectors_generation = gen
        self._generation = gen
        if not rebuilt:
            self._saved_generation = gen
        elif not self.read_only and not self._store.in_transaction:
            self._save_vectors()

    def _build_from_store(self, store: Store) -> VectorIndex:
        vi = VectorIndex(self.dim, self.spec, use_gpu=self._use_gpu)
        n = store.count_chunks()
        if self.spec.kind == "ivf" and n >= self.spec.train_size:
            # train on an even sample of up to 256 vectors per list (what faiss itself would use)
            want = min(n, max(self.spec.train_size, 256 * self.spec.nlist))
            step = max(1, n // want)
            sample = [v[::step] for _, v in store.iter_vectors(self.dim)]
            vi.reset(np.concatenate(sample)[:want] if sample else None)
        else:
            vi.reset()
        for ids, vecs in store.iter_vectors(self.dim):
            vi.add(ids, vecs)
        return vi

    def _save_vectors(self) -> None:
        vi = self.vectors
        gen = self._generation
        vi.save(self._vector_file(gen))
        self._saved_generation = gen
        # keep the previous file for readers that opened it a moment ago; older ones go
        for old in self.path.glob("vectors.*.faiss"):
            try:
                g = int(old.name.split(".")[1])
            except (IndexError, ValueError):
                continue
            if g < gen - 1:
                old.unlink(missing_ok=True)

    def refresh(self) -> bool:
        """Reload the vector index when another process committed since it was loaded; True if it did."""
        gen = int(self._store.get_meta("generation", 0))
        if gen == self._vectors_generation or self._store.in_transaction:
            return False
        self._vectors = None
        self._load_vectors()
        return True

    def _follow_writer(self) -> None:
        """A long-lived reader picks up the writer's newest commit once its FAISS file is written.

        One SQLite read per search. Commits whose FAISS file is deferred (the intermediate commits of a bulk
        load) are skipped rather than rebuilt from the store on every search; ``refresh()`` forces a reload.
        """
        if not self.read_only or self._vectors is None:
            return
        gen = int(self._store.get_meta("generation", 0))
        if gen != self._vectors_generation and self._vector_file(gen).exists():
            self.refresh()

    # -- writing
    # ----------------------------------------------------------------------------------------------

    def _require_writable(self) -> None:
        if self.read_only:
            raise PermissionError(f"the index at {str(self.path)!r} was opened read-only")
        if self._closed:
            raise RuntimeError("the index is closed")

    def _require_embedder(self, what: str) -> Any:
        if self.embedder is None:
            raise ValueError(f"{what} needs an embedder: open the index with Index.open(path, embedder)")
        return self.embedder

    @contextmanager
    def batch(self, flush_vectors: bool = True) -> Iterator[Index]:
        """Group writes into one commit; on an exception the uncommitted writes are rolled back.

        Args:
            flush_vectors: Passed to :meth:`commit` at the end of the outermost batch.

        Example:
            >>> with index.batch():                # doctest: +SKIP
            ...     index.upsert(docs_a); index.delete(["old"])
        """
        self._require_writable()
        self._depth += 1
        try:
            yield self
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self.rollback()
            raise
        self._depth -= 1
        if self._depth == 0:
            self.commit(flush_vectors=flush_vectors)

    def _begin(self) -> None:
        self._require_writable()
        if not self._store.in_transaction:
            self.vectors  # load before the write transaction starts  # noqa: B018
            self._store.begin()

    def commit(self, flush_vectors: bool = True) -> None:
        """Commit pending writes: the store first (the durable point), then the FAISS file and the sidecars.

        Args:
            flush_vectors: Also write the FAISS file (and let sidecars write theirs) now. A bulk load passes
                False for its intermediate commits; :meth:`close` writes them, and files behind the store (a kill
                before close) are detected and rebuilt on the next open.
        """
        if self.read_only or not self._store.in_transaction:
            return
        gen = self._generation + 1
        self._store.set_meta("generation", gen)
        self._store.commit()
        self._generation = self._vectors_generation = gen
        added, removed = self._added, self._removed
        self._added, self._removed = [], []
        vi = self.vectors
        if vi.needs_training(len(vi)) or vi.needs_compaction():
            logger.info(
                "rebuilding %s (%s)",
                vi.spec.spec,
                "training" if vi.needs_training(len(vi)) else "compacting deleted vectors",
            )
            with self._store.snapshot() as store:
                self._vectors = self._build_from_store(store)
        if flush_vectors:
            self._save_vectors()
            self._write_manifest_file()  # two COUNT(*) scans: not at every commit of a bulk load
        for sidecar in self._sidecars:
            sidecar.on_commit(self, gen, added, removed)
        if flush_vectors:
            self._flush_sidecars()

    def _flush_sidecars(self) -> None:
        for sidecar in self._sidecars:
            flush = getattr(sidecar, "flush", None)
            if flush is not None:
                flush(self)

    def rollback(self) -> None:
        """Drop uncommitted writes (the vector index is reloaded from the last commit)."""
        if not self._store.in_transaction:
            return
        self._store.rollback()
        self._added, self._removed = [], []
        self._vectors = None

    def _write_manifest_file(self) -> None:
        try:
            _atomic_write_text(
                self.path / MANIFEST_FILE, json.dumps(self.manifest, indent=2, ensure_ascii=False)
            )
        except OSError as exc:  # informational copy; the store holds the truth
            logger.warning("could not write %s: %s", self.path / MANIFEST_FILE, exc)

    def add_chunks(self, document: Document, chunks: Sequence[Chunk], vectors: np.ndarray) -> list[int]:
        """Store a document with its chunks and their vectors, replacing any previous version of it.

        Args:
            document: The document (its ``content_hash`` is recorded for change detection).
            chunks: Its chunks, e.g. from :attr:`chunker`.
            vectors: One row per chunk, ``(len(chunks), dim)``; rows are L2-normalised before storing.

        Returns:
            The new chunk ids.

        Raises:
            ValueError: when the number or width of the vectors is wrong.
        """
        return self.add_chunked([(document, chunks)], vectors)[0]

    def add_chunked(
        self, documents: Sequence[tuple[Document, Sequence[Chunk]]], vectors: np.ndarray
    ) -> list[list[int]]:
        """:meth:`add_chunks` for many documents at once: one delete, one insert and one FAISS add for all.

        Args:
            documents: ``(document, its chunks)`` pairs, each document id once.
            vectors: One row per chunk, the chunks of ``documents`` in order.

        Returns:
            The new chunk ids of each document.

        Raises:
            ValueError: when the number or width of the vectors is wrong, or a document id repeats.
        """
        n = sum(len(chunks) for _, chunks in documents)
        if n == 0:
            vectors = np.zeros((0, self.dim), np.float32)
        else:
            vectors = np.asarray(vectors, dtype=np.float32)
            if vectors.ndim == 1 and n == 1:
                vectors = vectors[None, :]
            if vectors.ndim != 2 or len(vectors) != n:
                raise ValueError(f"expected one vector per chunk, an array of shape ({n}, {self.dim}); "
                                 f"got shape {vectors.shape}")
        if vectors.shape[1] != self.dim:
            raise ValueError(f"vectors have {vectors.shape[1]} dimensions, the index {self.dim}")
        doc_ids = [doc.id for doc, _ in documents]
        if len(set(doc_ids)) != len(doc_ids):
            repeated = next(i for i in doc_ids if doc_ids.count(i) > 1)
            raise ValueError(f"document id {repeated!r} appears twice in one write; ids must be unique")
        if not documents:
            return []
        vectors = _normalize(vectors)
        with self.batch():  # outside a batch: one commit, and a failure rolls the deletes back too
            self._begin()
            removed = self._store.delete_documents(doc_ids)
            ids = self._store.allocate_ids(n)
            self._store.put_documents(documents, ids, vectors)
            vi = self.vectors
            vi.remove(removed)
            vi.add(ids, vectors)
            self._removed.extend(removed)
            new_ids = ids.tolist()
            self._added.extend(new_ids)
        per_doc, pos = [], 0
        for _, chunks in documents:
            per_doc.append(new_ids[pos : pos + len(chunks)])
            pos += len(chunks)
        return per_doc

    def _write(
        self, items: Iterable[Document | str | Mapping[str, Any]], replace: bool, batch_chunks: int = 256
    ) -> WriteStats:
        embedder = self._require_embedder("adding documents")
        chunker = self.chunker
        assert chunker is not None
        pending = PendingChunks(embedder, chunker)
        stats = WriteStats()
        seen: set[str] = set()
        to_chunk: list[Document] = []
        to_chunk_chars = 0

        def flush() -> None:
            if not pending.batch:
                return
            batch, ids = pending.take()
            if ids is not None:
                vecs = embedder.embed_tokenized(ids) if ids else np.zeros((0, self.dim), np.float32)
            else:
                texts = [c.text for _, chunks in batch for c in chunks]
                vecs = embedder.embed_documents(texts) if texts else np.zeros((0, self.dim), np.float32)
            self.add_chunked(batch, vecs)

        def chunk_group() -> None:
            nonlocal to_chunk_chars
            docs, counts = self.changed(to_chunk, replace=replace)  # one store query for the group
            stats.add(counts)
            # one tokenizer call for the group
            chunked = chunker.chunk_batch(docs, token_ids=pending.wants_token_ids)
            for i, (doc, chunks) in enumerate(zip(docs, chunked.chunks, strict=True)):
                stats.chunks_added += len(chunks)
                pending.add(doc, chunks, chunked.token_ids[i] if chunked.token_ids is not None else None)
                if pending.n_chunks >= batch_chunks:
                    flush()
            to_chunk.clear()
            to_chunk_chars = 0

        with self.batch():
            for item in items:
                doc = _as_document(item)
                if doc.id in seen:
                    raise ValueError(f"document id {doc.id!r} appears twice in one call; ids must be unique")
                seen.add(doc.id)
                to_chunk.append(doc)
                to_chunk_chars += len(doc.text)
                if len(to_chunk) >= GROUP_DOCUMENTS or to_chunk_chars >= GROUP_CHARS:
                    chunk_group()
            chunk_group()
            flush()
        return stats

    def changed(self, documents: Sequence[Document], *, replace: bool = True) -> tuple[list[Document], WriteStats]:
        """Which documents need writing: the new ones and those whose content differs from the stored version.

        One store query per 500 documents. The counts (``added``, ``updated``, ``unchanged`` and the
        ``chunks_removed`` that replacing the updated ones will delete) come back as a :class:`WriteStats`.

        Raises:
            ValueError: with ``replace=False``, for a document stored with other content.
        """
        stored = self._store.document_states([d.id for d in documents])
        stats = WriteStats()
        out = []
        for doc in documents:
            old = stored.get(doc.id)
            if old is None:
                stats.added += 1
            elif old[0] == doc.content_hash:
                stats.unchanged += 1
                continue
            elif not replace:
                raise ValueError(f"document {doc.id!r} already exists with other content; use upsert() to replace it")
            else:
                stats.updated += 1
                stats.chunks_removed += old[1]
            out.append(doc)
        return out, stats

    def add(self, documents: Iterable[Document | str | Mapping[str, Any]]) -> WriteStats:
        """Chunk, embed and store new documents (one commit).

        Documents given as strings get a content-hash id; an id that already exists with the same content is
        counted as unchanged.

        Raises:
            ValueError: if an id exists with other content (use :meth:`upsert`) or repeats within the call.
        """
        return self._write(documents, replace=False)

    def upsert(self, documents: Iterable[Document | str | Mapping[str, Any]]) -> WriteStats:
        """Add documents, replacing every chunk of a document whose content changed (one commit).

        Unchanged documents (same content hash) are not embedded again.
        """
        return self._write(documents, replace=True)

    def delete(self, doc_ids: Iterable[str]) -> int:
        """Delete documents and all their chunks; returns how many documents existed."""
        self._require_writable()
        existing = list(self._store.document_states(list(dict.fromkeys([doc_ids] if isinstance(doc_ids, str)
                                                                        else doc_ids))))
        if existing:
            with self.batch():
                self._begin()
                removed = self._store.delete_documents(existing)
                self.vectors.remove(removed)
                self._removed.extend(removed)
        return len(existing)

    # -- reading
    # ----------------------------------------------------------------------------------------------

    def count(self, vectors: bool = True) -> IndexCounts:
        """Documents, chunks and vectors (vectors load the FAISS side; ``vectors=False`` reports chunks)."""
        docs, chunks = self._store.count_documents(), self._store.count_chunks()
        return IndexCounts(docs, chunks, len(self.vectors) if vectors else chunks)

    def __len__(self) -> int:
        return self._store.count_chunks()

    def has_document(self, doc_id: str) -> bool:
        return self._store.document_hash(doc_id) is not None

    def document_hash(self, doc_id: str) -> str | None:
        """The stored content hash of a document (None when absent)."""
        return self._store.document_hash(doc_id)

    def document_hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """The stored content hash of each of ``doc_ids`` that exists (absent ones are left out), in one query
        per 500 ids."""
        return {doc_id: state[0] for doc_id, state in self._store.document_states(doc_ids).items()}

    def get_document(self, doc_id: str) -> Document | None:
        """The stored document (full text and metadata), or None."""
        return self._store.get_document(doc_id)

    def get_documents(self, doc_ids: Iterable[str]) -> list[Document]:
        """Stored documents in the order asked; unknown ids are left out."""
        return [d for d in (self._store.get_document(i) for i in doc_ids) if d is not None]

    def iter_documents(self) -> Iterator[tuple[str, str, str]]:
        """``(doc_id, source, content_hash)`` of every document, by id."""
        return self._store.iter_documents()

    def get_chunks(self, chunk_ids: Iterable[int]) -> list[StoredChunk]:
        """Chunks by id in the order asked; unknown (deleted) ids are left out."""
        return self._store.get_chunks(chunk_ids)

    def get_vectors(self, chunk_ids: Iterable[int]) -> np.ndarray:
        """The stored unit vectors of ``chunk_ids``, one row per id in the order asked.

        Raises:
            KeyError: naming the ids that are not in the index (deleted, or never added).
        """
        ids = [int(i) for i in chunk_ids]
        if not ids:
            return np.zeros((0, self.dim), np.float32)
        found, vecs = self._store.vectors_of(ids, self.dim)
        row = {int(i): r for r, i in enumerate(found)}
        missing = [i for i in ids if i not in row]
        if missing:
            raise KeyError(f"no chunk with id {missing[:10]} in the index ({len(missing)} missing)")
        return vecs[[row[i] for i in ids]]

    def chunks_of(self, doc_id: str) -> list[StoredChunk]:
        """The chunks of one document, in order."""
        return self._store.chunks_of(doc_id)

    def chunk_ids(self, doc_id: str) -> list[int]:
        """The chunk ids of one document, in order."""
        return self._store.chunk_ids_of(doc_id)

    def iter_chunks(self, batch_size: int = 1024) -> Iterator[tuple[int, str]]:
        """``(chunk_id, text)`` of every chunk, by id, streamed (for building a BM25 index)."""
        return self._store.iter_chunks(batch_size)

    def chunk_texts(self, chunk_ids: Sequence[int]) -> list[tuple[int, str]]:
        """``(chunk_id, text)`` of the given chunks, in the order asked (unknown ids left out), for keeping a BM25
        index in step: no metadata is read."""
        return self._store.chunk_texts(chunk_ids)

    def matching_ids(self, filter: Filter) -> np.ndarray:
        """Chunk ids whose document matches ``filter`` (a dict of :mod:`~qwen3_rag.indexers.filters` or a
        callable).

        Raises:
            FilterError: for a malformed filter.
        """
        if callable(filter):
            return self._store.ids_matching(filter)
        sql, params = to_sql(filter, column="d.fmeta")
        return self._store.ids_where(sql, params)

    def search_vectors(
        self, query_vectors: np.ndarray, k: int = 10, filter: Filter | None = None, *,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Nearest chunks by inner product for each query vector.

        Args:
            query_vectors: ``(n, dim)`` or ``(dim,)`` float32 unit vectors.
            k: Hits per query.
            filter: Metadata filter, applied inside the search: k hits come back whenever k chunks match.
            allowed: The chunk ids ``filter`` matches, when the caller has them already
                (:meth:`matching_ids`); used instead of evaluating ``filter`` again.

        Returns:
            ``(ids, scores)``, int64 and float32 arrays of shape ``(n, k)``, best first; missing hits are
            ``-1`` / ``-inf``.

        Raises:
            ValueError: for a wrong dimension. FilterError: for a malformed filter.
        """
        q = np.asarray(query_vectors, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"query vectors must have shape (n, {self.dim}), got {q.shape}")
        self._follow_writer()
        vi = self.vectors
        vi.ef_search, vi.nprobe = self.ef_search, self.nprobe
        if allowed is None and filter is not None:
            allowed = self.matching_ids(filter)
        if allowed is not None and vi.spec.kind != "flat" and len(allowed) <= EXACT_FILTER_LIMIT:
            return self._exact(q, k, allowed)
        scores, ids = vi.search(q, k, allowed)
        if allowed is not None and vi.effective_type != "Flat":
            want = min(k, len(allowed))
            short = [i for i in range(len(q)) if int((ids[i] >= 0).sum()) < want]
            if short:  # the approximate search found too few matches: exact search on the matching subset
                ex_ids, ex_scores = self._exact(q[short], k, allowed)
                ids[short], scores[short] = ex_ids, ex_scores
        return ids, scores

    def _exact(self, q: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids_out = np.full((len(q), k), -1, np.int64)
        scores_out = np.full((len(q), k), -np.inf, np.float32)
        ids, vecs = self._store.vectors_of(allowed.tolist(), self.dim)
        if not len(ids):
            return ids_out, scores_out
        sims = q @ vecs.T
        kk = min(k, len(ids))
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        for row in range(len(q)):
            order = top[row][np.argsort(-sims[row, top[row]], kind="stable")]
            ids_out[row, :kk] = ids[order]
            scores_out[row, :kk] = sims[row, order]
        return ids_out, scores_out

    def hits(
        self, ids: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, score_name: str = "dense"
    ) -> list[Hit]:
        """Turn one row of ``search_vectors`` into :class:`~qwen3_rag.types.Hit` objects (padding dropped)."""
        return [chunk.to_hit(s, {score_name: s}) for chunk, s in self.scored_chunks(ids, scores)]

    def scored_chunks(
        self, ids: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray
    ) -> list[tuple[StoredChunk, float]]:
        """One row of ``search_vectors`` as ``(StoredChunk, score)`` in its order (padding and unknown ids dropped)."""
        pairs = [(int(i), float(s)) for i, s in zip(ids, scores, strict=True) if int(i) >= 0]
        chunks = {c.chunk_id: c for c in self._store.get_chunks([i for i, _ in pairs])}
        return [(chunks[i], s) for i, s in pairs if i in chunks]

    def search(
        self, query: str, k: int = 10, filter: Filter | None = None, instruction: str | None = None
    ) -> list[Hit]:
        """Embed ``query`` with the index's embedder and return the ``k`` best chunks as hits.

        Raises:
            ValueError: without an embedder.
        """
        embedder = self._require_embedder("search(query)")
        q = (
            embedder.embed_queries([query], instruction=instruction)
            if instruction is not None
            else embedder.embed_queries([query])
        )
        ids, scores = self.search_vectors(q, k, filter)
        return self.hits(ids[0], scores[0])

    def __repr__(self) -> str:
        model = self.model_info.get("model")
        return f"Index({str(self.path)!r}, model={model!r}, spec={self.spec.spec})"


__all__ = [
    "Index",
    "IndexCounts",
    "IndexLockedError",
    "IndexMismatchError",
    "Sidecar",
    "WriteStats",
    "check_model",
    "describe_embedder",
]
