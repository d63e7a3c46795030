"""Loaders, chunking, metadata filters and the index backends.

Public names: :class:`Index` (opened by location: a directory is the local FAISS + SQLite index, a URI another
backend), :class:`LocalIndex`, :class:`MilvusIndex` (``milvus://`` and ``milvus-lite://``), :class:`Chunker`,
:func:`iter_documents` / :func:`load_file` / :class:`RecordFields` (loading), :class:`FilterError` and
:func:`matches` (filters), :class:`VectorIndex` / :class:`IndexSpec` (FAISS).

They are imported on first access, so ``import qwen3_rag.indexers.filters`` (or ``chunking``) does not load faiss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qwen3_rag._optional import lazy_attributes

_MODULES = {
    "chunking": ("CHUNK_CONTEXTS", "DEFAULT_CHUNK_CONTEXT", "DEFAULT_CHUNK_OVERLAP", "DEFAULT_CHUNK_SIZE", "ChunkBatch",
                 "ChunkContext", "Chunker", "ChunkingConfig"),
    "headings": ("chunk_contexts", "document_title"),
    "filters": ("FilterError", "matches"),
    "index": ("Index", "backend_for"),
    "local": ("LocalIndex",),
    "milvus": ("MilvusIndex",),
    "manifest": ("DiskFullError", "IndexDamagedError", "IndexLockedError", "IndexMismatchError"),
    "loaders": ("LoadReport", "RecordFields", "iter_documents", "load_file"),
    "vector_index": ("IndexSpec", "VectorIndex"),
    "bm25": ("BM25Config", "BM25Index"),
}
_LAZY = {name: f"qwen3_rag.indexers.{module}" for module, names in _MODULES.items() for name in names}

if TYPE_CHECKING:
    from qwen3_rag.indexers.bm25 import BM25Config, BM25Index
    from qwen3_rag.indexers.chunking import (
        CHUNK_CONTEXTS,
        DEFAULT_CHUNK_CONTEXT,
        DEFAULT_CHUNK_OVERLAP,
        DEFAULT_CHUNK_SIZE,
        ChunkBatch,
        ChunkContext,
        Chunker,
        ChunkingConfig,
    )
    from qwen3_rag.indexers.filters import FilterError, matches
    from qwen3_rag.indexers.headings import chunk_contexts, document_title
    from qwen3_rag.indexers.index import Index, backend_for
    from qwen3_rag.indexers.loaders import LoadReport, RecordFields, iter_documents, load_file
    from qwen3_rag.indexers.local import LocalIndex
    from qwen3_rag.indexers.manifest import DiskFullError, IndexDamagedError, IndexLockedError, IndexMismatchError
    from qwen3_rag.indexers.milvus import MilvusIndex
    from qwen3_rag.indexers.vector_index import IndexSpec, VectorIndex


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())

__all__ = [
    "backend_for", "BM25Config", "BM25Index", "CHUNK_CONTEXTS", "chunk_contexts", "ChunkBatch", "ChunkContext",
    "Chunker", "ChunkingConfig", "DEFAULT_CHUNK_CONTEXT", "DEFAULT_CHUNK_OVERLAP", "DEFAULT_CHUNK_SIZE",
    "DiskFullError", "document_title", "FilterError", "Index", "IndexDamagedError", "IndexLockedError",
    "IndexMismatchError", "IndexSpec", "iter_documents", "load_file", "LoadReport", "LocalIndex", "matches",
    "MilvusIndex", "RecordFields", "VectorIndex",
]
