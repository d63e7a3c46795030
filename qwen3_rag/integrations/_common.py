"""Pieces the framework adapters share: a bridge from any framework embedding to the core embedder
interface, opening an index directory for an adapter, and reading stored vectors back.

Nothing here imports an optional framework; each adapter passes its framework's calls in as functions.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from qwen3_rag.indexers.chunking import regex_token_spans
from qwen3_rag.pipelines.writing import DocumentWriter
from qwen3_rag.protocols import Filter, StorageBackend, TextEmbedder
from qwen3_rag.types import Chunk

#: Attributes that name the model behind a framework embedding, read into the bridge's fingerprint.
_MODEL_ATTRS = ("model", "model_name", "model_id", "deployment", "size", "dimensions", "embed_dim")


class EmbeddingBridge:
    """The core embedder interface (``embed_documents`` / ``embed_queries`` -> float32 arrays, ``dim``,
    ``describe()``, ``count_tokens``) over a framework's embedding object.

    The core :class:`~qwen3_rag.indexers.index.Index` records ``describe()`` in its manifest and refuses to
    open with another model; the fingerprint here is made of the framework class and its model name, so an
    index built with one framework embedding opens again only with an equivalent one.

    Args:
        obj: The framework embedding (kept for its name in :meth:`describe`).
        embed_documents: ``list[str] -> list[list[float]]``.
        embed_query: ``str -> list[float]``.
        dim: The vector dimension; ``None`` embeds one probe text when it is first needed.
    """

    tokenizer: Any = None
    max_length: int | None = None

    def __init__(
        self,
        obj: Any,
        embed_documents: Callable[[list[str]], Sequence[Sequence[float]]],
        embed_query: Callable[[str], Sequence[float]],
        dim: int | None = None,
    ) -> None:
        self.obj = obj
        self._embed_documents = embed_documents
        self._embed_query = embed_query
        self._dim = dim
        cls = type(obj)
        self.model_id = f"{cls.__module__}.{cls.__qualname__}"

    @property
    def dim(self) -> int:
        """The vector dimension (one probe text is embedded the first time it is asked for)."""
        if self._dim is None:
            self._dim = len(self._embed_query("dimension probe"))
        return self._dim

    def describe(self) -> dict[str, Any]:
        """The manifest record: the framework class and model name, a fingerprint of both, and ``dim``."""
        parts = [self.model_id]
        for attr in _MODEL_ATTRS:
            value = getattr(self.obj, attr, None)
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                parts.append(f"{attr}={value}")
        fingerprint = hashlib.sha256("|".join(parts).encode()).hexdigest()
        return {
            "model": " ".join(parts),
            "model_type": "framework",
            "revision": None,
            "fingerprint": fingerprint,
            "pooling": None,
            "normalize": True,
            "dim": self.dim,
            "instruction": None,
        }

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return _as_matrix(self._embed_documents(texts), len(texts))

    def embed_queries(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        # a framework embedding owns its query formatting; ``instruction`` belongs to the Qwen3 embedder only
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return _as_matrix([self._embed_query(t) for t in texts], len(texts))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Words and punctuation marks (a framework embedding exposes no tokenizer)."""
        return [len(regex_token_spans(t)) for t in texts]


def _as_matrix(rows: Any, n: int) -> np.ndarray:
    out = np.asarray(rows, dtype=np.float32)
    if out.ndim != 2 or out.shape[0] != n:
        raise ValueError(f"the embedding model returned an array of shape {out.shape} for {n} texts")
    return out


def unit_rows(vectors: Any) -> np.ndarray:
    """``vectors`` as a 2-d float32 array with L2-normalised rows (the index stores unit vectors)."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim == 1:
        v = v[None, :]
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.ascontiguousarray(v / np.maximum(norms, 1e-12), dtype=np.float32)


def open_store(location: str | os.PathLike[str] | None, embedder: TextEmbedder | None, index_type: str = "Flat",
               dim: int | None = None) -> tuple[StorageBackend, Any]:
    """Open the index at ``location`` with ``embedder``, or create it without chunking (the host framework splits
    texts itself) and without a BM25 index kept up to date (a framework store searches by vector; hybrid search
    builds BM25 when first asked). ``location=None`` creates one in a temporary directory that lives as long as the
    returned handle.

    Returns:
        ``(index, tempdir)``; ``tempdir`` is a :class:`tempfile.TemporaryDirectory` or None.

    Raises:
        IndexMismatchError: if the index was built with another embedding model.
    """
    import tempfile

    from qwen3_rag.indexers.index import Index

    tmp = None
    if location is None:
        tmp = tempfile.TemporaryDirectory(prefix="qwen3-rag-")
        location = Path(tmp.name) / "index"
    if Index.exists(location):
        return Index.open(location, embedder), tmp
    return Index.create(location, embedder, chunk_size=0, chunk_overlap=0, index_type=index_type, dim=dim,
                        bm25=False), tmp


def writer(index: StorageBackend, embedder: TextEmbedder | None, batch_size: int) -> DocumentWriter:
    """The write loop for a framework store: each text is one chunk as it is, embedded ``batch_size`` at a time,
    committed once by the caller's transaction (search files are written when the store is saved or closed)."""
    return DocumentWriter(index, embedder, chunker="whole", commit_every=batch_size)


T = TypeVar("T")


def built_once(owner: Any, attribute: str, build: Callable[[], T]) -> T:
    """``owner.<attribute>``, built by ``build()`` under ``owner._lock`` on first use: an adapter's core model is
    loaded when it is first needed, once, even with several threads."""
    value = getattr(owner, attribute)
    if value is None:
        with owner._lock:
            value = getattr(owner, attribute)
            if value is None:
                value = build()
                setattr(owner, attribute, value)
    return cast(T, value)


def embed_texts(core: TextEmbedder, texts: list[str], query: bool, instruction: str | None) -> list[list[float]]:
    """Vectors of ``texts`` from a core embedder as lists of floats (queries with ``instruction`` when set); no
    texts, no model loaded."""
    if not texts:
        return []
    if not query:
        vectors = core.embed_documents(texts)
    elif instruction is not None:
        vectors = core.embed_queries(texts, instruction=instruction)
    else:
        vectors = core.embed_queries(texts)
    return np.asarray(vectors, dtype=np.float32).tolist()


def nearest_chunks(index: StorageBackend, vector: Sequence[float] | np.ndarray, k: int,
                   flt: Filter | None) -> list[tuple[Chunk, float]]:
    """``(chunk, cosine)`` of the ``k`` chunks nearest to one vector, best first, filter applied."""
    with index.reading():
        ids, scores = index.search_vectors(unit_rows(vector), k, flt)
        pairs = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if int(i) >= 0]
        chunks = {c.chunk_id: c for c in index.get_chunks([i for i, _ in pairs])}
    return [(chunks[i], s) for i, s in pairs if i in chunks]


def copy_index(index: StorageBackend, target: str | os.PathLike[str]) -> Path:
    """Copy a local index directory, as of its last commit, to ``target`` (which must not hold an index yet).

    Raises:
        FileExistsError: if ``target`` holds an index.
        ValueError: for an index that is not a local directory.
    """
    import shutil
    import sqlite3

    from qwen3_rag.indexers.index import Index
    from qwen3_rag.indexers.local import LocalIndex
    from qwen3_rag.indexers.manifest import LOCK_FILE
    from qwen3_rag.indexers.store import STORE_FILE

    if not isinstance(index, LocalIndex):
        raise ValueError(f"only a local index directory can be copied to a path; {index.location!r} is not one")
    target = Path(target)
    if Index.exists(target):
        raise FileExistsError(f"{str(target)!r} already holds an index; choose another directory")
    index.commit()
    target.mkdir(parents=True, exist_ok=True)
    # sqlite's online backup gives a consistent copy of the store, whatever sits in its write-ahead log
    src = sqlite3.connect(str(index.path / STORE_FILE))
    dst = sqlite3.connect(str(target / STORE_FILE))
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    for item in index.path.iterdir():
        if item.name.startswith(STORE_FILE) or item.name == LOCK_FILE or item.name.startswith("."):
            continue
        if item.is_dir():
            shutil.copytree(item, target / item.name, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target / item.name)
    return target
