"""qwen3-rag: retrieval-augmented generation with Qwen3-Embedding and Qwen3-Reranker.

``import qwen3_rag`` loads nothing heavy: torch and transformers (``Embedder``, ``Reranker``), faiss (``Index``)
and the pipelines are imported on first access, and nothing optional (langchain, llama_index, vllm, fastapi,
pymilvus, ray) until it is used. A process that only opens an index and searches it with a remote embedder
never loads torch. The contracts between the layers are in
:mod:`qwen3_rag.protocols`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qwen3_rag._optional import lazy_attributes
from qwen3_rag.retrieval.prompts import (
    DEFAULT_EMBEDDING_MODEL,
    DEFAULT_INSTRUCTION,
    DEFAULT_RERANKER_MODEL,
    TASKS,
    format_query,
    format_reranker_input,
)
from qwen3_rag.types import Chunk, Document, Hit, IndexCounts, RerankResult, WriteStats

__version__ = "0.1.0"

# name -> module, imported on first access (they need faiss / bm25s)
_LAZY = {
    "Embedder": "qwen3_rag.retrieval.embedding",
    "Reranker": "qwen3_rag.retrieval.reranking",
    "Index": "qwen3_rag.indexers.index",
    "IndexMismatchError": "qwen3_rag.indexers.manifest",
    "IndexLockedError": "qwen3_rag.indexers.manifest",
    "IndexDamagedError": "qwen3_rag.indexers.manifest",
    "Chunker": "qwen3_rag.indexers.chunking",
    "FilterError": "qwen3_rag.indexers.filters",
    "ingest": "qwen3_rag.pipelines.ingest",
    "ingest_documents": "qwen3_rag.pipelines.writing",
    "DocumentWriter": "qwen3_rag.pipelines.writing",
    "IngestReport": "qwen3_rag.pipelines.writing",
    "Retriever": "qwen3_rag.pipelines.search",
    "load_embedder": "qwen3_rag.retrieval.models",
    "load_reranker": "qwen3_rag.retrieval.models",
    "build_context": "qwen3_rag.pipelines.rag",
    "answer": "qwen3_rag.pipelines.rag",
    "load_beir": "qwen3_rag.pipelines.evaluation",
    "evaluate_run": "qwen3_rag.pipelines.evaluation",
}

if TYPE_CHECKING:
    from qwen3_rag.indexers.chunking import Chunker
    from qwen3_rag.indexers.filters import FilterError
    from qwen3_rag.indexers.index import Index
    from qwen3_rag.indexers.manifest import IndexDamagedError, IndexLockedError, IndexMismatchError
    from qwen3_rag.pipelines.evaluation import evaluate_run, load_beir
    from qwen3_rag.pipelines.ingest import ingest
    from qwen3_rag.pipelines.rag import answer, build_context
    from qwen3_rag.pipelines.search import Retriever
    from qwen3_rag.pipelines.writing import DocumentWriter, IngestReport, ingest_documents
    from qwen3_rag.retrieval.embedding import Embedder
    from qwen3_rag.retrieval.models import load_embedder, load_reranker
    from qwen3_rag.retrieval.reranking import Reranker


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_INSTRUCTION",
    "DEFAULT_RERANKER_MODEL",
    "TASKS",
    "Chunk",
    "Chunker",
    "Document",
    "DocumentWriter",
    "Embedder",
    "FilterError",
    "Hit",
    "Index",
    "IndexCounts",
    "IndexDamagedError",
    "IndexLockedError",
    "IndexMismatchError",
    "IngestReport",
    "Reranker",
    "RerankResult",
    "Retriever",
    "WriteStats",
    "__version__",
    "answer",
    "build_context",
    "evaluate_run",
    "format_query",
    "format_reranker_input",
    "ingest",
    "ingest_documents",
    "load_beir",
    "load_embedder",
    "load_reranker",
]
