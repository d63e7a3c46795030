"""qwen3-rag: retrieval-augmented generation with Qwen3-Embedding and Qwen3-Reranker.

``import qwen3_rag`` loads torch and transformers but nothing optional (no langchain, llama_index, vllm,
fastapi) and not faiss: the index and pipeline names below are imported on first access, so the model classes
also work where faiss is not installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qwen3_rag._optional import lazy_attributes
from qwen3_rag.retrieval import (
    DEFAULT_EMBEDDING_MODEL,
    DEFAULT_INSTRUCTION,
    DEFAULT_RERANKER_MODEL,
    TASKS,
    Embedder,
    Reranker,
    format_query,
    format_reranker_input,
)
from qwen3_rag.types import Chunk, Document, Hit, RerankResult

__version__ = "0.1.0"

# name -> module, imported on first access (they need faiss / bm25s)
_LAZY = {
    "Index": "qwen3_rag.indexers.index",
    "IndexMismatchError": "qwen3_rag.indexers.index",
    "Chunker": "qwen3_rag.indexers.chunking",
    "FilterError": "qwen3_rag.indexers.filters",
    "ingest": "qwen3_rag.pipelines.ingest",
    "IngestReport": "qwen3_rag.pipelines.ingest",
    "Retriever": "qwen3_rag.pipelines.search",
    "build_context": "qwen3_rag.pipelines.rag",
    "answer": "qwen3_rag.pipelines.rag",
    "load_beir": "qwen3_rag.pipelines.evaluation",
    "evaluate_run": "qwen3_rag.pipelines.evaluation",
}

if TYPE_CHECKING:
    from qwen3_rag.indexers.chunking import Chunker
    from qwen3_rag.indexers.filters import FilterError
    from qwen3_rag.indexers.index import Index, IndexMismatchError
    from qwen3_rag.pipelines.evaluation import evaluate_run, load_beir
    from qwen3_rag.pipelines.ingest import IngestReport, ingest
    from qwen3_rag.pipelines.rag import answer, build_context
    from qwen3_rag.pipelines.search import Retriever


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_INSTRUCTION",
    "DEFAULT_RERANKER_MODEL",
    "TASKS",
    "Chunk",
    "Chunker",
    "Document",
    "Embedder",
    "FilterError",
    "Hit",
    "Index",
    "IndexMismatchError",
    "IngestReport",
    "Reranker",
    "RerankResult",
    "Retriever",
    "__version__",
    "answer",
    "build_context",
    "evaluate_run",
    "format_query",
    "format_reranker_input",
    "ingest",
    "load_beir",
]
