"""A document's title and the Markdown heading path of each position: what a chunk carries as its ``headings``
and, with ``chunk_context="title+headings"``, what it is embedded after (:func:`chunk_contexts`). The chunker
itself is :mod:`~qwen3_rag.indexers.chunking`."""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from pathlib import PurePath

from qwen3_rag.types import Chunk, Document

__all__ = ["MAX_CONTEXT_CHARS", "TITLE_KEY", "chunk_contexts", "document_title", "heading_index", "headings_at",
           "is_markdown"]

#: Document metadata key holding its title (the HTML and PDF loaders set it; record files and BEIR corpora keep
#: their ``title`` field under it).
TITLE_KEY = "title"
#: Longest context line in characters (cut at a word boundary): a title or heading path is a hint, not a text.
MAX_CONTEXT_CHARS = 200

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)


def is_markdown(document: Document) -> bool:
    """Whether a document is Markdown: its ``format`` metadata, else its file name."""
    fmt = document.metadata.get("format")
    if fmt is not None:
        return fmt == "markdown"
    return document.source.lower().endswith((".md", ".markdown"))


def document_title(document: Document) -> str:
    """A document's title: its ``title`` metadata (:data:`TITLE_KEY`), else a Markdown document's first heading,
    else the file name of a loaded file (its ``path`` metadata); ``""`` when it has none."""
    title = document.metadata.get(TITLE_KEY)
    if isinstance(title, str) and title.strip():
        return " ".join(title.split())
    if is_markdown(document):
        headings = heading_index(document.text)
        if headings:
            return headings[0][1][-1]
    path = document.metadata.get("path")
    return PurePath(path).name if isinstance(path, str) else ""


def chunk_contexts(document: Document, chunks: Sequence[Chunk]) -> list[str]:
    """The context line of each chunk of ``document``: its title and heading path, ``" > "`` between them, at most
    :data:`MAX_CONTEXT_CHARS` characters; the title is left out of a chunk that begins with it (a whole document,
    the first chunk of a BEIR record or of a Markdown file under its title), and a heading path that repeats the
    title starts after it. ``""`` when there is nothing to add.
    """
    title = document_title(document)
    out = []
    for chunk in chunks:
        path = list(chunk.headings[1:] if chunk.headings[:1] == (title,) else chunk.headings)
        if title and not chunk.text.lstrip("# \t").startswith(title):
            path.insert(0, title)
        line = " > ".join(path)
        if len(line) > MAX_CONTEXT_CHARS:
            cut = line.rfind(" ", 0, MAX_CONTEXT_CHARS)
            line = line[: cut if cut > 0 else MAX_CONTEXT_CHARS].rstrip()
        out.append(line)
    return out


def heading_index(text: str) -> list[tuple[int, tuple[str, ...]]]:
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


def headings_at(index: list[tuple[int, tuple[str, ...]]], starts: list[int], pos: int) -> tuple[str, ...]:
    """The heading path in force at ``pos``, from a :func:`heading_index` and its positions ``starts``."""
    i = bisect.bisect_right(starts, pos) - 1
    return index[i][1] if i >= 0 else ()
