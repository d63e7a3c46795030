"""Documents as the write loop (:class:`~qwen3_rag.pipelines.writing.DocumentWriter`) takes them: what callers
pass made into a :class:`~qwen3_rag.Document` (:func:`as_document`), each document and vector checked before
anything of it is written (:func:`checked`, :func:`check_vectors`, :class:`DocumentError`), and a document as its
own single chunk (:func:`whole_document`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from qwen3_rag.types import Chunk, Document, check_metadata, line_spans

__all__ = ["DocumentError", "as_document", "check_vectors", "checked", "whole_document"]


class DocumentError(ValueError):
    """One document cannot be written; nothing of the batch it is in was.

    Attributes:
        document_id: The document's id (an adapter names the item it came from).
        reason: What is wrong with it, without its name.
    """

    def __init__(self, document_id: str, reason: str) -> None:
        super().__init__(f"document {document_id!r}: {reason}")
        self.document_id = document_id
        self.reason = reason


def check_vectors(parts: Sequence[tuple[Document, Sequence[Chunk]]], vectors: np.ndarray) -> None:
    """Refuse a vector with NaN or infinite values or no direction (all zeros), naming its document and chunk.

    Raises:
        DocumentError: for the first such vector.
    """
    if not len(vectors):
        return
    rows = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
    finite = np.asarray(np.isfinite(rows).all(axis=1))
    bad = ~finite | ~(rows != 0).any(axis=1)
    if not bad.any():
        return
    row = int(np.argmax(bad))
    chunk = [(doc, c) for doc, chunks in parts for c in chunks][row]
    what = "is all zeros (it has no direction)" if finite[row] else "holds NaN or infinite values"
    raise DocumentError(chunk[0].id, f"the vector of its chunk {chunk[1].index} ({chunk[1].text[:60]!r}) {what}; "
                                     "check the embedding model's output for this text")


def as_document(item: Document | str | dict[str, Any]) -> Document:
    """A :class:`~qwen3_rag.Document` from a Document, a plain string (its id is a hash of the text) or a dict
    with ``text`` and optionally ``id``, ``source``, ``metadata``.

    Raises:
        TypeError: for anything else.
    """
    from qwen3_rag.types import content_hash

    if isinstance(item, Document):
        return item
    if isinstance(item, str):
        return Document(id=content_hash(item)[:32], text=item)
    if isinstance(item, dict) and isinstance(item.get("text"), str):
        meta = dict(item.get("metadata") or {})
        return Document(id=str(item.get("id") or content_hash(item["text"], meta)[:32]), text=item["text"],
                        source=str(item.get("source", "")), metadata=meta)
    raise TypeError(f"expected a Document, a str or a dict with a 'text' string, got {type(item).__name__}")


def checked(document: Document) -> Document:
    """The document with its metadata as plain JSON (:func:`~qwen3_rag.types.check_metadata`), after checking that
    its id and text are valid Unicode.

    Raises:
        ValueError: naming the document and what is wrong.
    """
    for what, text in (("id", document.id), ("text", document.text), ("source", document.source)):
        if not isinstance(text, str):
            raise TypeError(f"document {document.id!r}: its {what} is a {type(text).__name__}, expected a str")
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"document {document.id!r}: its {what} holds {text[exc.start]!r} at {exc.start}, "
                                 "which is not Unicode text (a lone surrogate); decode the source correctly") from None
    metadata = check_metadata(document.metadata, f"document {document.id!r}")
    return document if metadata == document.metadata else dataclasses.replace(document, metadata=metadata)


def whole_document(doc: Document) -> tuple[Document, list[Chunk]]:
    """A document with all of itself as its one chunk (framework stores keep what the framework split)."""
    (first, last), = line_spans(doc.text, [(0, len(doc.text))])
    return doc, [Chunk(doc_id=doc.id, index=0, text=doc.text, start=0, end=len(doc.text), metadata=doc.metadata,
                       start_line=first, end_line=last)]
