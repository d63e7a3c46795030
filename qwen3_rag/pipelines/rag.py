"""Retrieval-augmented generation: hits -> a cited prompt context within a token budget -> an answer.

Example:
    >>> from qwen3_rag.pipelines.rag import answer, build_context
    >>> context = build_context(hits, max_tokens=1500)       # doctest: +SKIP
    >>> print(context.text)                                  # doctest: +SKIP
    [1] docs/ops.md, lines 10-24
    Logs are rotated nightly by ...
    >>> result = answer("How are logs rotated?", retriever, llm=ChatOpenAI())  # doctest: +SKIP
    >>> result.text, [h.source for h in result.context.hits]                    # doctest: +SKIP

Nothing from LangChain is imported here: any object with ``.invoke(prompt)`` (a LangChain chat model or
runnable) or a plain ``callable(prompt) -> str`` works as the language model.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qwen3_rag.protocols import ChatModel, TokenCounter
from qwen3_rag.types import Hit

if TYPE_CHECKING:
    from qwen3_rag.pipelines.search import Retriever

logger = logging.getLogger(__name__)

__all__ = ["Answer", "Context", "DEFAULT_PROMPT", "answer", "approx_token_count", "build_context", "cite"]

DEFAULT_PROMPT = (
    "Answer the question using only the numbered passages below. Cite the passages you use as [1], [2], ... "
    "If the passages do not contain the answer, say that you do not know.\n\n"
    "Passages:\n{context}\n\nQuestion: {question}\nAnswer:"
)

_APPROX_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|\w{1,4}|[^\w\s]")


def approx_token_count(text: str) -> int:
    """A tokenizer-free estimate of a text's token count (a CJK character, up to 4 word characters or a symbol
    each); close to, and usually above, BPE counts for English and Chinese. Pass a real counter
    for exact budgets.
    """
    return sum(1 for _ in _APPROX_TOKEN.finditer(text))


def _counter(tokens: TokenCounter | Callable[[str], int] | None) -> Callable[[str], int]:
    if tokens is None:
        return approx_token_count
    if isinstance(tokens, TokenCounter):  # an Embedder / Reranker: count_tokens(list) -> list
        counter = tokens
        return lambda text: int(counter.count_tokens([text])[0])
    if callable(tokens):
        function = tokens
        return lambda text: int(function(text))
    raise TypeError(f"tokens must be None, a callable str -> int or an object with count_tokens (an Embedder), got "
                    f"{type(tokens).__name__}")


def cite(hit: Hit) -> str:
    """A short human-readable citation: ``source, page 3``, ``source, lines 10-24`` (or the document id)."""
    where = hit.source or hit.doc_id
    if hit.page is not None:
        return f"{where}, page {hit.page}"
    first, last = hit.start_line, hit.end_line
    if first <= 0:
        return where
    return f"{where}, line {first}" if first == last else f"{where}, lines {first}-{last}"


@dataclass(frozen=True)
class Context:
    """A prompt context: numbered passages with their sources.

    Attributes:
        text: The passages, ``[n] citation`` on one line and the passage text below, blank-line separated.
        hits: The hits that made it in; passage ``[n]`` is ``hits[n - 1]`` (a truncated passage keeps
            its hit).
        tokens: The context's token count (by the counter used).
        truncated: True when a passage was cut or hits were left out to fit the budget.
    """

    text: str
    hits: list[Hit] = field(default_factory=list)
    tokens: int = 0
    truncated: bool = False

    @property
    def sources(self) -> list[str]:
        """``"[n] citation"`` for each passage, for printing under an answer."""
        return [f"[{n}] {cite(h)}" for n, h in enumerate(self.hits, 1)]


def build_context(hits: Sequence[Hit], max_tokens: int = 3000,
                  tokens: TokenCounter | Callable[[str], int] | None = None, *,
                  min_passage_tokens: int = 32) -> Context:
    """Pack hits, best first, into a numbered, cited context of at most ``max_tokens`` tokens.

    Passages are added in rank order until the budget is spent. The passage that does not fit is cut at a word
    boundary when at least ``min_passage_tokens`` remain (its text then ends in `` ...``), and packing stops.

    Args:
        hits: Search results, best first.
        max_tokens: Token budget of the whole context (headers included).
        tokens: How to count tokens: None for :func:`approx_token_count`, a callable ``str -> int``, or an
            object with ``count_tokens`` such as an :class:`~qwen3_rag.Embedder`.
        min_passage_tokens: Smallest budget worth a truncated passage.

    Returns:
        The :class:`Context`.

    Raises:
        ValueError: ``max_tokens`` is not positive.
    """
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    count = _counter(tokens)
    parts: list[str] = []
    used_hits: list[Hit] = []
    used = 0
    truncated = False
    separator = count("\n\n")
    for hit in hits:
        n = len(used_hits) + 1
        header = f"[{n}] {cite(hit)}\n"
        body = hit.text.strip()
        sep = separator if parts else 0
        cost = sep + count(header) + count(body)
        if used + cost <= max_tokens:
            parts.append(header + body)
            used_hits.append(hit)
            used += cost
            continue
        truncated = True
        room = max_tokens - used - sep - count(header)
        if room >= min_passage_tokens:
            cut = _truncate(body, room - count(" ..."), count)
            if cut:
                text = header + cut + " ..."
                parts.append(text)
                used_hits.append(hit)
                used += sep + count(header) + count(cut + " ...")
        break
    return Context(text="\n\n".join(parts), hits=used_hits, tokens=used, truncated=truncated)


def _truncate(text: str, budget: int, count: Callable[[str], int]) -> str:
    """The longest prefix of ``text`` that ends at a word boundary and fits ``budget`` tokens."""
    if budget <= 0:
        return ""
    lo, hi = 0, len(text)
    while lo < hi:  # binary search on characters: counts are monotone in the prefix length (near enough)
        mid = (lo + hi + 1) // 2
        if count(text[:mid]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    prefix = text[:lo]
    space = prefix.rfind(" ")
    if 0 < space and lo < len(text) and len(prefix) - space < 40:
        prefix = prefix[:space]
    return prefix.rstrip()


@dataclass(frozen=True)
class Answer:
    """A generated answer with the context it was grounded on (``context.sources`` lists the citations)."""

    text: str
    context: Context
    prompt: str


def _call_llm(llm: ChatModel | Callable[[str], Any], prompt: str) -> str:
    if isinstance(llm, ChatModel):
        result = llm.invoke(prompt)
    elif callable(llm):
        result = llm(prompt)
    else:
        raise TypeError(f"llm must be a chat model (anything with .invoke, e.g. LangChain's) or a callable str -> str, "
                        f"got {type(llm).__name__}")
    content = getattr(result, "content", result)
    if isinstance(content, list):  # LangChain content blocks
        content = "".join(b if isinstance(b, str) else str(b.get("text", "")) for b in content)
    if not isinstance(content, str):
        raise TypeError(f"the llm returned {type(result).__name__}, expected a str or a message with .content")
    return content


def answer(
    question: str,
    retriever: Retriever | Sequence[Hit],
    llm: ChatModel | Callable[[str], Any],
    *,
    k: int = 5,
    max_tokens: int = 3000,
    tokens: TokenCounter | Callable[[str], int] | None = None,
    prompt: str = DEFAULT_PROMPT,
    **search_kwargs: Any,
) -> Answer:
    """Retrieve passages for ``question``, build a cited context and ask ``llm``.

    Args:
        question: The user's question.
        retriever: A :class:`~qwen3_rag.pipelines.search.Retriever`, or the hits already retrieved.
        llm: A LangChain chat model / runnable (``.invoke(prompt)``) or a callable ``prompt -> str``.
        k: Passages to retrieve.
        max_tokens: Budget of the context.
        tokens: Token counter for the budget (see :func:`build_context`).
        prompt: A template with ``{context}`` and ``{question}``.
        **search_kwargs: Passed to ``retriever.search`` (``mode="hybrid"``, ``rerank=...``, ``filter=...``).

    Returns:
        The :class:`Answer`.
    """
    if "{context}" not in prompt or "{question}" not in prompt:
        raise ValueError("prompt must contain the placeholders {context} and {question}")
    if isinstance(retriever, Sequence):
        hits = list(retriever)
    else:
        hits = retriever.search(question, k=k, **search_kwargs)
    context = build_context(hits, max_tokens=max_tokens, tokens=tokens)
    text = prompt.replace("{context}", context.text).replace("{question}", question)
    logger.debug("asking the llm with %d passages (%d tokens)", len(context.hits), context.tokens)
    return Answer(text=_call_llm(llm, text).strip(), context=context, prompt=text)
