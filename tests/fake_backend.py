"""A second storage backend for the conformance suite: everything in memory, the committed state saved as one JSON
file (``jsonfake://PATH``), searches by brute force. It shares no code with the local index beyond the contract,
so a test that passes on both tests the contract, not one implementation."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from qwen3_rag.indexers.bm25 import BM25Index
from qwen3_rag.indexers.chunking import ChunkingConfig
from qwen3_rag.indexers.filters import matches
from qwen3_rag.indexers.index import BACKENDS, Index
from qwen3_rag.indexers.manifest import check_embedder, describe_embedder, new_manifest
from qwen3_rag.protocols import PARTIAL, Filter, TextEmbedder
from qwen3_rag.types import Chunk, Document, IndexCounts

SCHEME = "jsonfake"


def register() -> None:
    BACKENDS[SCHEME] = "fake_backend:JsonIndex"


def _path(location: str | os.PathLike[str]) -> Path:
    return Path(os.fspath(location)[len(SCHEME) + 3:])


class JsonIndex(Index):
    def __init__(self, path: Path, state: dict[str, Any], embedder: TextEmbedder | None, read_only: bool) -> None:
        self._path = path
        self._committed = state
        self._state = copy.deepcopy(state)
        self._embedder = embedder
        self._read_only = read_only
        self._depth = 0

    # -- opening
    @classmethod
    def _create(cls, location: Any, embedder: TextEmbedder | None, *, chunking: ChunkingConfig,
                index_type: str, dim: int | None, bm25: bool, **options: Any) -> JsonIndex:
        path = _path(location)
        if path.exists():
            raise FileExistsError(f"{path} already holds an index")
        model = describe_embedder(embedder) if embedder is not None else {"model": None, "dim": int(dim or 0)}
        manifest = new_manifest(model, chunking.to_manifest(), {"spec": index_type})
        state = {"manifest": manifest, "next_id": 0, "documents": {}, "chunks": {}}
        index = cls(path, state, embedder, False)
        index._save()
        return index

    @classmethod
    def _open(cls, location: Any, embedder: TextEmbedder | None, *, read_only: bool, **options: Any) -> JsonIndex:
        path = _path(location)
        if not path.exists():
            raise FileNotFoundError(f"no index at {path}")
        state = json.loads(path.read_text())
        if embedder is not None:
            check_embedder(state["manifest"]["model"], embedder, str(path))
        return cls(path, state, embedder, read_only)

    @classmethod
    def _exists(cls, location: Any) -> bool:
        return _path(location).exists()

    @classmethod
    def _read_manifest(cls, location: Any) -> dict[str, Any]:
        return dict(json.loads(_path(location).read_text())["manifest"])

    def _save(self) -> None:
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state))
        os.replace(tmp, self._path)
        self._committed = copy.deepcopy(self._state)

    # -- properties
    location = property(lambda self: f"{SCHEME}://{self._path}")
    read_only = property(lambda self: self._read_only)
    dim = property(lambda self: int(self._state["manifest"]["dim"]))
    model_info = property(lambda self: dict(self._state["manifest"]["model"]))
    embedder = property(lambda self: self._embedder)

    @property
    def manifest(self) -> dict[str, Any]:
        counts = self.count()
        return {**self._state["manifest"], "counts": vars(counts)}

    @property
    def chunking(self) -> ChunkingConfig:
        return ChunkingConfig.from_manifest(self._state["manifest"]["chunking"])

    keyword_config = property(lambda self: BM25Index().config)  # keyword_search builds a default BM25Index

    @property
    def hybrid_settings(self) -> dict[str, Any] | None:
        return copy.deepcopy(self._committed["manifest"].get("hybrid"))

    def set_hybrid_settings(self, settings: dict[str, Any] | None) -> None:
        self._writable()
        with self.transaction():
            self._state["manifest"].pop("hybrid", None)
            if settings is not None:
                self._state["manifest"]["hybrid"] = json.loads(json.dumps(settings))

    # -- writing
    def _writable(self) -> None:
        if self._read_only:
            raise PermissionError("read-only")

    def write(self, items: Sequence[tuple[Document, Sequence[Chunk]]], vectors: np.ndarray, *,
              append: bool = False, complete: bool = True) -> list[list[int]]:
        self._writable()
        vectors = np.asarray(vectors, dtype=np.float64)
        n = sum(len(c) for _, c in items)
        if vectors.shape != (n, self.dim) if n else False:
            raise ValueError(f"expected ({n}, {self.dim}) vectors, got {vectors.shape}")
        if len({d.id for d, _ in items}) != len(items):
            raise ValueError("a document id appears twice in one write")
        if append and any(d.id not in self._state["documents"] for d, _ in items):
            raise ValueError("append=True for a document that is not stored")
        with self.transaction():
            if not append:
                self.delete([d.id for d, _ in items])
            out, row = [], 0
            for doc, chunks in items:
                ids = []
                for c in chunks:
                    cid = self._state["next_id"]
                    self._state["next_id"] += 1
                    v = vectors[row] / np.linalg.norm(vectors[row])
                    row += 1
                    self._state["chunks"][str(cid)] = {
                        "doc_id": doc.id, "index": c.index, "start": c.start, "end": c.end, "page": c.page,
                        "headings": list(c.headings), "start_line": c.start_line, "end_line": c.end_line,
                        "vector": v.tolist()}
                    ids.append(cid)
                before = self._state["documents"][doc.id]["chunks"] if append else []
                self._state["documents"][doc.id] = {"text": doc.text, "source": doc.source,
                                                     "metadata": dict(doc.metadata),
                                                     "hash": doc.content_hash if complete else PARTIAL,
                                                     "chunks": before + ids}
                out.append(ids)
        return out

    def delete(self, doc_ids: Iterable[str]) -> int:
        self._writable()
        n = 0
        with self.transaction():
            for doc_id in ([doc_ids] if isinstance(doc_ids, str) else list(doc_ids)):
                doc = self._state["documents"].pop(doc_id, None)
                if doc is not None:
                    n += 1
                    for cid in doc["chunks"]:
                        del self._state["chunks"][str(cid)]
        return n

    @contextmanager
    def transaction(self, *, publish: bool = True) -> Iterator[JsonIndex]:
        self._writable()
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
            self.commit()

    def commit(self, *, publish: bool = True) -> None:
        if not self._read_only and self._state != self._committed:
            self._save()

    def rollback(self) -> None:
        self._state = copy.deepcopy(self._committed)

    def close(self) -> None:
        self.commit()

    # -- reading
    def document_states(self, doc_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        docs = self._state["documents"]
        return {i: (docs[i]["hash"], len(docs[i]["chunks"])) for i in doc_ids if i in docs}

    def count(self) -> IndexCounts:
        n = len(self._state["chunks"])
        return IndexCounts(len(self._state["documents"]), n, n)

    def iter_documents(self) -> Iterator[tuple[str, str, str]]:
        for doc_id in sorted(self._state["documents"]):
            doc = self._state["documents"][doc_id]
            yield doc_id, doc["source"], doc["hash"]

    def get_documents(self, doc_ids: Iterable[str]) -> list[Document]:
        docs = self._state["documents"]
        return [Document(i, docs[i]["text"], docs[i]["source"], docs[i]["metadata"]) for i in doc_ids if i in docs]

    def _chunk(self, cid: int) -> Chunk:
        c = self._state["chunks"][str(cid)]
        doc = self._state["documents"][c["doc_id"]]
        return Chunk(doc_id=c["doc_id"], index=c["index"], text=doc["text"][c["start"]:c["end"]], start=c["start"],
                     end=c["end"], page=c["page"], headings=tuple(c["headings"]), metadata=doc["metadata"],
                     start_line=c["start_line"], end_line=c["end_line"], chunk_id=cid, source=doc["source"])

    def get_chunks(self, chunk_ids: Iterable[int]) -> list[Chunk]:
        return [self._chunk(int(i)) for i in chunk_ids if str(int(i)) in self._state["chunks"]]

    def chunks_of(self, doc_id: str) -> list[Chunk]:
        doc = self._state["documents"].get(doc_id)
        return [self._chunk(i) for i in doc["chunks"]] if doc else []

    def get_vectors(self, chunk_ids: Iterable[int]) -> np.ndarray:
        rows = []
        for i in chunk_ids:
            if str(int(i)) not in self._state["chunks"]:
                raise KeyError(f"no chunk {i}")
            rows.append(self._state["chunks"][str(int(i))]["vector"])
        return np.asarray(rows, dtype=np.float32).reshape(-1, self.dim)

    def _fields(self, doc_id: str) -> dict[str, Any]:
        doc = self._state["documents"][doc_id]
        return {"doc_id": doc_id, "source": doc["source"], **doc["metadata"]}

    def find_documents(self, filter: Filter) -> list[str]:
        return sorted(d for d in self._state["documents"]
                      if (filter(self._fields(d)) if callable(filter) else matches(filter, self._fields(d))))

    def _allowed(self, filter: Filter | None) -> list[int]:
        docs = self.find_documents(filter) if filter is not None else sorted(self._state["documents"])
        return [cid for d in docs for cid in self._state["documents"][d]["chunks"]]

    # -- searching
    def search_vectors(self, queries: np.ndarray, k: int = 10,
                       filter: Filter | None = None) -> tuple[np.ndarray, np.ndarray]:
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        ids = np.asarray(self._allowed(filter), dtype=np.int64)
        out_ids = np.full((len(q), k), -1, np.int64)
        out_scores = np.full((len(q), k), -np.inf, np.float32)
        if len(ids):
            sims = q @ self.get_vectors(ids).T
            for row in range(len(q)):
                order = sorted(range(len(ids)), key=lambda j: (-sims[row, j], ids[j]))[:k]
                out_ids[row, :len(order)] = ids[order]
                out_scores[row, :len(order)] = sims[row, order]
        return out_ids, out_scores

    def keyword_search(self, queries: Sequence[str], k: int = 10,
                       filter: Filter | None = None) -> list[list[tuple[int, float]]]:
        bm25 = BM25Index()
        every = self._allowed(None)
        bm25.add(every, [self._chunk(i).text for i in every])
        return bm25.search_batch(list(queries), k, None if filter is None else self._allowed(filter))
