"""Loaders, chunking, metadata filters and the on-disk index (SQLite store + FAISS).

Public names: :class:`Index` (the index directory), :class:`Chunker`, :func:`iter_documents` /
:func:`load_file` / :class:`RecordFields` (loading), :class:`FilterError` and :func:`matches` (filters),
:class:`VectorIndex` / :class:`IndexSpec` (the FAISS part), :class:`StoredChunk`.
"""

from qwen3_rag.indexers.chunking import DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE, Chunker, ChunkingConfig
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

__all__ = [
    "DEFAULT_CHUNK_OVERLAP",
    "DEFAULT_CHUNK_SIZE",
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
