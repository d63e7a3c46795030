"""The text of one file: its name as printable text, its bytes decoded, an HTML page's visible text, a PDF's pages.

:func:`decode_bytes` decides whether content is text at all (and in which encoding); anything else is refused with
:class:`SkipFile`, which loading reports as skipped rather than failed.
"""

from __future__ import annotations

import logging
import os
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from qwen3_rag.indexers.chunking import PAGE_STARTS_KEY
from qwen3_rag.types import Document

logger = logging.getLogger(__name__)

#: Non-UTF-8 content is read as cp1252 (latin-1 for the 5 bytes cp1252 leaves undefined) only when at most this
#: share of its bytes is above 0x7F: legacy Western text has a few accented letters, while random or compressed
#: bytes have about half, and text in another legacy encoding (cp1251, Shift-JIS, GBK) would become mojibake.
LEGACY_HIGH_BYTES = 0.3


class SkipFile(Exception):
    """A file that is deliberately not indexed (binary, empty, unsupported); not an error."""


def display_path(path: str | os.PathLike[str]) -> str:
    """A path as text that can always be printed and stored: bytes of a name that are not UTF-8 become ``\\xNN``.

    On POSIX a file name is bytes, and Python holds the bytes that are not UTF-8 as lone surrogates, which no
    UTF-8 writer (a terminal, SQLite, JSON) accepts.
    """
    text = os.fspath(path)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte (Windows names)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def decode_bytes(raw: bytes) -> tuple[str, str]:
    """Decode file bytes into text, or refuse content that is not text.

    In order: a BOM (UTF-8, UTF-16, UTF-32) decides; NUL bytes or many control characters mean binary; valid UTF-8
    is text in any language; UTF-8 with a few broken bytes (at most one per ten good multi-byte characters) is
    read with U+FFFD in their place (encoding ``"utf-8-lossy"``); other bytes are legacy Western text, read as
    cp1252 (``"latin-1"`` where cp1252 leaves a byte undefined), but only when at most :data:`LEGACY_HIGH_BYTES`
    of them are above 0x7F. Anything else (random or compressed bytes, text in another legacy encoding such as
    cp1251 or Shift-JIS) is skipped: convert such text to UTF-8 to index it.

    Returns:
        ``(text, encoding)``.

    Raises:
        SkipFile: for binary or undecodable content, with the reason.
    """
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8", errors="replace"), "utf-8-sig"
    for bom, enc in (
        (b"\xff\xfe\x00\x00", "utf-32"),
        (b"\x00\x00\xfe\xff", "utf-32"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    ):
        if raw.startswith(bom):
            return raw.decode(enc, errors="replace"), enc
    head = raw[:8192]
    if b"\x00" in head:
        raise SkipFile("binary file (contains NUL bytes)")
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13, 27))
    if controls > max(8, len(head) // 20):
        raise SkipFile("binary file (control characters)")
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    lossy = raw.decode("utf-8", errors="replace")
    replaced = lossy.count("\ufffd") - raw.count("\ufffd".encode())
    multibyte = len(lossy) - len(lossy.encode("ascii", errors="ignore")) - replaced
    if replaced * 10 <= multibyte:
        logger.info("UTF-8 with %d undecodable bytes, replaced by U+FFFD", replaced)
        return lossy, "utf-8-lossy"
    high = len(raw.translate(None, bytes(range(128))))  # the bytes above 0x7F
    if high > LEGACY_HIGH_BYTES * len(raw):
        raise SkipFile(
            f"not text: not UTF-8, and {high / len(raw):.0%} of the bytes are above 0x7F (binary data, or text in a "
            "legacy encoding other than cp1252/latin-1); convert text to UTF-8 to index it"
        )
    try:
        text = raw.decode("cp1252")
        logger.info("not UTF-8, read as cp1252")
        return text, "cp1252"
    except UnicodeDecodeError:
        return raw.decode("latin-1"), "latin-1"


class _VisibleText(HTMLParser):
    _HIDDEN = {"script", "style", "noscript", "template", "head", "svg", "iframe", "object"}
    _BLOCK = {
        "p",
        "div",
        "br",
        "li",
        "ul",
        "ol",
        "tr",
        "table",
        "section",
        "article",
        "header",
        "footer",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "pre",
        "blockquote",
        "hr",
        "dd",
        "dt",
        "nav",
        "aside",
        "main",
        "figure",
        "figcaption",
        "form",
        "td",
        "th",
    }

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._hidden = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        if tag in self._HIDDEN:
            self._hidden += 1
        elif tag in self._BLOCK:
            self.parts.append("\n\n" if tag in ("p", "h1", "h2", "h3", "h4", "h5", "h6", "section") else "\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._hidden:
            self.parts.append(data)


def html_to_text(html: str) -> tuple[str, str]:
    """Visible text of an HTML page (no script, style or head) and its title."""
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    text: list[str] = []
    blank = 0
    for line in lines:
        if line:
            if blank and text:
                text.append("")
            text.append(line)
            blank = 0
        else:
            blank += 1
    return " ".join("".join(parser.title).split()), "\n".join(text)


def load_pdf(path: Path, doc_id: str) -> Document:
    import pypdf

    with open(path, "rb") as fh:
        head = fh.read(5)
    if head != b"%PDF-":
        raise ValueError("not a PDF file (no %PDF- header)")
    reader = pypdf.PdfReader(str(path))
    if reader.is_encrypted:
        try:
            reader.decrypt("")
        except Exception as exc:
            raise ValueError(f"encrypted PDF ({exc})") from exc
    texts, starts, pos = [], [], 0
    for page in reader.pages:
        page_text = (page.extract_text() or "").strip()
        starts.append(pos)
        texts.append(page_text)
        pos += len(page_text) + 2
    text = "\n\n".join(texts)
    if not text.strip():
        raise SkipFile("PDF without extractable text (scanned? run OCR first)")
    meta: dict[str, Any] = {"path": str(path), "format": "pdf", "pages": len(texts), PAGE_STARTS_KEY: starts}
    title = reader.metadata.get("/Title") if reader.metadata else None
    if title:
        meta["title"] = str(title).replace("\x00", "")  # metadata text holds no NUL (types.check_metadata)
    return Document(id=doc_id, text=text, source=str(path), metadata=meta)
