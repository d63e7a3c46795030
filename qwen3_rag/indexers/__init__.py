"""Loaders, chunking, metadata filters and the on-disk index (SQLite store + FAISS).

Public names: :class:`Index` (the index directory), :class:`Chunker`, :func:`iter_documents` /
:func:`load_file` / :class:`RecordFields` (loading), :class:`FilterError` and :func:`matches` (filters),
:class:`VectorIndex` / :class:`IndexSpec` (the FAISS part), :class:`StoredChunk`.

They are imported on first access, so ``import qwen3_rag.indexers.filters`` (or ``chunking``) does not load
faiss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qwen3_rag._optional import lazy_attributes

_MODULES = {
    "chunking": ("DEFAULT_CHUNK_OVERLAP", "DEFAULT_CHUNK_SIZE", "ChunkBatch", "Chunker", "ChunkingConfig"),
    "filters": ("Filter", "FilterError", "matches"),
    "index": ("Index", "IndexCounts", "IndexLockedError", "IndexMismatchError", "Sidecar", "WriteStats"),
    "loaders": ("LoadReport", "RecordFields", "iter_documents", "load_file"),
    "store": ("StoredChunk",),
    "vector_index": ("IndexSpec", "VectorIndex"),
}
_LAZY = {name: f"qwen3_rag.indexers.{module}" for module, names in _MODULES.items() for name in names}

if TYPE_CHECKING:
    from qwen3_rag.indexers.chunking import (
        DEFAULT_CHUNK_OVERLAP,
        DEFAULT_CHUNK_SIZE,
        ChunkBatch,
        Chunker,
        ChunkingConfig,
    )
    from qwen3_rag.indexers.filters import Filter, FilterError, matches
    from qwen3_rag.indexers.index import (
        Index,
        IndexCounts,
        IndexLockedError,
        IndexMismatchError,
        Sidecar,
        WriteStats,
    )
    from qwen3_rag.indexers.loaders import LoadReport, RecordFields, iter_documents, load_file
    from qwen3_rag.indexers.store import StoredChunk
    from qwen3_rag.indexers.vector_index import IndexSpec, VectorIndex


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())

__all__ = [
    "DEFAULT_CHUNK_OVERLAP",
    "DEFAULT_CHUNK_SIZE",
    "ChunkBatch",
    "Chunker",
    "ChunkingConfig",
    "Filter",
    "FilterError",
    "Index",
    "IndexCounts",
    "IndexLockedError",
    "IndexMismatchError",
    "IndexSpec",
    "LoadReport",
    "RecordFields",
    "Sidecar",
    "StoredChunk",
    "VectorIndex",
    "WriteStats",
    "iter_documents",
    "load_file",
    "matches",
]
