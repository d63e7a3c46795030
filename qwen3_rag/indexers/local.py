"""The local index: one directory with a SQLite store and the search structures derived from it.

Layout (docs/index-format.md)::

    DIR/store.sqlite         the source of truth (SQLite, WAL): documents (text, metadata), chunks (offsets, lines,
                             page, headings, float32 vector), the manifest, the removal log
    DIR/vectors.<gen>.faiss  the HNSW / trained IVF index of generation ``gen`` (an exact index is rebuilt from
                             the store instead), checksummed in the store
    DIR/bm25.<gen>.npz       the BM25 index, checksummed in the store
    DIR/manifest.json        a human-readable copy of the manifest, rewritten when files are published
    DIR/.lock                held (flock) by the one writer

One process writes at a time; any number of ``read_only=True`` readers run beside it and see its last commit (see
:mod:`qwen3_rag.indexers.derived`). Chunk ids come from a persisted counter and are never reused.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from qwen3_rag.indexers.bm25 import BM25Component, BM25Config, BM25Index
from qwen3_rag.indexers.chunking import ChunkingConfig
from qwen3_rag.indexers.connection import GuardedConnection
from qwen3_rag.indexers.derived import DerivedState
from qwen3_rag.indexers.filters import to_sql
from qwen3_rag.indexers.index import Index, Location, check_k, cut_k, unique_ids, unit_rows
from qwen3_rag.indexers.manifest import (
    MANIFEST_FILE,
    OWN_FILES,
    IndexDamagedError,
    IndexLockedError,
    ManifestProperties,
    WriterLock,
    atomic_write,
    check_embedder,
    chunking_record,
    model_record,
    new_manifest,
    refuse_foreign,
    warn_long_chunks,
)
from qwen3_rag.indexers.store import STORE_FILE, Store, connect_uri
from qwen3_rag.indexers.store_formats import checked_manifest
from qwen3_rag.indexers.vector_index import IndexSpec, VectorComponent, VectorIndex
from qwen3_rag.protocols import Filter, TextEmbedder
from qwen3_rag.types import Chunk, Document, IndexCounts

logger = logging.getLogger(__name__)

#: A filtered search on an approximate index (HNSW, IVF) is done exactly when at most this many chunks match.
EXACT_FILTER_LIMIT = 4096


class LocalIndex(ManifestProperties, Index):
    """An index directory (see the module docstring); create it with :meth:`Index.create`, open it with
    :meth:`Index.open`.

    Attributes:
        ef_search: HNSW search breadth (None: ``max(64, 2k, n / 4000)`` for ``n`` vectors).
        nprobe: IVF lists searched (None: ``max(16, nlist / 16)``).
    """

    ef_search: int | None = None
    nprobe: int | None = None

    def __init__(self, path: Path, store: Store, manifest: dict[str, Any], embedder: TextEmbedder | None,
                 read_only: bool, lock: WriterLock | None, use_gpu: bool | str = "auto") -> None:
        self.path = path
        self._store = store
        self._load_manifest(manifest, embedder, read_only)
        self._lock = lock
        self._use_gpu = use_gpu
        self._derived = DerivedState(path, store, read_only)
        self._depth = 0
        self._filters: tuple[Any, int, np.ndarray] | None = None  # the last filter resolved, at a generation
        self._closed = False

    # -- opening ---------------------------------------------------------------------------------------------

    @classmethod
    def _create(cls, location: Location, embedder: TextEmbedder | None, *, chunking: ChunkingConfig,
                index_type: str, dim: int | None, bm25: bool, use_gpu: bool | str = "auto",
                **options: Any) -> LocalIndex:
        _no_options(options)
        root = Path(location)
        if cls._exists(root):
            raise FileExistsError(f"{str(root)!r} already holds an index; open it with Index.open() or choose "
                                  "another directory")
        refuse_foreign(root)
        model = model_record(embedder, dim)
        warn_long_chunks(embedder, chunking.chunk_size)
        spec = IndexSpec.parse(index_type)
        spec.check_dim(int(model["dim"]))
        root.mkdir(parents=True, exist_ok=True)
        lock = WriterLock(root)
        try:
            store = Store(root / STORE_FILE)
            manifest = new_manifest(model, chunking_record(chunking, embedder),
                                    {"spec": spec.spec, "bm25": bm25})
            store.begin()
            for key, value in (("manifest", manifest), ("generation", 0), ("next_id", 0)):
                store.set_meta(key, value)
            store.commit()
        except BaseException:
            lock.release()
            raise
        index = cls(root, store, manifest, embedder, False, lock, use_gpu)
        index._write_manifest_file()
        return index

    @classmethod
    def _open(cls, location: Location, embedder: TextEmbedder | None, *, read_only: bool,
              use_gpu: bool | str = "auto", **options: Any) -> LocalIndex:
        _no_options(options)
        root = Path(location)
        if not cls._exists(root):
            raise FileNotFoundError(_missing(root))
        lock = None if read_only else WriterLock(root)
        try:
            store = Store(root / STORE_FILE, read_only=read_only)
            manifest = checked_manifest(store, root, read_only)
            if embedder is not None:
                check_embedder(manifest["model"], embedder, str(root))
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        if not read_only:
            for tmp in root.iterdir():  # left by a writer killed mid-write; this process holds the lock now
                if tmp.name.endswith(".tmp") and OWN_FILES.fullmatch(tmp.name):
                    tmp.unlink(missing_ok=True)
        return cls(root, store, manifest, embedder, read_only, lock, use_gpu)

    @classmethod
    def _exists(cls, location: Location) -> bool:
        store = Path(location) / STORE_FILE
        if not store.is_file():
            return False
        try:  # an empty meta table is a create() killed before its first commit: not an index
            conn = GuardedConnection.connect(store, connect_uri(store, read_only=True), uri=True)
            try:
                conn.execute("PRAGMA busy_timeout=30000")
                return conn.execute("SELECT 1 FROM meta LIMIT 1").fetchone() is not None
            finally:
                conn.close()
        except (IndexDamagedError, IndexLockedError, OSError):
            return True  # something is there; let open() report what is wrong with it

    @classmethod
    def _read_manifest(cls, location: Location) -> dict[str, Any]:
        if not cls._exists(location):
            raise FileNotFoundError(_missing(Path(location)))
        store = Store(Path(location) / STORE_FILE, read_only=True)
        try:
            return dict(store.get_meta("manifest"))
        finally:
            store.close()

    def close(self) -> None:
        """Commit pending writes, publish the search structures, fold the write-ahead log in, release the lock."""
        if self._closed:
            return
        try:
            if not self._read_only:
                self.commit()
                self._publish()
        finally:
            self._closed = True
            self._store.close(checkpoint=not self._read_only)
            if self._lock is not None:
                self._lock.release()

    # -- properties ------------------------------------------------------------------------------------------

    @property
    def location(self) -> str:
        return str(self.path)

    @property
    def generation(self) -> int:
        """The number of the last commit of the store (0 for a new index)."""
        return int(self._store.get_meta("generation", 0))

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest with current counts, generation and the index type searched."""
        out = dict(self._manifest)
        counts = self.count()
        out["counts"] = {"documents": counts.documents, "chunks": counts.chunks, "vectors": counts.vectors}
        out["generation"] = self.generation
        trained = self.spec.kind != "ivf" or counts.chunks >= self.spec.train_size
        out["index"] = dict(out["index"], effective=self.spec.spec if trained else "Flat")
        return out

    @property
    def vectors(self) -> VectorIndex:
        """The vector search structure at the last commit (loaded or built on first use)."""
        if "vectors" not in self._derived:
            self._derived.attach(self._component("vectors"))
        else:
            self._derived.follow()
        index: VectorIndex = self._derived.get("vectors").index
        return index

    def _component(self, name: str) -> VectorComponent | BM25Component:
        return VectorComponent(self.dim, self.spec, self._use_gpu) if name == "vectors" else BM25Component()

    @property
    def keyword_config(self) -> BM25Config:
        """The BM25 settings of the keyword index (loaded for an index that keeps one; one that does not builds it
        with the defaults when first searched)."""
        if "bm25" in self._derived or self._manifest["index"].get("bm25", True):
            return self.keyword_index().config
        return BM25Config()

    def keyword_index(self, config: BM25Config | None = None) -> BM25Index:
        """The BM25 index at the last commit, loaded or built on first use; a writer keeps it in step and
        publishes it from then on. ``config`` other than the stored settings rebuilds it."""
        if "bm25" in self._derived and config is not None and config != self._derived.get("bm25").config:
            self._derived.get("bm25").config = config
            self._derived.rebuild("bm25")
        elif "bm25" not in self._derived:
            self._derived.attach(BM25Component(config))
        else:
            self._derived.follow()
        bm25: BM25Index = self._derived.get("bm25").bm25
        return bm25

    # -- writing ---------------------------------------------------------------------------------------------

    @contextmanager
    def transaction(self, *, publish: bool = True) -> Iterator[LocalIndex]:
        """Group writes into one commit; an exception rolls them back. ``publish=False`` (a bulk load) leaves the
        search structures' files to :meth:`close` or a later commit."""
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
            self.commit(publish=publish)

    def _begin(self) -> int:
        """Start the write transaction (once); returns the generation it will commit."""
        self._require_writable()
        self._store.begin()
        return self.generation + 1

    def commit(self, *, publish: bool = True) -> None:
        """Commit pending writes: the store first (the durable point), then the search structures catch up and,
        with ``publish``, their files are written."""
        if self._read_only or not self._store.in_transaction:
            return
        self._store.set_meta("generation", self.generation + 1)
        self._store.commit()
        self._derived.follow()
        if publish:
            self._publish()

    def rollback(self) -> None:
        """Drop uncommitted writes."""
        self._store.rollback()

    def set_hybrid_settings(self, settings: dict[str, Any] | None) -> None:
        with self.transaction():
            self._store.set_meta("manifest", self._with_hybrid(self._store.get_meta("manifest"), settings))
        self._manifest = self._with_hybrid(self._manifest, settings)
        self._write_manifest_file()

    def _publish(self) -> None:
        names = set(self._derived.recorded())  # every published structure is kept in step, so its file is too
        if self._manifest["index"].get("bm25", True):
            names.add("bm25")
        if self.spec.kind != "flat":  # an approximate index is costly to build: readers load its file
            names.add("vectors")
        for name in sorted(names):
            if name not in self._derived:
                self._derived.attach(self._component(name))
        self._derived.publish()
        self._write_manifest_file()

    def _write_manifest_file(self) -> None:
        try:
            atomic_write(self.path / MANIFEST_FILE, json.dumps(self.manifest, indent=2, ensure_ascii=False).encode())
        except OSError as exc:  # an informational copy; the store holds the truth
            logger.warning("could not write %s: %s", self.path / MANIFEST_FILE, exc)

    def write(self, items: Sequence[tuple[Document, Sequence[Chunk]]], vectors: np.ndarray, *,
              append: bool = False, complete: bool = True) -> list[list[int]]:
        """Store documents with their chunks and vectors, replacing earlier versions (one delete, one insert per
        table for all), or, with ``append``, adding a part of each; ``complete=False`` marks them partly written
        (see :meth:`StorageBackend.write <qwen3_rag.protocols.StorageBackend.write>`). ``vectors`` holds one row
        per chunk, in order; rows are L2-normalised.

        Raises:
            ValueError: a wrong number, width or value of vectors, a document id that repeats, or a part appended
                to a document that is not stored.
        """
        n = sum(len(chunks) for _, chunks in items)
        vecs = unit_rows(vectors, n, self.dim) if n else np.zeros((0, self.dim), np.float32)
        unique_ids(doc.id for doc, _ in items)
        if not items:
            return []
        with self.transaction():  # outside a transaction: one commit, and a failure rolls the deletes back too
            generation = self._begin()
            if not append:
                self._store.delete_documents([doc.id for doc, _ in items], generation)
            ids = self._store.allocate_ids(n)
            self._store.put_documents(items, ids, vecs, append=append, complete=complete)
        per_doc, pos = [], 0
        for _, chunks in items:
            per_doc.append(ids[pos:pos + len(chunks)].tolist())
            pos += len(chunks)
        return per_doc

    def delete(self, doc_ids: Iterable[str]) -> int:
        """Delete documents and all their chunks; returns how many documents existed."""
        wanted = list(dict.fromkeys([doc_ids] if isinstance(doc_ids, str) else doc_ids))
        existing = list(self._store.document_states(wanted))
        if existing:
            with self.transaction():
                self._store.delete_documents(existing, self._begin())
        return len(existing)

    # -- reading ---------------------------------------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[LocalIndex]:
        with self._store.snapshot():
            self._derived.follow()
            yield self

    def count(self) -> IndexCounts:
        docs, chunks = self._store.count_documents(), self._store.count_chunks()
        vectors = len(self._derived.get("vectors").index) if "vectors" in self._derived else chunks
        return IndexCounts(docs, chunks, vectors)

    def document_states(self, doc_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        return self._store.document_states(doc_ids)

    def iter_documents(self) -> Iterator[tuple[str, str, str]]:
        return self._store.iter_documents()

    def get_documents(self, doc_ids: Iterable[str]) -> list[Document]:
        return self._store.get_documents(list(doc_ids))

    def get_chunks(self, chunk_ids: Iterable[int]) -> list[Chunk]:
        return self._store.get_chunks(chunk_ids)

    def chunks_of(self, doc_id: str) -> list[Chunk]:
        return self._store.chunks_of(doc_id)

    def iter_chunks(self) -> Iterator[tuple[int, str]]:
        """``(chunk_id, text)`` of every chunk, by id, streamed."""
        return self._store.iter_chunks()

    def get_vectors(self, chunk_ids: Iterable[int]) -> np.ndarray:
        ids = [int(i) for i in chunk_ids]
        found, vecs = self._store.vectors_of(ids, self.dim)
        row = {int(i): r for r, i in enumerate(found)}
        missing = [i for i in ids if i not in row]
        if missing:
            raise KeyError(f"no chunk with id {missing[:10]} in the index ({len(missing)} missing)")
        return vecs[[row[i] for i in ids]] if ids else np.zeros((0, self.dim), np.float32)

    def matching_ids(self, filter: Filter) -> np.ndarray:
        """The chunk ids whose document matches ``filter`` (resolved once per filter and commit).

        Raises:
            FilterError: for a malformed filter.
        """
        generation = self.generation
        if self._filters is not None and self._filters[0] is filter and self._filters[1] == generation:
            return self._filters[2]
        if callable(filter):
            ids = self._store.chunk_ids_of(self._store.docs_matching(filter))
        else:
            ids = self._store.chunk_ids_where(*to_sql(filter, column="d.fmeta"))
        self._filters = (filter, generation, ids)
        return ids

    def find_documents(self, filter: Filter) -> list[str]:
        if callable(filter):
            return self._store.docs_matching(filter)
        sql, params = to_sql(filter, column="d.fmeta")
        return self._store.doc_ids_where(sql, params)

    # -- searching -------------------------------------------------------------------------------------------

    def search_vectors(self, queries: np.ndarray, k: int = 10,
                       filter: Filter | None = None) -> tuple[np.ndarray, np.ndarray]:
        q = self._query_rows(queries)
        check_k(k)
        with self.reading():
            vi = self.vectors
            k = cut_k(k, len(vi))
            vi.ef_search, vi.nprobe = self.ef_search, self.nprobe
            allowed = None if filter is None else self.matching_ids(filter)
            if allowed is not None and vi.spec.kind != "flat" and len(allowed) <= EXACT_FILTER_LIMIT:
                return self._exact(q, k, allowed)
            scores, ids = vi.search(q, k, allowed)
            if allowed is not None and vi.effective_type != "Flat":
                want = min(k, len(allowed))
                short = [i for i in range(len(q)) if int((ids[i] >= 0).sum()) < want]
                if short:  # the approximate search found too few matches: exact search on the matching subset
                    ids[short], scores[short] = self._exact(q[short], k, allowed)
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

    def keyword_search(self, queries: Sequence[str], k: int = 10,
                       filter: Filter | None = None) -> list[list[tuple[int, float]]]:
        check_k(k)
        with self.reading():
            bm25 = self.keyword_index()
            k = cut_k(k, len(bm25))
            allowed = None if filter is None else self.matching_ids(filter)
            return bm25.search_batch(list(queries), k, allowed)


def _no_options(options: dict[str, Any]) -> None:
    if options:
        raise TypeError(f"the local index takes no option {', '.join(map(repr, options))}; its options are use_gpu")


def _missing(root: Path) -> str:
    return (f"no index at {str(root)!r} ({STORE_FILE} is missing); build one with "
            "ingest(sources, index) or Index.create()")


__all__ = ["EXACT_FILTER_LIMIT", "STORE_FILE", "LocalIndex"]
