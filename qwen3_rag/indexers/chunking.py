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
import itertools
import logging
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from qwen3_rag.indexers.headings import heading_index, headings_at, is_markdown
from qwen3_rag.types import Chunk, Document, line_spans

logger = logging.getLogger(__name__)

#: Default chunk size in tokens, chosen with benchmarks/chunk_size.py: 96-128 tokens with a 25% overlap retrieve
#: best, and the gain comes from granularity, not from undoing a model's truncation, so it holds for Qwen3
#: (8192 tokens) too (see BENCHMARKS.md, 5. Retrieval quality, "Chunk size").
DEFAULT_CHUNK_SIZE = 128
#: Default overlap between consecutive chunks, in tokens (25%, which beats no overlap; same section).
DEFAULT_CHUNK_OVERLAP = 32

#: What a chunk is embedded with besides its own text: ``"title+headings"``, a short first line with its
#: document's title and the chunk's heading path (the stored text and offsets stay the source's), or ``"none"``.
ChunkContext = Literal["title+headings", "none"]
CHUNK_CONTEXTS: tuple[ChunkContext, ...] = ("title+headings", "none")
#: The default for new indexes: the title line did not raise nDCG@10 on the tuning sets (benchmarks/chunk_context.py,
#: BENCHMARKS.md, 5. Retrieval quality, "Chunks with their context"), so chunks are embedded alone unless asked;
#: an index without the setting (made before it existed) embeds with ``"none"`` too.
DEFAULT_CHUNK_CONTEXT: ChunkContext = "none"

#: Callers of :meth:`Chunker.chunk_batch` (ingestion, ``Index.add``) chunk documents in groups of this many, or of
#: this many characters: one tokenizer call per group, with the memory of one group's tokens.
GROUP_DOCUMENTS = 64
GROUP_CHARS = 1_000_000

#: Metadata key a loader uses to give the character offset where each page starts (page numbers are 1-based).
PAGE_STARTS_KEY = "page_starts"

# Boundary levels between two tokens: higher is a better place to cut.
_PARAGRAPH, _LINE, _SENTENCE, _WORD, _TOKEN = 4, 3, 2, 1, 0
_WORD_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def regex_token_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of words and punctuation marks; the tokenizer used when no model tokenizer is given."""
    return [m.span() for m in _WORD_TOKEN.finditer(text)]


class _ContentTokenizer:
    """The chunker's own copy of a fast tokenizer's Rust backend: content tokens only, never truncated.

    A Hugging Face fast tokenizer keeps truncation and padding as settings of the shared backend, set by each call;
    a private copy cannot be switched under the embedder (or by it), so chunking may run beside the embedder's own
    tokenizing, and calling the backend directly skips the wrapper's per-call work. The ids and offsets are the
    wrapper's ``tokenizer(text, add_special_tokens=False)`` ones (tested).
    """

    def __init__(self, tokenizer: Any) -> None:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_truncation()
        backend.no_padding()
        # the wrapper sets this on its backend at every call; the serialised copy does not carry it
        backend.encode_special_tokens = bool(getattr(tokenizer, "split_special_tokens", False))
        self._backend = backend
        # encode_batch_fast (tokenizers >= 0.21) skips the offsets, which the ids-only calls do not need
        self._encode_ids = getattr(backend, "encode_batch_fast", backend.encode_batch)

    def encode(self, texts: list[str]) -> list[Any]:
        """``tokenizers.Encoding`` of each text (ids and character offsets), in one call (the Rust side runs them
        in parallel)."""
        return self._backend.encode_batch(texts, add_special_tokens=False) if texts else []

    def spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Character span of every content token of each text, in one call."""
        return [enc.offsets for enc in self.encode(texts)]

    def ids(self, texts: list[str]) -> list[list[int]]:
        """Content token ids of each text, in one call."""
        if not texts:
            return []
        return [enc.ids for enc in self._encode_ids(texts, add_special_tokens=False)]


def _merge_spans(spans: Sequence[tuple[int, int]]) -> tuple[np.ndarray, list[int]]:
    """Group token spans into cuttable units; returns ``(groups, weights)``: an ``(n, 2)`` array of character
    spans, and the tokens in each group.

    Byte-level BPE can give several tokens the same characters (one multi-byte char split in two tokens) and
    some tokenizers give (0, 0) for pieces without characters. Chunk cuts must fall between characters, so
    tokens that share characters are kept in one group, and a token counts towards the last group that starts
    at or before it.
    """
    arr = np.fromiter(itertools.chain.from_iterable(spans), dtype=np.int64, count=2 * len(spans)).reshape(-1, 2)
    if bool((arr[:, 1] > arr[:, 0]).all()) and bool((arr[1:, 0] >= arr[:-1, 1]).all()):
        return arr, [1] * len(arr)  # the common case: every token its own characters, in order
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
    return np.asarray(groups, dtype=np.int64).reshape(-1, 2), weights


@dataclass(frozen=True)
class ChunkingConfig:
    """Chunking settings, stored in an index manifest.

    Attributes:
        chunk_size: Maximum tokens per chunk; 0 disables chunking (one chunk per document).
        chunk_overlap: Tokens shared by consecutive chunks (at most ``chunk_size // 2``).
        context: What each chunk is embedded with besides its text (:data:`ChunkContext`; see
            :func:`chunk_contexts`).
    """

    chunk_size: int = DEFAULT_CHUNK_SIZE
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP
    context: ChunkContext = DEFAULT_CHUNK_CONTEXT

    @classmethod
    def from_manifest(cls, record: Mapping[str, Any]) -> ChunkingConfig:
        """The settings stored in an index manifest's ``chunking`` section; an index made before chunk context
        existed embeds chunks alone (``"none"``)."""
        return cls(int(record["chunk_size"]), int(record["chunk_overlap"]), record.get("context", "none"))

    def to_manifest(self) -> dict[str, Any]:
        """The ``chunking`` section of an index manifest (what :meth:`from_manifest` reads back)."""
        return {"chunk_size": self.chunk_size, "chunk_overlap": self.chunk_overlap, "context": self.context}

    def __post_init__(self) -> None:
        if self.context not in CHUNK_CONTEXTS:
            raise ValueError(f"chunk context must be one of {', '.join(map(repr, CHUNK_CONTEXTS))}, got "
                             f"{self.context!r}")
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


@dataclass
class ChunkBatch:
    """The result of :meth:`Chunker.chunk_batch`.

    Attributes:
        chunks: The chunks of each document, in input order (``[]`` for a whitespace-only document).
        doc_tokens: Content tokens of each whole document (for throughput figures).
        token_ids: When asked for and a model tokenizer counts: ``token_ids[i][j]`` are the ids of
            ``tokenizer(chunks[i][j].text, add_special_tokens=False)``, which
            :meth:`~qwen3_rag.Embedder.ids_from_content` turns into the model's input without tokenizing again.
    """

    chunks: list[list[Chunk]]
    doc_tokens: list[int]
    token_ids: list[list[list[int]]] | None = None


class Chunker:
    """Split documents into token-bounded chunks with character offsets, page numbers and heading paths.

    Args:
        chunk_size: Maximum tokens per chunk (0 disables chunking).
        chunk_overlap: Tokens repeated at the start of the next chunk.
        tokenizer: A fast Hugging Face tokenizer (``embedder.tokenizer``); ``None`` counts words and
            punctuation. The chunker tokenizes with its own copy of it, so it can run beside the embedder.

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
        if tokenizer is not None and not getattr(tokenizer, "is_fast", False):
            raise TypeError(
                f"chunking needs a fast tokenizer that returns offsets, got {type(tokenizer).__name__}; "
                "load the model with a tokenizer.json (use_fast=True)"
            )
        self.tokenizer = tokenizer
        self._exact = tokenizer is None  # the regex tokenizer gives the same tokens on any substring
        self._content_tokenizer: _ContentTokenizer | None = None  # made on first use: an index opened only to
        self._content_lock = threading.Lock()  # search never chunks, and the copy costs ~0.5 s for Qwen3

    @property
    def _content(self) -> _ContentTokenizer:
        """The private tokenizer copy (a model tokenizer only)."""
        if self._content_tokenizer is None:
            with self._content_lock:
                if self._content_tokenizer is None:
                    self._content_tokenizer = _ContentTokenizer(self.tokenizer)
        return self._content_tokenizer

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

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Content token ids of each text (what :meth:`chunk_batch` gives for chunks), in one call; needs a model
        tokenizer."""
        if self._exact:
            raise ValueError("token_ids needs a model tokenizer; this Chunker counts words")
        return self._many_ids(list(texts))

    def count_tokens(self, text: str) -> int:
        """Number of content tokens in ``text``."""
        if self._exact:
            return len(regex_token_spans(text))
        return len(self._content.ids([text])[0])

    def chunk(self, document: Document) -> list[Chunk]:
        """Split one document. Whitespace-only documents give no chunks.

        Returns:
            The chunks in document order, ``index`` 0, 1, ...
        """
        text = document.text
        spans = self._many_spans([text])[0] if text.strip() else []
        if not spans:
            return []
        return self._build(document, self._bounds(text, spans, verify=True))

    def chunk_many(self, documents: Sequence[Document]) -> list[list[Chunk]]:
        """:meth:`chunk` for many documents, the same chunks, faster (see :meth:`chunk_batch`)."""
        return self.chunk_batch(documents).chunks

    def chunk_batch(self, documents: Sequence[Document], *, token_ids: bool = False) -> ChunkBatch:
        """Chunk many documents with one tokenizer call for all of them and one more for all their chunks.

        A chunk is cut from the tokens of the whole document; a subword tokenizer can count the chunk's own
        text a token or two differently, so every chunk is re-tokenized to check its size. Here all chunks are
        tokenized together, and only a document with a chunk over the limit is cut again the slow way (chunk by
        chunk, as :meth:`chunk` does). The chunks are those :meth:`chunk` gives.

        Args:
            documents: The documents.
            token_ids: Also return the content token ids of every chunk (see :class:`ChunkBatch`); the check
                above computes them anyway for every chunk of a document with several, and a document that is
                one chunk as it stands has them from the first call.
        """
        docs = list(documents)
        texts = [d.text if d.text.strip() else "" for d in docs]
        if self._exact:
            encodings = None
            all_spans = [regex_token_spans(t) for t in texts]
        else:
            encodings = self._content.encode(texts)
            all_spans = [enc.offsets for enc in encodings]
        # the documents longer than a chunk are laid out (token groups, boundary levels) in one pass for all
        long = [i for i, spans in enumerate(all_spans) if self.chunk_size and len(spans) > self.chunk_size]
        layouts = dict(zip(long, _layouts([docs[i].text for i in long], [all_spans[i] for i in long]), strict=True))
        bounds = [self._bounds(d.text, spans, verify=False, layout=layouts.get(i)) if spans else []
                  for i, (d, spans) in enumerate(zip(docs, all_spans, strict=True))]
        ids: list[list[list[int]]] | None = None
        if encodings is not None:
            # A document that is one chunk as it stands (nothing stripped) fits and has its ids already; every
            # other chunk is tokenized again on its own, to check its size (stripping can change the tokens).
            whole = {i for i, bs in enumerate(bounds) if bs == [(0, len(docs[i].text))]}
            todo = [i for i, bs in enumerate(bounds) if bs and i not in whole and (token_ids or self.chunk_size)]
            per_doc = self._chunk_ids(docs, bounds, todo)
            over = [i for i in todo if self.chunk_size and any(len(x) > self.chunk_size for x in per_doc[i])]
            for i in over:
                bounds[i] = self._bounds(docs[i].text, all_spans[i], verify=True, layout=layouts.get(i))
            if token_ids:
                per_doc.update(self._chunk_ids(docs, bounds, over))
                per_doc.update((i, [encodings[i].ids]) for i in whole)
                ids = [per_doc.get(i, []) for i in range(len(docs))]
        chunks = [self._build(d, b) if b else [] for d, b in zip(docs, bounds, strict=True)]
        return ChunkBatch(chunks=chunks, doc_tokens=[len(s) for s in all_spans], token_ids=ids)

    def _chunk_ids(self, docs: list[Document], bounds: list[list[tuple[int, int]]],
                   which: list[int]) -> dict[int, list[list[int]]]:
        """Content token ids of every chunk of the documents ``which``, in one tokenizer call."""
        flat = self._many_ids([docs[i].text[a:b] for i in which for a, b in bounds[i]])
        out: dict[int, list[list[int]]] = {}
        pos = 0
        for i in which:
            out[i] = flat[pos : pos + len(bounds[i])]
            pos += len(bounds[i])
        return out

    def _many_spans(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """Token spans of many texts; one call for a model tokenizer."""
        if self._exact:
            return [regex_token_spans(t) for t in texts]
        return self._content.spans(texts)

    def _many_ids(self, texts: list[str]) -> list[list[int]]:
        """Content token ids of many texts, in one call (a model tokenizer only)."""
        return self._content.ids(texts)

    def _bounds(self, text: str, spans: list[tuple[int, int]], *, verify: bool,
                layout: _Layout | None = None) -> list[tuple[int, int]]:
        """Chunk character bounds of one document; ``layout`` is :func:`_layouts`' for it, when already made."""
        if self.chunk_size == 0 or len(spans) <= self.chunk_size:
            start, end = _strip(text, 0, len(text))
            # without its surrounding spaces a text can tokenize longer (" understanding" is one Qwen3 token,
            # "understanding" two): then it is cut like a longer one
            if not (verify and not self._exact and self.chunk_size and (start, end) != (0, len(text))
                    and self.count_tokens(text[start:end]) > self.chunk_size):
                return [(start, end)]
        return self._split(text, layout or _layouts([text], [spans])[0], verify=verify)

    def _build(self, document: Document, bounds: list[tuple[int, int]]) -> list[Chunk]:
        text = document.text
        metadata = {k: v for k, v in document.metadata.items() if k != PAGE_STARTS_KEY}
        pages = _page_starts(document.metadata)
        headings = heading_index(text) if is_markdown(document) else []
        heading_starts = [p for p, _ in headings]
        return [
            Chunk(
                doc_id=document.id,
                index=i,
                text=text[start:end],
                start=start,
                end=end,
                page=_page_at(pages, start),
                headings=headings_at(headings, heading_starts, start),
                metadata=metadata,
                start_line=first,
                end_line=last,
            )
            for i, ((start, end), (first, last)) in enumerate(zip(bounds, line_spans(text, bounds), strict=True))
        ]

    # -- internals
    # -------------------------------------------------------------------------------------------------

    def _split(self, text: str, layout: _Layout, verify: bool = True) -> list[tuple[int, int]]:
        groups, cum, levels = layout
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
            start, end = int(groups[a, 0]), int(groups[b - 1, 1])
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

    def _fit(self, text: str, groups: np.ndarray, a: int, b: int, start: int) -> tuple[int, int]:
        # A subword tokenizer can count a substring differently from the same characters inside the whole
        # text; re-tokenize the chunk and give back groups until it fits.
        while True:
            end = int(groups[b - 1, 1])
            s, e = _strip(text, start, end)
            if b - a <= 1 or self.count_tokens(text[s:e]) <= self.chunk_size:
                return b, end
            b -= 1


# Code points Python's str.isspace() accepts (a test checks this against str.isspace over all of Unicode).
_SPACES = [0x9, 0xA, 0xB, 0xC, 0xD, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028,
           0x2029, 0x202F, 0x205F, 0x3000]
# Character classes for the boundary scan, one byte per code point: a sentence ends in a stop, then any closing
# quotes or brackets; a CJK full stop ends a sentence without a space after it.
_SPACE, _CLOSER, _STOP, _CJK_STOP = 1, 2, 4, 8
_CLASS = np.zeros(0x110000, dtype=np.uint8)
_CLASS[_SPACES] = _SPACE
_CLASS[[ord(c) for c in "\"')]\u201d\u2019"]] = _CLOSER
_CLASS[[ord(c) for c in ".!?;:\uff1b\u2026"]] = _STOP
_CLASS[[ord(c) for c in "\u3002\uff01\uff1f"]] = _STOP | _CJK_STOP
_NEWLINE, _HASH = ord("\n"), ord("#")


#: A document ready to cut: its token groups (an ``(n, 2)`` array of character spans), the cumulative token count
#: before each group (``n + 1`` entries) and the boundary level before each group (:func:`_boundary_levels`).
_Layout = tuple[np.ndarray, list[int], list[int]]


def _layouts(texts: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]]) -> list[_Layout]:
    """The :data:`_Layout` of each text from its token spans, with one boundary scan per ``GROUP_CHARS``
    characters (the scan's arrays take ~75 bytes per character)."""
    merged = [_merge_spans(s) for s in spans]
    levels: list[list[int]] = []
    start = 0
    while start < len(texts):
        end, chars = start + 1, len(texts[start])
        while end < len(texts) and chars + len(texts[end]) <= GROUP_CHARS:
            chars += len(texts[end])
            end += 1
        levels.extend(_boundary_levels_many(texts[start:end], [groups for groups, _ in merged[start:end]]))
        start = end
    return [(groups, [0, *itertools.accumulate(weights)], lv)
            for (groups, weights), lv in zip(merged, levels, strict=True)]


def _boundary_levels(text: str, groups: np.ndarray) -> list[int]:
    """levels[i] = how good a cut before group i is (levels[0] and levels[n] unused).

    The gap before group i is the text between the previous group and the first non-space character of group i
    (tokens of byte-level BPE carry their leading whitespace). A gap with two newlines, or one before a ``#``, is
    a paragraph; one newline a line; any other gap after a token ending a sentence (``.!?;:`` and CJK stops, then
    closing quotes or brackets) a sentence, else a word. No gap is a cut inside a word, a sentence after a CJK
    full stop. This runs for every token of every document, so it works on arrays, not characters.

    The chunker scans many texts at once with :func:`_boundary_levels_many`; this one-text form states the rules
    and is what the tests hold against them, character by character.
    """
    return _boundary_levels_many([text], [groups])[0]


def _boundary_levels_many(texts: Sequence[str], groups: Sequence[np.ndarray]) -> list[list[int]]:
    """:func:`_boundary_levels` of many texts in one scan over them joined (a few dozen array operations per call,
    not per document).

    Every look-up stays inside its own document: ``lead`` is clamped to its group's end, and a look-back that
    lands in an earlier document falls before ``prev_start``, which the rules treat as no character. The one
    look-up that can reach the character joining two texts is the ``#`` test at a text's very end, which the
    joiner, NUL, fails as the end of a lone text does.
    """
    counts = [len(g) for g in groups]
    pairs = np.zeros(0, dtype=np.int8)
    if any(n >= 2 for n in counts):
        starts = np.cumsum([0, *(len(t) + 1 for t in texts[:-1])])
        # spans clipped to their text (a tokenizer's always are), so none reaches into the next one
        all_groups = np.concatenate([np.clip(np.asarray(g, dtype=np.int64).reshape(-1, 2), 0, len(t)) + off
                                     for t, g, off in zip(texts, groups, starts, strict=True)])
        pairs = _pair_levels("\0".join(texts), all_groups)
    flat = pairs.tolist()
    out, base = [], 0
    for n in counts:
        out.append([_TOKEN, *flat[base : base + n - 1], _TOKEN] if n >= 2 else [_TOKEN] * (n + 1))
        base += n
    return out


def _pair_levels(text: str, groups: np.ndarray) -> np.ndarray:
    """The level of the cut between each group and the next (``len(groups) - 1`` of them)."""
    cp = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    size = len(cp)
    pos = np.arange(size, dtype=np.int64)
    cls = _CLASS[cp]
    is_space = cls == _SPACE
    # first non-space at or after each position (size if none), with an entry for position `size`
    next_solid = np.append(np.minimum.accumulate(np.where(is_space, size, pos)[::-1])[::-1], size)
    # last non-space at or before each position (-1 if none), and the last character that is not a closer
    last_solid = np.maximum.accumulate(np.where(is_space, -1, pos))
    last_open = np.maximum.accumulate(np.where(cls == _CLOSER, -1, pos))
    newlines = np.concatenate(([0], np.cumsum(cp == _NEWLINE)))
    cp_end = np.append(cp, 0)

    start, end = groups[1:, 0], groups[1:, 1]
    prev_start, prev_end = groups[:-1, 0], groups[:-1, 1]
    lead = np.minimum(next_solid[np.minimum(start, size)], end)  # first non-space of the group (its end if none)
    gap = lead > prev_end
    nl = newlines[np.maximum(lead, prev_end)] - newlines[prev_end]
    # the previous group without its trailing spaces: its last character, and the one before its closers
    last = np.where(prev_end > 0, last_solid[np.maximum(prev_end - 1, 0)], -1)
    has_prev = last >= prev_start
    stop = last_open[np.maximum(last, 0)]
    sentence = has_prev & (stop >= prev_start) & ((cls[np.maximum(stop, 0)] & _STOP) > 0)
    return np.where(
        gap,
        np.select(
            [(nl >= 2) | ((nl > 0) & (cp_end[np.minimum(lead, size)] == _HASH)), nl > 0, sentence],
            [_PARAGRAPH, _LINE, _SENTENCE],
            _WORD,
        ),
        np.where(has_prev & ((cls[np.maximum(last, 0)] & _CJK_STOP) > 0), _SENTENCE, _TOKEN),
    ).astype(np.int8)


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
