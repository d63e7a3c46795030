"""Models: Qwen3 embedding and reranking, with their exact prompt formats.

``Embedder`` and ``Reranker`` (and so torch and transformers) are imported on first access: a process that only
opens an index, searches with a remote embedder or parses the command line does not load them.
"""

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

if TYPE_CHECKING:
    from qwen3_rag.retrieval.embedding import Embedder
    from qwen3_rag.retrieval.reranking import Reranker

_LAZY = {"Embedder": "qwen3_rag.retrieval.embedding", "Reranker": "qwen3_rag.retrieval.reranking"}
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())

__all__ = ["DEFAULT_EMBEDDING_MODEL", "DEFAULT_INSTRUCTION", "DEFAULT_RERANKER_MODEL", "TASKS", "Embedder", "Reranker",
           "format_query", "format_reranker_input"]
