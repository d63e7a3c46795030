"""Small frozen dataclasses shared by every layer of qwen3-rag."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


def content_hash(text: str, metadata: Mapping[str, Any] | None = None) -> str:
    """Return a stable SHA-256 hex digest of a text and its (JSON-serialisable) metadata."""
    h = hashlib.sha256(text.encode("utf-8", errors="surrogatepass"))
    if metadata:
        h.update(b"\x00")
        h.update(json.dumps(metadata, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
    return h.hexdigest()


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
    """A span of a document, the unit that is embedded and retrieved.

    ``document.text[start:end] == chunk.text`` always holds.
    """

    doc_id: str
    index: int
    text: str
    start: int
    end: int
    page: int | None = None
    headings: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)


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
        chunk_id: The stable int64 vector id of the chunk.
        doc_id: The document it belongs to.
        text: The chunk text.
        score: The final score the list is sorted by.
        scores: Every score that applied (``dense``, ``bm25``, ``fused``, ``rerank``).
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
