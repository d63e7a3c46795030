"""The exact Qwen3-Embedding and Qwen3-Reranker input formats.

Everything here is a constant or a pure string function, so the golden strings can be tested without a model.
The spelling mistakes in some task instructions ("retrieval code", "Retrieval the relevant passage") are in the
official evaluation code and are what the models saw in training: keep them.
"""

from __future__ import annotations

#: The models used when none is named (model ids on the Hugging Face hub).
DEFAULT_EMBEDDING_MODEL = "Qwen/Qwen3-Embedding-0.6B"
DEFAULT_RERANKER_MODEL = "Qwen/Qwen3-Reranker-0.6B"

DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"

#: Named task instructions, as used by the official Qwen3-Embedding evaluation.
TASKS: dict[str, str] = {
    "web_search": DEFAULT_INSTRUCTION,
    "scifact": "Given a scientific claim, retrieve documents that support or refute the claim",
    "question_answering": "Given a question, retrieve relevant documents that best answer the question",
    "code_search": "Given a question about coding, retrieval code or passage that can solve user's question",
    "multilingual_qa": "Retrieval the relevant passage for the given query",
    "similarity": "Retrieve semantically similar text",
}

#: The sentence-transformers style prompt that precedes a query (the query follows with no space).
QUERY_TEMPLATE = "Instruct: {instruction}\nQuery:{query}"

ENDOFTEXT = "<|endoftext|>"

RERANKER_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
RERANKER_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
RERANKER_BODY_TEMPLATE = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"
RERANKER_YES = "yes"
RERANKER_NO = "no"


def resolve_instruction(instruction: str | None, default: str = DEFAULT_INSTRUCTION) -> str:
    """Return the instruction text for ``instruction``, which may be a task name from :data:`TASKS`.

    ``None`` gives ``default``. Any other string is used verbatim.
    """
    if instruction is None:
        return default
    if not isinstance(instruction, str):
        raise TypeError(f"instruction must be a str or None, got {type(instruction).__name__}")
    return TASKS.get(instruction, instruction)


def format_query(query: str, instruction: str = DEFAULT_INSTRUCTION) -> str:
    """Format an embedding query: ``Instruct: {instruction}\\nQuery:{query}`` (no space after ``Query:``)."""
    return QUERY_TEMPLATE.format(instruction=instruction, query=query)


def format_reranker_body(query: str, document: str, instruction: str = DEFAULT_INSTRUCTION) -> str:
    """Format the part of a reranker input between the fixed prefix and suffix."""
    return RERANKER_BODY_TEMPLATE.format(instruction=instruction, query=query, document=document)


def format_reranker_input(query: str, document: str, instruction: str = DEFAULT_INSTRUCTION) -> str:
    """The whole reranker input as one string (prefix + body + suffix), for display and golden tests."""
    return RERANKER_PREFIX + format_reranker_body(query, document, instruction) + RERANKER_SUFFIX
