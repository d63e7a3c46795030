"""Small frozen dataclasses shared by every layer of qwen3-rag: a :class:`Document`, its :class:`Chunk` s, and the
:class:`Hit` a search returns."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The integers metadata can hold: SQLite's JSON functions (metadata filters) read larger ones as inexact floats.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Deepest nesting of lists and dicts in metadata.
MAX_METADATA_DEPTH = 32


def content_hash(text: str, metadata: Mapping[str, Any] | None = None) -> str:
    """Return a stable SHA-256 hex digest of a text and its (JSON-serialisable) metadata."""
    h = hashlib.sha256(text.encode("utf-8", errors="surrogatepass"))
    if metadata:
        h.update(b"\x00")
        h.update(json.dumps(metadata, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
    return h.hexdigest()


def line_spans(text: str, spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The 1-based first and last line of each character span of ``text``.

    The spans must come in document order (starts and ends never decreasing), as a chunker makes them: the
    newlines are then counted once over the text. An empty span sits on the line of its start.
    """
    out: list[tuple[int, int]] = []
    start_line = end_line = 1
    at_start = at_end = 0
    for start, end in spans:
        last = max(start, end - 1)
        start_line += text.count("\n", at_start, start)
        end_line += text.count("\n", at_end, last)
        at_start, at_end = start, last
        out.append((start_line, end_line))
    return out


def check_metadata(metadata: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check that metadata is JSON that stores and filters exactly, and return it as plain JSON values.

    The rule: keys are ``str``; values are ``str``, ``bool``, ``None``, integers from -2**63 to 2**63 - 1, finite
    floats, and lists and dicts of these (dict keys ``str`` too, at most :data:`MAX_METADATA_DEPTH` levels deep).
    Two conversions lose nothing JSON can hold and are made: a tuple becomes a list, and a number of another type
    (``numpy.int64``, ``numpy.float32``) becomes ``int`` or ``float``. Everything else is refused rather than
    turned into a string behind the caller's back: NaN and infinities (no JSON for them; they would break every
    filter), text with lone surrogates (not Unicode; e.g. undecodable file names) or NUL characters (SQLite's JSON
    functions end the text there), ``bytes`` (decode them),
    ``datetime`` / ``date`` (store ``value.isoformat()``, which also sorts and compares correctly), ``set`` (store
    ``sorted(value)``), and any other object.

    Args:
        metadata: The metadata of one item.
        where: Names the item in errors, e.g. ``"document 'a.txt'"`` or ``"text 3"``.

    Returns:
        A new dict holding only plain JSON values.

    Raises:
        ValueError: naming ``where``, the key path and the value, and saying how to convert it.
    """
    if not isinstance(metadata, Mapping):
        raise ValueError(f"{where}: metadata must be a dict, got {type(metadata).__name__} ({metadata!r:.80})")
    return _json_dict(metadata, where, "metadata", 0)


def _json_dict(value: Mapping[Any, Any], where: str, path: str, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise ValueError(
                f"{where}: {path} has the key {key!r} ({type(key).__name__}); metadata keys must be str, "
                f"e.g. {str(key)!r}"
            )
        _check_text(key, where, f"the key {key!r} of {path}")
        out[key] = _json_value(item, where, f"{path}[{key!r}]", depth)
    return out


def _json_value(value: Any, where: str, path: str, depth: int) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        _check_text(value, where, path)
        return value
    if isinstance(value, numbers.Integral):
        if not INT64_MIN <= int(value) <= INT64_MAX:
            raise ValueError(f"{where}: {path} = {int(value)} is outside the 64-bit integers metadata can hold "
                             "(-2**63 to 2**63 - 1); store it as a string")
        return int(value)
    if isinstance(value, numbers.Real):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {path} = {float(value)!r}; metadata numbers must be finite (JSON has no "
                             "NaN or Infinity): drop the key or use None")
        return float(value)
    if isinstance(value, (list, tuple, Mapping)):
        if depth >= MAX_METADATA_DEPTH:
            raise ValueError(f"{where}: {path} is nested more than {MAX_METADATA_DEPTH} levels deep")
        if isinstance(value, Mapping):
            return _json_dict(value, where, path, depth + 1)
        return [_json_value(v, where, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    raise ValueError(f"{where}: {path} is {type(value).__name__} ({value!r:.60}), which is not JSON; "
                     f"{_CONVERT.get(type(value).__name__, 'convert it to a str, number, bool, list or dict')}")


_CONVERT = {
    "bytes": "decode it to a str (value.decode())",
    "bytearray": "decode it to a str (value.decode())",
    "datetime": "store value.isoformat(), a str that sorts and compares in time order",
    "date": "store value.isoformat(), a str that sorts and compares in time order",
    "set": "store sorted(value), a list",
    "frozenset": "store sorted(value), a list",
}


def _check_text(text: str, where: str, path: str) -> None:
    if "\x00" in text:
        raise ValueError(f"{where}: {path} holds a NUL character (\\x00) at position {text.index(chr(0))}, which "
                         "SQLite's JSON functions cut the text at (filters would see less); remove it")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{where}: {path} holds {text[exc.start]!r} at position {exc.start}, a lone surrogate "
                         "that is not Unicode text (e.g. bytes of an undecodable file name); fix the text") from None


@dataclass(frozen=True)
class Document:
    """A unit of the corpus: one file, one record, one page set.

    Attributes:
        id: Stable identifier (given by the caller or derived from the source path / record id).
        text: The full text.
        source: Where it came from (a path, a URL, ``file.jsonl#id``).
        metadata: JSON-serialisable fields carried to every chunk.
    """

    id: str
    text: str
    source: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        return content_hash(self.text, self.metadata)


@dataclass(frozen=True)
class Chunk:
    """A span of a document: the unit that is embedded, stored and retrieved.

    ``document.text[chunk.start:chunk.end] == chunk.text`` always holds. A chunker makes a chunk without an id;
    an index gives it its stable ``chunk_id`` when it is stored, and returns it with its document's ``source`` and
    metadata.

    Attributes:
        doc_id: The document it belongs to.
        index: Its position among the document's chunks (0, 1, ...).
        text: The text, exactly ``document.text[start:end]``.
        start, end: Character offsets in the document.
        page: The 1-based page it starts on (PDF), else None.
        headings: The Markdown heading path it sits under.
        metadata: Its document's metadata.
        start_line, end_line: The 1-based lines of the document it spans (for citations; 0 when unknown).
        chunk_id: The int64 id the index stores it under (None before it is stored).
        source: Its document's source (set on chunks read back from an index).
    """

    doc_id: str
    index: int
    text: str
    start: int
    end: int
    page: int | None = None
    headings: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    start_line: int = 0
    end_line: int = 0
    chunk_id: int | None = None
    source: str = ""

    def to_hit(self, score: float, scores: Mapping[str, float] | None = None) -> Hit:
        """This (stored) chunk found with ``score``; ``scores`` names every score that applied (default
        ``{"dense": score}``)."""
        return Hit(
            chunk_id=-1 if self.chunk_id is None else self.chunk_id,
            doc_id=self.doc_id,
            text=self.text,
            score=float(score),
            source=self.source,
            start=self.start,
            end=self.end,
            page=self.page,
            headings=self.headings,
            metadata=self.metadata,
            scores=dict(scores) if scores is not None else {"dense": float(score)},
            start_line=self.start_line,
            end_line=self.end_line,
        )


@dataclass(frozen=True)
class RerankResult:
    """One reranked document: its position in the input, its relevance probability and the document itself."""

    index: int
    score: float
    document: str


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk with everything needed to cite it.

    Attributes:
        chunk_id: The stable int64 id of the chunk.
        doc_id: The document it belongs to.
        text: The chunk text (for merged overlapping chunks, their union).
        score: The final score the list is sorted by.
        source: Where the document came from.
        start, end: Character offsets in the document.
        page: The page it starts on (PDF), else None.
        headings: The Markdown heading path.
        metadata: The document's metadata.
        scores: Every score that applied (``dense``, ``bm25``, ``fused``, ``rerank``).
        start_line, end_line: The 1-based lines of the document it spans (0 when unknown).
    """

    chunk_id: int
    doc_id: str
    text: str
    score: float
    source: str = ""
    start: int = 0
    end: int = 0
    page: int | None = None
    headings: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    scores: Mapping[str, float] = field(default_factory=dict)
    start_line: int = 0
    end_line: int = 0


@dataclass(frozen=True)
class IndexCounts:
    """Documents, chunks and searchable vectors of an index (vectors == chunks in a consistent index)."""

    documents: int
    chunks: int
    vectors: int


@dataclass
class WriteStats:
    """What a write did, in documents and chunks: ``added``, ``updated`` and ``unchanged`` documents,
    ``chunks_added`` and ``chunks_removed``."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    chunks_added: int = 0
    chunks_removed: int = 0

    def add(self, other: WriteStats) -> None:
        """Add ``other``'s counts to these."""
        for name in ("added", "updated", "unchanged", "chunks_added", "chunks_removed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
