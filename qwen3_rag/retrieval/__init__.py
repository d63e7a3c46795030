"""Models: Qwen3 embedding and reranking, with their exact prompt formats."""

from qwen3_rag.retrieval.embedding import DEFAULT_EMBEDDING_MODEL, Embedder
from qwen3_rag.retrieval.prompts import DEFAULT_INSTRUCTION, TASKS, format_query, format_reranker_input
from qwen3_rag.retrieval.reranking import DEFAULT_RERANKER_MODEL, Reranker

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_INSTRUCTION",
    "DEFAULT_RERANKER_MODEL",
    "TASKS",
    "Embedder",
    "Reranker",
    "format_query",
    "format_reranker_input",
]
