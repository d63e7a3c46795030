"""An index, opened by location: where chunks, their vectors and their documents live, and how they are found.

:class:`Index` is the storage contract (:class:`~qwen3_rag.protocols.StorageBackend`) with what every backend
shares: opening by location, change detection, turning search results into hits, and searching with text. The
location picks the backend:

- a directory path: the local index, FAISS + SQLite in one directory (:class:`~qwen3_rag.indexers.local.LocalIndex`,
  the default; layout in docs/index-format.md);
- a URI such as ``milvus://HOST:PORT/COLLECTION`` or ``milvus-lite://PATH/FILE.db/COLLECTION``: a backend
  registered for its scheme (:data:`BACKENDS`), imported when first used.

Example:
    >>> index = Index.create("my-index", embedder)                   # doctest: +SKIP
    >>> ingest_documents([Document(id="a", text="FAISS is a library.")], index)  # doctest: +SKIP
    >>> index.search("what is faiss?", k=3)                          # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import os
import re
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from qwen3_rag.indexers.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE
from qwen3_rag.indexers.manifest import IndexDamagedError, IndexLockedError, IndexMismatchError
from qwen3_rag.protocols import PARTIAL, Filter, StorageBackend, TextEmbedder
from qwen3_rag.types import Chunk, Document, Hit, IndexCounts, WriteStats

__all__ = [
    "BACKENDS",
    "LARGE_K",
    "Index",
    "IndexCounts",
    "IndexDamagedError",
    "IndexLockedError",
    "IndexMismatchError",
    "WriteStats",
    "backend_for",
    "check_k",
    "cut_k",
    "unique_ids",
    "unit_rows",
]

#: URI scheme -> ``module:Class`` of the backend that opens it; a plain path is the local index.
BACKENDS: dict[str, str] = {
    "milvus": "qwen3_rag.indexers.milvus:MilvusIndex",
    "milvuss": "qwen3_rag.indexers.milvus:MilvusIndex",
    "milvus-lite": "qwen3_rag.indexers.milvus:MilvusIndex",
}
_LOCAL = "qwen3_rag.indexers.local:LocalIndex"
#: Above this ``k`` a search stops at the chunks the index holds instead of padding its results to ``k``.
LARGE_K = 10_000
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")

Location = str | os.PathLike[str]


def backend_for(location: Location) -> type[Index]:
    """The backend class that stores an index at ``location``.

    Raises:
        ValueError: for a URI whose scheme no backend handles.
    """
    target = _LOCAL
    match = _SCHEME.match(os.fspath(location))
    if match:
        scheme = match.group(1).lower()
        if scheme not in BACKENDS:
            raise ValueError(f"no index backend for {scheme}:// in {os.fspath(location)!r}; use a directory path "
                             f"or one of {', '.join(s + '://' for s in BACKENDS)}")
        target = BACKENDS[scheme]
    module, name = target.split(":")
    backend: type[Index] = getattr(importlib.import_module(module), name)
    return backend


class Index(StorageBackend):
    """The storage contract, opened or created at a location (see the module docstring).

    ``Index.create`` / ``Index.open`` / ``Index.open_or_create`` pick the backend from the location; called on a
    backend class they use that backend. An index is a context manager (closing commits and releases it).
    """

    # -- opening -----------------------------------------------------------------------------------------------

    @classmethod
    def _backend(cls, location: Location) -> type[Index]:
        return backend_for(location) if cls is Index else cls

    @classmethod
    def create(cls, location: Location, embedder: TextEmbedder | None = None, *,
               chunk_size: int = DEFAULT_CHUNK_SIZE, chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
               index_type: str = "Flat", dim: int | None = None, bm25: bool = True, **options: Any) -> Index:
        """Create a new, empty index.

        Args:
            location: A directory (created; it must be empty or absent) or a backend URI.
            embedder: The embedder the index is for; its model record is stored and checked on every open.
            chunk_size: Maximum tokens per chunk (0: one chunk per document).
            chunk_overlap: Tokens shared by consecutive chunks.
            index_type: The vector index: ``Flat`` (exact), ``HNSW<M>``, ``IVF<n>,Flat`` or ``IVF<n>,PQ<m>``
                (a backend maps these to its own types).
            dim: The vector dimension when no embedder is given (vectors then come with the documents).
            bm25: Keep the keyword (BM25) index of hybrid search up to date with every write, so it is ready when
                searched (off: it is built when first searched).
            **options: Backend options (local: ``use_gpu``).

        Raises:
            FileExistsError: the location holds an index already, or (a directory) other files.
            ValueError: bad chunking settings, index type or dimension.
        """
        return cls._backend(location)._create(location, embedder, chunk_size=chunk_size, chunk_overlap=chunk_overlap,
                                              index_type=index_type, dim=dim, bm25=bm25, **options)

    @classmethod
    def open(cls, location: Location, embedder: TextEmbedder | None = None, *, read_only: bool = False,
             **options: Any) -> Index:
        """Open an existing index.

        Args:
            location: The directory or backend URI.
            embedder: Needed to search with text or to write; checked against the stored model record.
            read_only: Never write; any number of readers run beside one writer and see its last commit.
            **options: Backend options (local: ``use_gpu``).

        Raises:
            FileNotFoundError: there is no index at ``location``.
            IndexMismatchError: ``embedder`` is another model, dimension or pooling.
            IndexLockedError: another process is writing (not for ``read_only``).
            IndexDamagedError: the index cannot be read.
        """
        return cls._backend(location)._open(location, embedder, read_only=read_only, **options)

    @classmethod
    def open_or_create(cls, location: Location, embedder: TextEmbedder | None = None, *,
                       chunk_size: int | None = None, chunk_overlap: int | None = None,
                       index_type: str | None = None, dim: int | None = None, bm25: bool = True,
                       **options: Any) -> Index:
        """Open the index at ``location``, or create it (``bm25`` applies to a new one; see :meth:`create`).
        Settings given must match an existing index.

        Raises:
            ValueError: a setting differs from the existing index (naming both values).
            IndexMismatchError: see :meth:`open`.
        """
        backend = cls._backend(location)
        if not backend.exists(location):
            return backend.create(location, embedder,
                                  chunk_size=DEFAULT_CHUNK_SIZE if chunk_size is None else chunk_size,
                                  chunk_overlap=DEFAULT_CHUNK_OVERLAP if chunk_overlap is None else chunk_overlap,
                                  index_type=index_type or "Flat", dim=dim, bm25=bm25, **options)
        index = backend.open(location, embedder, **options)
        try:
            index._check_settings(chunk_size=chunk_size, chunk_overlap=chunk_overlap, index_type=index_type)
        except BaseException:
            index.close()
            raise
        return index

    def _check_settings(self, **given: Any) -> None:
        from qwen3_rag.indexers.vector_index import IndexSpec

        have = {"chunk_size": self.chunking.chunk_size, "chunk_overlap": self.chunking.chunk_overlap,
                "index_type": self.manifest["index"]["spec"]}
        if given.get("index_type"):
            given["index_type"] = IndexSpec.parse(given["index_type"]).spec
        for name, value in given.items():
            if value is not None and value != have[name]:
                raise ValueError(f"the index at {self.location!r} has {name} {have[name]!r}, not {value!r}; leave "
                                 f"{name} out to keep {have[name]!r}, or build a new index")

    @classmethod
    def exists(cls, location: Location) -> bool:
        """True when ``location`` holds an index."""
        return cls._backend(location)._exists(location)

    @classmethod
    def read_manifest(cls, location: Location) -> dict[str, Any]:
        """The stored manifest of the index at ``location`` (model record, chunking, index type), read without
        loading anything.

        Raises:
            FileNotFoundError: there is no index at ``location``.
        """
        return cls._backend(location)._read_manifest(location)

    # -- what a backend implements besides the contract ------------------------------------------------------------

    @classmethod
    @abstractmethod
    def _create(cls, location: Location, embedder: TextEmbedder | None, *, chunk_size: int, chunk_overlap: int,
                index_type: str, dim: int | None, bm25: bool, **options: Any) -> Index: ...

    @classmethod
    @abstractmethod
    def _open(cls, location: Location, embedder: TextEmbedder | None, *, read_only: bool,
              **options: Any) -> Index: ...

    @classmethod
    @abstractmethod
    def _exists(cls, location: Location) -> bool: ...

    @classmethod
    @abstractmethod
    def _read_manifest(cls, location: Location) -> dict[str, Any]: ...

    @contextmanager
    def reading(self) -> Iterator[Index]:
        """A consistent view for the length of one search: what is read inside sees one commit (a backend
        without snapshots reads the newest state)."""
        yield self

    # -- shared behaviour -------------------------------------------------------------------------------------

    def changed(self, documents: Sequence[Document], *, replace: bool = True) -> tuple[list[Document], WriteStats]:
        """The documents that need writing: new ones and those whose content hash differs from the stored one.

        The counts (``added``, ``updated``, ``unchanged`` and the ``chunks_removed`` that replacing the updated
        ones will delete) come back as a :class:`~qwen3_rag.types.WriteStats`. A document stored partly written
        (an interrupted run, see :meth:`StorageBackend.write <qwen3_rag.protocols.StorageBackend.write>`) counts as
        added, also with ``replace=False``: it was never stored whole.

        Raises:
            ValueError: with ``replace=False``, for a document stored with other content.
        """
        stored = self.document_states([d.id for d in documents])
        stats = WriteStats()
        out = []
        for doc in documents:
            old = stored.get(doc.id)
            if old is None or old[0] == PARTIAL:
                stats.added += 1
                stats.chunks_removed += old[1] if old is not None else 0
            elif old[0] == doc.content_hash:
                stats.unchanged += 1
                continue
            elif not replace:
                raise ValueError(f"document {doc.id!r} already exists with other content; write it with "
                                 "replace=True to replace it")
            else:
                stats.updated += 1
                stats.chunks_removed += old[1]
            out.append(doc)
        return out, stats

    def document_hashes(self, doc_ids: Sequence[str]) -> dict[str, str]:
        """The stored content hash of each of ``doc_ids`` that exists (absent ones are left out)."""
        return {doc_id: state[0] for doc_id, state in self.document_states(list(doc_ids)).items()}

    def get_document(self, doc_id: str) -> Document | None:
        """The stored document (full text and metadata), or None."""
        found = self.get_documents([doc_id])
        return found[0] if found else None

    def scored_chunks(self, ids: Sequence[int] | np.ndarray,
                      scores: Sequence[float] | np.ndarray) -> list[tuple[Chunk, float]]:
        """One row of :meth:`search_vectors` as ``(chunk, score)``, in its order (padding dropped)."""
        pairs = [(int(i), float(s)) for i, s in zip(ids, scores, strict=True) if int(i) >= 0]
        chunks = {c.chunk_id: c for c in self.get_chunks([i for i, _ in pairs])}
        return [(chunks[i], s) for i, s in pairs if i in chunks]

    def hits(self, ids: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray,
             score_name: str = "dense") -> list[Hit]:
        """One row of :meth:`search_vectors` as :class:`~qwen3_rag.types.Hit` s (padding dropped)."""
        return [chunk.to_hit(s, {score_name: s}) for chunk, s in self.scored_chunks(ids, scores)]

    def search(self, query: str, k: int = 10, filter: Filter | None = None,
               instruction: str | None = None) -> list[Hit]:
        """The ``k`` chunks nearest to ``query``, embedded with the index's embedder (dense search only; the
        :class:`~qwen3_rag.Retriever` adds BM25, fusion and reranking).

        Raises:
            ValueError: the index was opened without an embedder.
        """
        embedder = self.embedder
        if embedder is None:
            raise ValueError("search(query) needs an embedder: open the index with Index.open(location, embedder)")
        vectors = embedder.embed_queries([query], instruction=instruction)
        with self.reading():
            ids, scores = self.search_vectors(vectors, k, filter)
            return self.hits(ids[0], scores[0])

    def __len__(self) -> int:
        return self.count().chunks

    def __enter__(self) -> Index:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            self.rollback()
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r}, model={self.model_info.get('model')!r})"


def unique_ids(doc_ids: Iterable[str]) -> None:
    """Raise ValueError naming a document id that appears twice in one write."""
    seen: set[str] = set()
    for doc_id in doc_ids:
        if doc_id in seen:
            raise ValueError(f"document id {doc_id!r} appears twice in one write; ids must be unique")
        seen.add(doc_id)


def unit_rows(vectors: np.ndarray, n: int, dim: int) -> np.ndarray:
    """``vectors`` checked to be ``n`` finite rows of ``dim`` and scaled to unit length (float32, contiguous)."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim == 1 and n == 1:
        v = v[None, :]
    if v.ndim != 2 or len(v) != n or v.shape[1] != dim:
        raise ValueError(f"expected one vector per chunk, an array of shape ({n}, {dim}); got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError("the vectors hold NaN or infinite values; check the embedding model's output")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if v.size and not np.allclose(norms, 1.0, atol=1e-3):
        if (norms == 0).any():
            raise ValueError("a vector is all zeros and has no direction; check the embedding model's output")
        v = v / norms
    return np.ascontiguousarray(v, dtype=np.float32)


def check_k(k: int) -> None:
    """Refuse a ``k`` that is not an int >= 1."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")


def cut_k(k: int, held: int) -> int:
    """``k``, or above :data:`LARGE_K` the number of chunks held (a huge ``k`` must not allocate for ids that
    cannot exist)."""
    return max(1, min(int(k), held)) if k > LARGE_K else int(k)
