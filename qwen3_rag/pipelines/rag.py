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

import bisect
import dataclasses
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from qwen3_rag.protocols import ChatModel, StorageBackend, TokenCounter
from qwen3_rag.types import Chunk, Hit, line_spans

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
                  min_passage_tokens: int = 32, index: StorageBackend | None = None, neighbours: int = 0) -> Context:
    """Pack hits, best first, into a numbered, cited context of at most ``max_tokens`` tokens.

    Passages are added in rank order until the budget is spent. The passage that does not fit is cut at a word
    boundary when at least ``min_passage_tokens`` remain (its text then ends in `` ...``), and packing stops.

    With ``neighbours`` ("small-to-big"), every hit has its passage first; then, best hit first and while the budget
    lasts, each passage grows by the adjacent chunks of its document, up to ``neighbours`` on each side, one chunk
    at a time (the next one, then the previous one). A passage is always one exact slice of its document, its
    citation gives the lines of that slice, and it stops where another passage of the same document begins, so no
    text appears twice (hits that overlap become one passage, numbered by the better one).

    Args:
        hits: Search results, best first.
        max_tokens: Token budget of the whole context (headers included).
        tokens: How to count tokens: None for :func:`approx_token_count`, a callable ``str -> int``, or an
            object with ``count_tokens`` such as an :class:`~qwen3_rag.Embedder`.
        min_passage_tokens: Smallest budget worth a truncated passage.
        index: The index the hits came from (``retriever.index``); needed for ``neighbours``.
        neighbours: Adjacent chunks a passage may grow by on each side (0: each hit's own text).

    Returns:
        The :class:`Context`.

    Raises:
        ValueError: ``max_tokens`` is not positive, ``neighbours`` is negative, or ``neighbours`` without ``index``.

    Example:
        >>> context = build_context(hits, max_tokens=1500, index=retriever.index, neighbours=1)  # doctest: +SKIP
    """
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    if not isinstance(neighbours, int) or neighbours < 0:
        raise ValueError(f"neighbours must be an int >= 0, got {neighbours!r}")
    if neighbours and index is None:
        raise ValueError("neighbours needs the index the hits came from: build_context(hits, index=retriever.index, "
                         f"neighbours={neighbours})")
    count = _counter(tokens)
    if neighbours:
        from qwen3_rag.pipelines.fusion import merge_overlapping

        hits = merge_overlapping(hits, "merge")
    passages, truncated = _pack(hits, max_tokens, count, min_passage_tokens)
    separators = count("\n\n") * max(0, len(passages) - 1)
    used = separators + sum(p.cost for p in passages)
    if neighbours and not truncated:
        used += _Neighbours(cast(StorageBackend, index), count).widen(passages, max_tokens - used, neighbours)
    return Context(text="\n\n".join(p.text for p in passages), hits=[p.hit for p in passages], tokens=used,
                   truncated=truncated)


@dataclass
class _Passage:
    """One numbered passage: its hit (whose span and lines it cites), its text and its tokens (header included)."""

    number: int
    hit: Hit
    body: str
    cost: int

    @property
    def header(self) -> str:
        return f"[{self.number}] {cite(self.hit)}\n"

    @property
    def text(self) -> str:
        return self.header + self.body

    @classmethod
    def of(cls, number: int, hit: Hit, body: str, count: Callable[[str], int]) -> _Passage:
        passage = cls(number, hit, body, 0)
        passage.cost = count(passage.header) + count(body)
        return passage


def _pack(hits: Sequence[Hit], max_tokens: int, count: Callable[[str], int],
          min_passage_tokens: int) -> tuple[list[_Passage], bool]:
    """The passages of the hits that fit, best first, the last one cut if it is worth it; and whether any was cut
    or left out."""
    passages: list[_Passage] = []
    used = 0
    separator = count("\n\n")
    for hit in hits:
        sep = separator if passages else 0
        passage = _Passage.of(len(passages) + 1, hit, hit.text.strip(), count)
        if used + sep + passage.cost <= max_tokens:
            passages.append(passage)
            used += sep + passage.cost
            continue
        room = max_tokens - used - sep - count(passage.header)
        if room >= min_passage_tokens:
            cut = _truncate(passage.body, room - count(" ..."), count)
            if cut:
                passages.append(_Passage.of(passage.number, hit, cut + " ...", count))
        return passages, True
    return passages, False


class _Neighbours:
    """Small-to-big: grows passages by the adjacent chunks of their documents (read once per document)."""

    def __init__(self, index: StorageBackend, count: Callable[[str], int]) -> None:
        self.index = index
        self.count = count
        self._documents: dict[str, tuple[str, list[Chunk]] | None] = {}

    def _document(self, hit: Hit) -> tuple[str, list[Chunk]] | None:
        """The text and chunks of the hit's document, None when it is not stored as the hit saw it."""
        if hit.doc_id not in self._documents:
            found = self.index.get_documents([hit.doc_id])
            chunks = self.index.chunks_of(hit.doc_id) if found else []
            self._documents[hit.doc_id] = (found[0].text, chunks) if found and chunks else None
        stored = self._documents[hit.doc_id]
        if stored is None or hit.end <= hit.start or stored[0][hit.start:hit.end].strip() != hit.text.strip():
            return None
        return stored

    def widen(self, passages: list[_Passage], room: int, neighbours: int) -> int:
        """Grow the passages in rank order while ``room`` tokens last; returns the tokens added."""
        added = 0
        for i, passage in enumerate(passages):
            stored = self._document(passage.hit)
            if stored is None:
                continue
            text, chunks = stored
            # the chunks the hit is made of: from the last one starting at its start to the last one ending by its end
            first = max(0, bisect.bisect_right([c.start for c in chunks], passage.hit.start) - 1)
            last = max(first, bisect.bisect_right([c.end for c in chunks], passage.hit.end) - 1)
            reach = [0, 0]  # chunks added before, after
            for step in range(2 * neighbours):
                side = 1 - step % 2  # after first, then before
                reach[side] += 1
                lo, hi = max(0, first - reach[0]), min(len(chunks) - 1, last + reach[1])
                span = self._clip(passages, i, text, chunks[lo].start, chunks[hi].end)
                grown = _Passage.of(passage.number, _slice(passage.hit, text, span, chunks[lo]), text[slice(*span)],
                                    self.count)
                if (span[0], span[1]) == (passage.hit.start, passage.hit.end) or grown.cost - passage.cost > room:
                    reach[side] -= 1
                    continue
                room -= grown.cost - passage.cost
                added += grown.cost - passage.cost
                passages[i] = passage = grown
        return added

    @staticmethod
    def _clip(passages: list[_Passage], i: int, text: str, start: int, end: int) -> tuple[int, int]:
        """``start, end`` narrowed to stop where another passage of the same document begins or ends, without
        surrounding white space."""
        own = passages[i].hit
        for other in passages:
            hit = other.hit
            if other is passages[i] or hit.doc_id != own.doc_id:
                continue
            if hit.end <= own.start:
                start = max(start, hit.end)
            elif hit.start >= own.end:
                end = min(end, hit.start)
        start, end = min(start, own.start), max(end, own.end)
        while start < own.start and text[start].isspace():
            start += 1
        while end > own.end and text[end - 1].isspace():
            end -= 1
        return start, end


def _slice(hit: Hit, text: str, span: tuple[int, int], first_chunk: Chunk) -> Hit:
    """``hit`` widened to ``span`` of its document ``text``: the slice's text, lines and first page."""
    (start_line, end_line), = line_spans(text, [span])
    page = first_chunk.page if span[0] < hit.start and first_chunk.page is not None else hit.page
    return dataclasses.replace(hit, text=text[span[0]:span[1]], start=span[0], end=span[1], start_line=start_line,
                               end_line=end_line, page=page)


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
    neighbours: int = 0,
    index: StorageBackend | None = None,
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
        neighbours: Widen each passage by up to this many adjacent chunks of its document on each side while the
            budget lasts ("small-to-big", see :func:`build_context`).
        index: The index the hits came from, for ``neighbours`` (default: the retriever's).
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
        if neighbours and index is None:
            index = retriever.index
    context = build_context(hits, max_tokens=max_tokens, tokens=tokens, index=index, neighbours=neighbours)
    text = prompt.replace("{context}", context.text).replace("{question}", question)
    logger.debug("asking the llm with %d passages (%d tokens)", len(context.hits), context.tokens)
    return Answer(text=_call_llm(llm, text).strip(), context=context, prompt=text)
