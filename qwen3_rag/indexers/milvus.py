"""The Milvus backend: an index in Milvus Lite (a local file) or a Milvus server, opened by URI.

Locations:

- ``milvus-lite://PATH/TO/FILE.db/COLLECTION``: embedded Milvus Lite in ``PATH/TO/FILE.db`` (relative or, with a
  third slash, absolute); one process at a time opens a Lite file;
- ``milvus://HOST:PORT/COLLECTION`` a Milvus server (Standalone, Distributed, Zilliz Cloud), ``milvuss://`` or
  ``?secure=true`` over TLS, ``?db=NAME`` in a database other than the default. The token (``user:password`` or
  an API key) comes from ``?token=``, from ``user:password@`` before the host, or from the environment variable
  :data:`TOKEN_VARIABLE`; it is never part of :attr:`MilvusIndex.location`, a repr, a log line or an error.

The code path is the same for both; only the URI differs. The rows are laid out in
:mod:`qwen3_rag.indexers.milvus_store`.

What the contract asks and how Milvus gives it:

- *Transactions*: Milvus has none. Writes wait in memory until the commit (:class:`~qwen3_rag.DocumentWriter`
  commits every few hundred chunks), so a rollback or a crash before the commit leaves nothing behind. The commit
  notes the documents it touches in a journal, deletes their old rows, writes the new chunks and then each
  document's row, the sign that it is complete, and clears the journal. A run killed in the middle leaves
  documents without their row: :meth:`~MilvusIndex.changed` reports them, so the next run writes them again, and
  the next writer to open the index deletes the chunks the journal names that no document row owns. A document
  written in parts (see :meth:`~qwen3_rag.protocols.StorageBackend.write`) gets its row with each part, marked
  partly written until the last one.
- *Chunk ids* are hashes of the document, its content and the chunk's place in it, so writing the same chunk again
  writes the same row.
- *Reads inside a transaction* see the last commit, except :meth:`~MilvusIndex.document_states` (and so
  :meth:`~MilvusIndex.changed`), which also sees the writes waiting.
- *Filters* compile to Milvus expressions (:func:`~qwen3_rag.indexers.filters.to_milvus`) applied inside the
  search; a callable filter is evaluated here over every document, then searched as a list of document ids.
- *Keyword search* is Milvus's BM25 function over the terms of the local tokenizer (see
  :mod:`~qwen3_rag.indexers.milvus_store`); scores are made positive (Milvus Lite returns them negated).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qwen3_rag.indexers.bm25 import BM25Config
from qwen3_rag.indexers.chunking import ChunkingConfig
from qwen3_rag.indexers.filters import to_milvus
from qwen3_rag.indexers.index import (
    LARGE_K,
    Index,
    Location,
    check_k,
    cut_k,
    unique_ids,
    unit_rows,
)
from qwen3_rag.indexers.local import EXACT_FILTER_LIMIT
from qwen3_rag.indexers.manifest import (
    IndexDamagedError,
    ManifestProperties,
    check_embedder,
    chunking_record,
    model_record,
    new_manifest,
    warn_long_chunks,
)
from qwen3_rag.indexers.milvus_connection import TOKEN_VARIABLE, MilvusLocation, connect, connected, disconnect
from qwen3_rag.indexers.milvus_store import (
    MAX_WINDOW,
    MilvusStore,
    Terms,
    batches,
    chunk_rows,
    document_row,
    id_list,
    vector_index_params,
)
from qwen3_rag.indexers.vector_index import IndexSpec
from qwen3_rag.protocols import Filter, TextEmbedder
from qwen3_rag.types import Chunk, Document, IndexCounts

logger = logging.getLogger(__name__)

__all__ = ["TOKEN_VARIABLE", "MilvusIndex", "MilvusLocation"]

#: Version of the layout of a Milvus index (its collections and rows, :mod:`~qwen3_rag.indexers.milvus_store`);
#: the local index's format has its own number. 2: the BM25 settings name how identifiers are tokenised (a
#: version-1 index keeps them whole); an older qwen3-rag refuses a version-2 index rather than search its BM25
#: terms with another tokeniser.
FORMAT_VERSION = 2
_READABLE = (1, 2)


def _missing(loc: MilvusLocation) -> str:
    return (f"no index at {loc.public!r} (no collection {loc.collection!r} with a qwen3-rag manifest); build one "
            "with ingest(sources, index) or Index.create()")


def _stored_manifest(store: MilvusStore, loc: MilvusLocation) -> dict[str, Any]:
    if not store.client.has_collection(store.meta):
        raise FileNotFoundError(_missing(loc))
    store.client.load_collection(store.meta)
    manifest = store.get_meta("manifest")
    if not isinstance(manifest, dict):
        raise FileNotFoundError(_missing(loc))
    if manifest.get("format_version") not in _READABLE:
        raise IndexDamagedError(f"{loc.public!r} has Milvus index format version {manifest.get('format_version')}; "
                                f"this qwen3-rag reads versions {', '.join(map(str, _READABLE))}. Upgrade "
                                "qwen3-rag, or rebuild the index.")
    return dict(manifest)



def _client_versions() -> dict[str, str]:
    """The versions of the Milvus client and of Milvus Lite (recorded in the manifest beside the others)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("pymilvus", "milvus-lite"):
        try:
            out[name.replace("-", "_")] = version(name)
        except PackageNotFoundError:
            continue
    return out


def _no_options(options: Mapping[str, Any]) -> None:
    if options:
        raise TypeError(f"a Milvus index takes no option {', '.join(map(repr, options))}; everything it needs is in "
                        "its URI")


@dataclass
class _Pending:
    """A document's writes waiting for the commit.

    Attributes:
        row: Its ``NAME__documents`` row (None: it is deleted).
        chunks: The rows of the chunks to write.
        replace: Delete its stored chunks first (False: ``chunks`` are a part appended to them).
    """

    row: dict[str, Any] | None
    chunks: list[dict[str, Any]]
    replace: bool


# -- the index -------------------------------------------------------------------------------------------------


class MilvusIndex(ManifestProperties, Index):
    """An index in Milvus (see the module docstring); create it with :meth:`Index.create`, open it with
    :meth:`Index.open`, giving a ``milvus://`` or ``milvus-lite://`` location.

    Attributes:
        ef_search: HNSW search breadth (None: ``max(64, 2k)``).
        nprobe: IVF lists searched (None: ``max(16, nlist / 16)``).
    """

    ef_search: int | None = None
    nprobe: int | None = None

    def __init__(self, loc: MilvusLocation, store: MilvusStore, manifest: dict[str, Any],
                 embedder: TextEmbedder | None, read_only: bool) -> None:
        self._loc = loc
        self._store = store
        self._load_manifest(manifest, embedder, read_only)
        self._terms = Terms(BM25Config.from_dict(manifest["index"].get("bm25_config", {})))
        self._pending: dict[str, _Pending] = {}
        self._depth = 0
        self._journal_open = False
        self._unflushed = loc.lite  # Milvus Lite searches rows not yet flushed by brute force, slowly
        self._closed = False

    # -- opening -------------------------------------------------------------------------------------------

    @classmethod
    def _create(cls, location: Location, embedder: TextEmbedder | None, *, chunking: ChunkingConfig,
                index_type: str, dim: int | None, bm25: bool, **options: Any) -> MilvusIndex:
        _no_options(options)
        loc = MilvusLocation.parse(location)
        model = model_record(embedder, dim)
        warn_long_chunks(embedder, chunking.chunk_size)
        spec = IndexSpec.parse(index_type)
        spec.check_dim(int(model["dim"]))
        if loc.lite and spec.pq_m:
            raise ValueError(f"Milvus Lite has no PQ index ({spec.spec}); use Flat, HNSW<M> or IVF<n>,Flat, or a "
                             "Milvus server")
        bm25_config = BM25Config()
        client = connect(loc)
        store = MilvusStore(client, loc.collection)
        try:
            cls._clear_for_create(store, loc)
            store.create(int(model["dim"]), spec, bm25_config)
            manifest = new_manifest(model, chunking_record(chunking, embedder),
                                    {"spec": spec.spec, "bm25": bm25, "bm25_config": dataclasses.asdict(bm25_config),
                                     "milvus": vector_index_params(spec)["index_type"]})
            manifest["format_version"] = FORMAT_VERSION
            manifest["versions"].update(_client_versions())
            store.set_meta("manifest", manifest)  # last: from here on the collections are an index
        except BaseException:
            disconnect(loc, client)
            raise
        logger.info("created the Milvus index %s", loc.public)
        return cls(loc, store, manifest, embedder, False)

    @staticmethod
    def _clear_for_create(store: MilvusStore, loc: MilvusLocation) -> None:
        """Refuse an existing index or foreign collection; drop what a create() killed halfway left."""
        existing = store.existing()
        if store.meta in existing:
            store.client.load_collection(store.meta)
            if store.get_meta("manifest") is not None:
                raise FileExistsError(f"{loc.public!r} already holds an index; open it with Index.open() or choose "
                                      "another collection")
        if not existing:
            return
        if len(existing) == 3:
            store.load()
            if store.count(store.chunks) == 0 and store.count(store.documents) == 0:
                store.drop()
                return
        raise FileExistsError(f"the collections {', '.join(existing)} exist in Milvus at {loc.public!r} but are not "
                              "a qwen3-rag index; choose another collection name, or drop them")

    @classmethod
    def _open(cls, location: Location, embedder: TextEmbedder | None, *, read_only: bool,
              **options: Any) -> MilvusIndex:
        _no_options(options)
        loc = MilvusLocation.parse(location)
        if loc.lite and not Path(loc.address).exists():
            raise FileNotFoundError(_missing(loc))
        client = connect(loc)
        try:
            store = MilvusStore(client, loc.collection)
            manifest = _stored_manifest(store, loc)
            if embedder is not None:
                check_embedder(manifest["model"], embedder, loc.public)
            store.load()
            index = cls(loc, store, manifest, embedder, read_only)
            if not read_only:
                index._recover()
        except BaseException:
            disconnect(loc, client)
            raise
        return index

    @classmethod
    def _exists(cls, location: Location) -> bool:
        loc = MilvusLocation.parse(location)
        if loc.lite and not Path(loc.address).exists():
            return False  # starting Milvus Lite would create the file
        with connected(loc) as store:
            try:
                _stored_manifest(store, loc)
            except FileNotFoundError:
                return False
            except IndexDamagedError:
                return True  # something is there; open() says what is wrong with it
            return True

    @classmethod
    def _read_manifest(cls, location: Location) -> dict[str, Any]:
        loc = MilvusLocation.parse(location)
        if loc.lite and not Path(loc.address).exists():
            raise FileNotFoundError(_missing(loc))
        with connected(loc) as store:
            return _stored_manifest(store, loc)

    def close(self) -> None:
        """Commit pending writes, flush Milvus Lite's in-memory rows, and release the connection."""
        if not self._closed:
            try:
                self._finish_writes()
            finally:
                self._closed = True
                disconnect(self._loc, self._store.client)

    def _finish_writes(self) -> None:
        if not self._read_only:
            self.commit()
            if self._loc.lite and self._unflushed:  # the next open then loads indexed segments
                self._store.flush()

    # -- properties ----------------------------------------------------------------------------------------

    @property
    def location(self) -> str:
        return self._loc.public

    @property
    def collection(self) -> str:
        """The Milvus collection of the chunks."""
        return self._loc.collection

    @property
    def manifest(self) -> dict[str, Any]:
        """The stored manifest with the current counts."""
        counts = self.count()
        return {**self._manifest, "counts": {"documents": counts.documents, "chunks": counts.chunks,
                                             "vectors": counts.vectors},
                "index": {**self._manifest["index"], "effective": self.spec.spec}}

    # -- writing -------------------------------------------------------------------------------------------

    @contextmanager
    def transaction(self, *, publish: bool = True) -> Iterator[MilvusIndex]:
        """Group writes into one commit (they wait in memory until then); an exception drops them."""
        self._require_writable()
        outermost = self._depth == 0
        self._depth += 1
        done = False
        try:
            yield self
            done = True
        finally:
            self._depth -= 1
            if outermost and done:
                self.commit(publish=publish)
            elif outermost:
                self.rollback()

    def commit(self, *, publish: bool = True) -> None:
        """Write the pending documents and deletions to Milvus (see the module docstring)."""
        if self._read_only or not self._pending:
            return
        pending, self._pending = self._pending, {}
        if self._journal_open:  # an earlier commit failed halfway
            self._recover()
        for part in batches(sorted(pending)):
            self._store.set_meta("journal", {"doc_ids": part})
            self._journal_open = True
            self._store.delete_documents(part)  # first: a document without its row is rewritten by the next run
            # also the chunks an interrupted run left; a part appended keeps the chunks of the parts before it
            self._store.delete_chunks_of([d for d in part if pending[d].replace])
            self._store.upsert(self._store.chunks, [row for d in part for row in pending[d].chunks])
            # last: the document's row says it is stored (complete, or partly written)
            self._store.upsert(self._store.documents, [row for row in (pending[d].row for d in part) if row])
            self._store.delete_meta("journal")
            self._journal_open = False
        self._unflushed = True

    def rollback(self) -> None:
        """Drop the writes not committed yet."""
        self._pending.clear()

    @property
    def keyword_config(self) -> BM25Config:
        return self._terms.config

    def set_hybrid_settings(self, settings: dict[str, Any] | None) -> None:
        manifest = self._with_hybrid(self._store.get_meta("manifest"), settings)
        self._store.set_meta("manifest", manifest)
        self._manifest = self._with_hybrid(self._manifest, settings)

    def _recover(self) -> None:
        """Delete the chunks a commit that was interrupted left without their document's row."""
        journal = self._store.get_meta("journal")
        if isinstance(journal, dict):
            doc_ids = list(journal.get("doc_ids", []))
            stored = self._store.document_states(doc_ids)
            orphans = [d for d in doc_ids if d not in stored]
            if orphans:
                logger.warning("%s: a write was interrupted; removing the chunks it left of %d documents (they are "
                               "written again when ingested again)", self.location, len(orphans))
                self._store.delete_chunks_of(orphans)
            self._store.delete_meta("journal")
        self._journal_open = False

    def write(self, items: Sequence[tuple[Document, Sequence[Chunk]]], vectors: np.ndarray, *,
              append: bool = False, complete: bool = True) -> list[list[int]]:
        """Store documents with their chunks and vectors (one unit row per chunk, in order), replacing earlier
        versions, or, with ``append``, adding a part of each; ``complete=False`` marks them partly written (see
        :meth:`StorageBackend.write <qwen3_rag.protocols.StorageBackend.write>`). Written at the commit.

        Raises:
            ValueError: a wrong number, width or value of vectors, a document id that repeats, a part appended to a
                document that is not stored, or a value Milvus cannot hold (naming the document).
        """
        self._require_writable()
        n = sum(len(chunks) for _, chunks in items)
        vecs = unit_rows(vectors, n, self.dim) if n else np.zeros((0, self.dim), np.float32)
        unique_ids(doc.id for doc, _ in items)
        stored = self.document_states([doc.id for doc, _ in items]) if append else {}
        missing = [doc.id for doc, _ in items if append and doc.id not in stored]
        if missing:
            raise ValueError(f"append=True for document {missing[0]!r}, which is not stored; write its first part "
                             "without append")
        entries: dict[str, _Pending] = {}
        out, pos = [], 0
        for doc, chunks in items:
            before = self._pending.get(doc.id) if append else None
            row = document_row(doc, stored[doc.id][1] + len(chunks) if append else len(chunks), complete)
            ids, rows = chunk_rows(doc, chunks, vecs[pos:pos + len(chunks)], self._terms, row)
            if before is not None:  # appended to a part written in this transaction
                entries[doc.id] = _Pending(row, before.chunks + rows, before.replace)
            else:
                entries[doc.id] = _Pending(row, rows, replace=not append)
            out.append(ids)
            pos += len(chunks)
        with self.transaction():
            self._pending.update(entries)
        return out

    def delete(self, doc_ids: Iterable[str]) -> int:
        """Delete documents and all their chunks (at the commit); returns how many documents existed."""
        self._require_writable()
        wanted = list(dict.fromkeys([doc_ids] if isinstance(doc_ids, str) else doc_ids))
        existing = list(self.document_states(wanted))
        with self.transaction():
            self._pending.update({doc_id: _Pending(None, [], replace=True) for doc_id in existing})
        return len(existing)

    # -- reading -------------------------------------------------------------------------------------------

    def document_states(self, doc_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """Stored states, with the writes of the open transaction applied."""
        stored = self._store.document_states([d for d in doc_ids if d not in self._pending])
        for doc_id in doc_ids:
            row = self._pending[doc_id].row if doc_id in self._pending else None
            if row is not None:
                stored[doc_id] = (row["content_hash"], int(row["n_chunks"]))
        return stored

    def count(self) -> IndexCounts:
        chunks = self._store.count(self._store.chunks)
        return IndexCounts(self._store.count(self._store.documents), chunks, chunks)

    def iter_documents(self) -> Iterator[tuple[str, str, str]]:
        rows = self._store.query_documents("", ["doc_id", "source", "content_hash"])
        for row in sorted(rows, key=lambda r: r["doc_id"]):
            yield row["doc_id"], row["source"], row["content_hash"]

    def get_documents(self, doc_ids: Iterable[str]) -> list[Document]:
        wanted = list(doc_ids)
        found = self._store.documents_by_id(wanted)
        return [found[d] for d in wanted if d in found]

    def get_chunks(self, chunk_ids: Iterable[int]) -> list[Chunk]:
        wanted = [int(i) for i in chunk_ids]
        found = self._store.chunks_by_id(wanted)
        return [found[i] for i in wanted if i in found]

    def chunks_of(self, doc_id: str) -> list[Chunk]:
        return self._store.chunks_of(doc_id)

    def get_vectors(self, chunk_ids: Iterable[int]) -> np.ndarray:
        wanted = [int(i) for i in chunk_ids]
        found = self._store.vectors_by_id(wanted)
        missing = [i for i in wanted if i not in found]
        if missing:
            raise KeyError(f"no chunk with id {missing[:10]} in the index ({len(missing)} missing)")
        return np.stack([found[i] for i in wanted]) if wanted else np.zeros((0, self.dim), np.float32)

    def find_documents(self, filter: Filter) -> list[str]:
        if callable(filter):
            rows = self._store.query_documents("", ["doc_id", "source", "metadata"])
            return sorted(r["doc_id"] for r in rows
                          if filter({"doc_id": r["doc_id"], "source": r["source"], **(r["metadata"] or {})}))
        return sorted(r["doc_id"] for r in self._store.query_documents(to_milvus(filter), ["doc_id"]))

    # -- searching -----------------------------------------------------------------------------------------

    def _expression(self, filter: Filter | None) -> str | None:
        """The Milvus expression of a filter (``""``: none); None when no document can match."""
        if filter is None:
            return ""
        if callable(filter):
            doc_ids = self.find_documents(filter)
            return id_list("doc_id", doc_ids) if doc_ids else None
        return to_milvus(filter)

    def _ready_to_search(self) -> None:
        if self._unflushed:
            self._store.flush()
            self._unflushed = False

    def _dense_params(self, k: int) -> dict[str, Any]:
        if self.spec.kind == "hnsw":
            return {"metric_type": "IP", "params": {"ef": max(k, self.ef_search or max(64, 2 * k))}}
        if self.spec.kind == "ivf":
            return {"metric_type": "IP", "params": {"nprobe": self.nprobe or max(16, self.spec.nlist // 16)}}
        return {"metric_type": "IP"}

    def search_vectors(self, queries: np.ndarray, k: int = 10,
                       filter: Filter | None = None) -> tuple[np.ndarray, np.ndarray]:
        q = self._query_rows(queries)
        check_k(k)
        expr = self._expression(filter)
        if k > LARGE_K:
            k = cut_k(k, self._store.count(self._store.chunks))
        ids = np.full((len(q), k), -1, np.int64)
        scores = np.full((len(q), k), -np.inf, np.float32)
        if expr is None or not len(q):
            return ids, scores
        self._ready_to_search()
        if k > MAX_WINDOW:  # more than one Milvus search returns
            return self._exact(q, k, expr)
        for row, hits in enumerate(self._store.search(list(q), k, expr, "vector", self._dense_params(k))):
            ids[row, :len(hits)] = [i for i, _ in hits]
            scores[row, :len(hits)] = [s for _, s in hits]
        if filter is not None and self.spec.kind != "flat":
            self._exact_where_short(q, k, expr, ids, scores)
        return ids, scores

    def _exact_where_short(self, q: np.ndarray, k: int, expr: str, ids: np.ndarray, scores: np.ndarray) -> None:
        """An approximate index may find fewer matches than a filter has: search those rows exactly when the
        filter matches few chunks."""
        found = (ids >= 0).sum(axis=1)
        short = np.flatnonzero(found < k)
        if not len(short):
            return
        matching = self._store.count(self._store.chunks, expr)
        short = short[found[short] < min(k, matching)]
        if len(short) and matching <= EXACT_FILTER_LIMIT:
            ids[short], scores[short] = self._exact(q[short], k, expr)

    def _exact(self, q: np.ndarray, k: int, expr: str) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over the chunks matching ``expr``, by brute force here."""
        ids = np.full((len(q), k), -1, np.int64)
        scores = np.full((len(q), k), -np.inf, np.float32)
        rows = self._store.query_all(self._store.chunks, expr, ["id", "vector"])
        if not rows:
            return ids, scores
        all_ids = np.asarray([int(r["id"]) for r in rows], dtype=np.int64)
        sims = q @ np.asarray([r["vector"] for r in rows], dtype=np.float32).T
        kk = min(k, len(all_ids))
        for row, row_sims in enumerate(sims):
            order = np.argsort(-row_sims, kind="stable")[:kk]
            ids[row, :kk], scores[row, :kk] = all_ids[order], row_sims[order]
        return ids, scores

    def keyword_search(self, queries: Sequence[str], k: int = 10,
                       filter: Filter | None = None) -> list[list[tuple[int, float]]]:
        check_k(k)
        out: list[list[tuple[int, float]]] = [[] for _ in queries]
        expr = self._expression(filter)
        texts = [self._terms(q) for q in queries]
        todo = [i for i, text in enumerate(texts) if text]
        if expr is None or not todo:
            return out
        self._ready_to_search()
        for i, hits in zip(todo, self._store.search([texts[i] for i in todo], k, expr, "sparse",
                                                    {"metric_type": "BM25"}), strict=True):
            out[i] = [(cid, abs(score)) for cid, score in hits if score]
        return out
