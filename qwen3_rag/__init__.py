"""qwen3-rag: retrieval-augmented generation with Qwen3-Embedding and Qwen3-Reranker.

Importing this package loads torch but nothing optional (no langchain, llama_index, vllm, fastapi).
"""

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

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_INSTRUCTION",
    "DEFAULT_RERANKER_MODEL",
    "TASKS",
    "Chunk",
    "Document",
    "Embedder",
    "Hit",
    "Reranker",
    "RerankResult",
    "__version__",
    "format_query",
    "format_reranker_input",
]
