"""Token-aware chunking with exact character offsets.

A :class:`Chunker` counts tokens with the embedder's own tokenizer, so ``chunk_size`` means what the model
sees (content tokens, without the special tokens the model adds). It cuts at the best boundary inside the
window: a paragraph break (or a Markdown heading), then a line or sentence end, then a word boundary, and only
as a last resort between two tokens. Every chunk satisfies
``document.text[chunk.start:chunk.end] == chunk.text`` and never holds more than ``chunk_size`` tokens when
re-tokenized on its own.
"""

from __future__ import annotations

import bisect
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qwen3_rag.types import Chunk, Document

logger = logging.getLogger(__name__)

#: Default chunk size in tokens. Measured with benchmarks/chunk_size.py (all-MiniLM-L6-v2, full SciFact and
#: XQuAD-en, a document scored by its best chunk): 96-128 tokens with a 25% overlap beat whole documents by
#: +4.6 nDCG@10 points on SciFact and +0.8-1.7 on XQuAD, while 250-token chunks (which only undo MiniLM's
#: 256-token truncation) gain +0.7. The gain comes from granularity, not truncation, so it is kept for
#: Qwen3 (8192 tokens) too; see README.md, "Chunk size".
DEFAULT_CHUNK_SIZE = 128
#: Default overlap between consecutive chunks, in tokens (25%; 0 overlap loses 1.8 points on SciFact).
DEFAULT_CHUNK_OVERLAP = 32

#: Metadata key a loader uses to give the character offset where each page starts (page numbers are 1-based).
PAGE_STARTS_KEY = "page_starts"

# Boundary levels between two tokens: higher is a better place to cut.
_PARAGRAPH, _LINE, _SENTENCE, _WORD, _TOKEN = 4, 3, 2, 1, 0
_SENTENCE_END = re.compile(r"[.!?;:\u3002\uff01\uff1f\uff1b\u2026][\"')\]\u201d\u2019]*$")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)
_WORD_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)

TokenSpans = Callable[[str], list[tuple[int, int]]]


def regex_token_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of words and punctuation marks; the tokenizer used when no model tokenizer is given."""
    return [m.span() for m in _WORD_TOKEN.finditer(text)]


def tokenizer_token_spans(tokenizer: Any) -> TokenSpans:
    """Return a function giving the character span of every content token of a text for a *fast* HF tokenizer.

    Raises:
        TypeError: if the tokenizer cannot return offsets (a slow tokenizer).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"chunking needs a fast tokenizer that returns offsets, got {type(tokenizer).__name__}; "
            "load the model with a tokenizer.json (use_fast=True)"
        )

    def spans(text: str) -> list[tuple[int, int]]:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return list(enc["offset_mapping"])

    return spans


def _many_spans(tokenizer: Any, texts: list[str]) -> list[list[tuple[int, int]]]:
    """Token spans of many texts in one tokenizer call (the Rust side runs them in parallel)."""
    if not texts:
        return []
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False,
                    verbose=False)
    return [list(offsets) for offsets in enc["offset_mapping"]]


def _merge_spans(spans: Sequence[tuple[int, int]]) -> tuple[list[tuple[int, int]], list[int]]:
    """Group token spans into cuttable units; returns ``(groups, weights)``, weight = tokens in the group.

    Byte-level BPE can give several tokens the same characters (one multi-byte char split in two tokens) and
    some tokenizers give (0, 0) for pieces without characters. Chunk cuts must fall between characters, so
    tokens that share characters are kept in one group, and a token counts towards the last group that starts
    at or before it.
    """
    groups: list[tuple[int, int]] = []
    weights: list[int] = []
    starts: list[int] = []
    for s, e in spans:
        if groups and (e <= s or s < groups[-1][1]):
            if e > s:  # overlaps the last group: widen it
                groups[-1] = (groups[-1][0], max(groups[-1][1], e))
            if s >= starts[-1]:
                weights[-1] += 1
            else:  # out of order (a piece without characters reported at 0): the group it falls in
                weights[max(0, bisect.bisect_right(starts, s) - 1)] += 1
        else:
            groups.append((s, e))
            weights.append(1)
            starts.append(s)
    return groups, weights


@dataclass(frozen=True)
class ChunkingConfig:
    """Chunking settings, stored in an index manifest.

    Attributes:
        chunk_size: Maximum tokens per chunk; 0 disables chunking (one chunk per document).
        chunk_overlap: Tokens shared by consecutive chunks (at most ``chunk_size // 2``).
    """

    chunk_size: int = DEFAULT_CHUNK_SIZE
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP

    def __post_init__(self) -> None:
        if self.chunk_size < 0:
            raise ValueError(f"chunk_size must be >= 0 (0 disables chunking), got {self.chunk_size}")
        if self.chunk_overlap < 0:
            raise ValueError(f"chunk_overlap must be >= 0, got {self.chunk_overlap}")
        if self.chunk_size and self.chunk_overlap > self.chunk_size // 2:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be at most half of "
                f"chunk_size ({self.chunk_size}); "
                f"use --chunk-overlap {self.chunk_size // 2} or less"
            )


class Chunker:
    """Split documents into token-bounded chunks with character offsets, page numbers and heading paths.

    Args:
        chunk_size: Maximum tokens per chunk (0 disables chunking).
        chunk_overlap: Tokens repeated at the start of the next chunk.
        tokenizer: A fast Hugging Face tokenizer (``embedder.tokenizer``); ``None`` counts words and
            punctuation.

    Example:
        >>> chunker = Chunker(chunk_size=4, chunk_overlap=0)
        >>> [c.text for c in chunker.chunk(Document(id="d", text="One two. Three four five."))]
        ['One two.', 'Three four five.']
    """

    def __init__(
        self,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
        tokenizer: Any = None,
    ) -> None:
        self.config = ChunkingConfig(chunk_size, chunk_overlap)
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.tokenizer = tokenizer
        self._spans: TokenSpans = (
            tokenizer_token_spans(tokenizer) if tokenizer is not None else regex_token_spans
        )
        self._exact = tokenizer is None  # the regex tokenizer gives the same tokens on any substring
        #: Tokens of the document last passed to :meth:`chunk` (for throughput figures).
        self.last_token_count = 0
        self.last_token_counts: list[int] = []

    @classmethod
    def for_embedder(
        cls, embedder: Any, chunk_size: int = DEFAULT_CHUNK_SIZE, chunk_overlap: int = DEFAULT_CHUNK_OVERLAP
    ) -> Chunker:
        """A chunker that counts tokens with ``embedder.tokenizer`` (the regex fallback when it has none)."""
        tok = getattr(embedder, "tokenizer", None)
        if tok is not None and not getattr(tok, "is_fast", False):
            logger.info("embedder tokenizer %s gives no offsets; counting words instead", type(tok).__name__)
            tok = None
        return cls(chunk_size, chunk_overlap, tokenizer=tok)

    def with_own_tokenizer(self) -> Chunker:
        """The same chunker over a private copy of the tokenizer, for a thread beside the embedder.

        A fast tokenizer is not safe to share between threads: truncation is a setting of the tokenizer object,
        so a chunker call can switch it off under an embedder call that is truncating.
        """
        import copy

        own = copy.deepcopy(self.tokenizer) if self.tokenizer is not None else None
        return Chunker(self.chunk_size, self.chunk_overlap, tokenizer=own)

    def count_tokens(self, text: str) -> int:
        """Number of content tokens in ``text``."""
        return len(self._spans(text))

    def chunk(self, document: Document) -> list[Chunk]:
        """Split one document. Whitespace-only documents give no chunks.

        Returns:
            The chunks in document order, ``index`` 0, 1, ...
        """
        text = document.text
        spans = self._spans(text) if text.strip() else []
        self.last_token_count = len(spans)
        if not spans:
            return []
        return self._build(document, self._bounds(text, spans, verify=True))

    def chunk_many(self, documents: Sequence[Document]) -> list[list[Chunk]]:
        """:meth:`chunk` for many documents, the same chunks, faster: one tokenizer call for all the documents
        and one more to check that every chunk fits.

        A chunk is cut from the tokens of the whole document; a subword tokenizer can count the chunk's own
        text a token or two differently, so every chunk is re-tokenized to check its size. Here all chunks are
        checked together, and only a document with a chunk over the limit is cut again the slow way.

        Sets :attr:`last_token_counts` (tokens of each document) and :attr:`last_token_count` (their sum).
        """
        docs = list(documents)
        all_spans = self._many_spans([d.text if d.text.strip() else "" for d in docs])
        self.last_token_counts = [len(spans) for spans in all_spans]
        self.last_token_count = sum(self.last_token_counts)
        bounds = [self._bounds(d.text, spans, verify=False) if spans else []
                  for d, spans in zip(docs, all_spans, strict=True)]
        if not self._exact:
            to_check = [(i, d.text[a:b]) for i, (d, bs) in enumerate(zip(docs, bounds, strict=True))
                        if len(bs) > 1 for a, b in bs]
            counts = self._many_spans([t for _, t in to_check])
            over = {i for (i, _), spans in zip(to_check, counts, strict=True) if len(spans) > self.chunk_size}
            for i in over:
                bounds[i] = self._bounds(docs[i].text, all_spans[i], verify=True)
        return [self._build(d, b) if b else [] for d, b in zip(docs, bounds, strict=True)]

    def _many_spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Token spans of many texts; one call for a model tokenizer."""
        if self.tokenizer is None:
            return [regex_token_spans(t) for t in texts]
        return _many_spans(self.tokenizer, texts)

    def _bounds(self, text: str, spans: list[tuple[int, int]], *, verify: bool) -> list[tuple[int, int]]:
        if self.chunk_size == 0 or len(spans) <= self.chunk_size:
            return [_strip(text, 0, len(text))]
        return self._split(text, spans, verify=verify)

    def _build(self, document: Document, bounds: list[tuple[int, int]]) -> list[Chunk]:
        text = document.text
        metadata = {k: v for k, v in document.metadata.items() if k != PAGE_STARTS_KEY}
        pages = _page_starts(document.metadata)
        headings = _heading_index(text) if _is_markdown(document) else []
        heading_starts = [p for p, _ in headings]
        return [
            Chunk(
                doc_id=document.id,
                index=i,
                text=text[start:end],
                start=start,
                end=end,
                page=_page_at(pages, start),
                headings=_headings_at(headings, heading_starts, start),
                metadata=metadata,
            )
            for i, (start, end) in enumerate(bounds)
        ]

    # -- internals
    # -------------------------------------------------------------------------------------------------

    def _split(self, text: str, raw_spans: list[tuple[int, int]], verify: bool = True) -> list[tuple[int, int]]:
        # weights[i]: how many tokens group i holds; the size of a chunk is the sum of the weights of its groups
        groups, weights = _merge_spans(raw_spans)
        cum = [0]
        for w in weights:
            cum.append(cum[-1] + w)
        levels = _boundary_levels(text, groups)
        size, overlap = self.chunk_size, self.chunk_overlap
        n = len(groups)
        out: list[tuple[int, int]] = []
        a = 0
        while a < n:
            # largest b with tokens(a..b-1) <= size
            b_max = bisect.bisect_right(cum, cum[a] + size) - 1
            b_max = max(b_max, a + 1)  # a single group over the limit still has to go somewhere
            if b_max >= n:
                b = n
            else:
                b = self._best_cut(levels, cum, a, b_max)
            start, end = groups[a][0], groups[b - 1][1]
            if verify and not self._exact:
                b, end = self._fit(text, groups, a, b, start)
            out.append(_strip(text, start, end))
            if b >= n:
                break
            a = self._overlap_start(levels, cum, a, b, overlap)
        return [(s, e) for s, e in out if e > s]

    def _best_cut(self, levels: list[int], cum: list[int], a: int, b_max: int) -> int:
        # cut before group b (chunk = groups a..b-1); search the second half of the window for the best level,
        # preferring the latest position among equals so chunks come out as full as the boundaries allow
        lo = max(a + 1, bisect.bisect_left(cum, cum[a] + self.chunk_size // 2))
        best, best_level = b_max, -1
        for b in range(b_max, lo - 1, -1):
            if levels[b] > best_level:
                best, best_level = b, levels[b]
                if best_level == _PARAGRAPH:
                    break
        return best

    def _overlap_start(self, levels: list[int], cum: list[int], a: int, b: int, overlap: int) -> int:
        if overlap <= 0:
            return b
        lo = bisect.bisect_left(cum, cum[b] - overlap)
        for j in range(max(lo, a + 1), b):
            if levels[j] >= _WORD:  # start the overlap on a word boundary
                return j
        return b

    def _fit(self, text: str, groups: list[tuple[int, int]], a: int, b: int, start: int) -> tuple[int, int]:
        # A subword tokenizer can count a substring differently from the same characters inside the whole
        # text; re-tokenize the chunk and give back groups until it fits.
        while True:
            end = groups[b - 1][1]
            s, e = _strip(text, start, end)
            if b - a <= 1 or len(self._spans(text[s:e])) <= self.chunk_size:
                return b, end
            b -= 1


#: Last characters a sentence can end with (its final punctuation or a closing quote / bracket after it).
_SENTENCE_LAST = frozenset(".!?;:\u3002\uff01\uff1f\uff1b\u2026\"')]\u201d\u2019")
_CJK_ENDS = ("\u3002", "\uff01", "\uff1f")


def _boundary_levels(text: str, groups: list[tuple[int, int]]) -> list[int]:
    """levels[i] = how good a cut before group i is (levels[0] unused).

    The gap before group i is the text between the previous group and the first non-space character of group i
    (tokens of byte-level BPE carry their leading whitespace). The cheap tests come first: this runs once per
    token of every document.
    """
    levels = [_TOKEN] * (len(groups) + 1)
    prev_start, prev_end = groups[0] if groups else (0, 0)
    for i in range(1, len(groups)):
        start, end = groups[i]
        lead_end = start
        while lead_end < end and text[lead_end].isspace():
            lead_end += 1
        gap = text[prev_end:lead_end] if lead_end > prev_end else ""
        if gap:
            nl = gap.count("\n")
            if nl >= 2 or (nl and text.startswith("#", lead_end)):
                levels[i] = _PARAGRAPH
            elif nl:
                levels[i] = _LINE
            else:
                prev = text[prev_start:prev_end].rstrip()
                if prev and prev[-1] in _SENTENCE_LAST and _SENTENCE_END.search(prev):
                    levels[i] = _SENTENCE
                else:
                    levels[i] = _WORD
        else:
            prev = text[prev_start:prev_end].rstrip()
            if prev.endswith(_CJK_ENDS):
                levels[i] = _SENTENCE
        prev_start, prev_end = start, end
    return levels


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _page_starts(metadata: Mapping[str, Any]) -> list[int] | None:
    starts = metadata.get(PAGE_STARTS_KEY)
    if isinstance(starts, (list, tuple)) and starts:
        return [int(s) for s in starts]
    return None


def _page_at(pages: list[int] | None, pos: int) -> int | None:
    if pages is None:
        return None
    return max(1, bisect.bisect_right(pages, pos))


def _is_markdown(document: Document) -> bool:
    fmt = document.metadata.get("format")
    if fmt is not None:
        return fmt == "markdown"
    return document.source.lower().endswith((".md", ".markdown"))


def _heading_index(text: str) -> list[tuple[int, tuple[str, ...]]]:
    """(position, heading path in force from that position) for every Markdown heading outside code fences."""
    fences = [m.start() for m in _FENCE.finditer(text)]
    out: list[tuple[int, tuple[str, ...]]] = []
    path: list[tuple[int, str]] = []
    for m in _HEADING.finditer(text):
        if bisect.bisect_right(fences, m.start()) % 2 == 1:
            continue  # inside a fenced code block
        level = len(m.group(1))
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, m.group(2).strip()))
        out.append((m.start(), tuple(t for _, t in path)))
    return out


def _headings_at(index: list[tuple[int, tuple[str, ...]]], starts: list[int], pos: int) -> tuple[str, ...]:
    i = bisect.bisect_right(starts, pos) - 1
    return index[i][1] if i >= 0 else ()
