"""Turn files and folders into :class:`~qwen3_rag.types.Document` objects, one at a time.

Supported: plain text (.txt .md .rst and friends), HTML (visible text only), PDF (pypdf, page offsets kept
in ``metadata["page_starts"]``), source code by extension, and record files (.jsonl / .json / .csv) where
every record is a document. A BEIR ``corpus.jsonl`` needs no options: ``_id`` is the id and the text is
``title + " " + text``.

Loading never aborts on a bad file: binary files are skipped with a warning, files that fail are recorded in a
:class:`LoadReport` with their reason, and the caller reports them at the end.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from qwen3_rag.indexers.chunking import PAGE_STARTS_KEY
from qwen3_rag.types import Document

logger = logging.getLogger(__name__)

TEXT_EXTENSIONS = {
    ".txt": "text",
    ".text": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".rst": "rst",
    ".adoc": "asciidoc",
    ".org": "org",
    ".tex": "latex",
}
HTML_EXTENSIONS = {".html", ".htm", ".xhtml"}
RECORD_EXTENSIONS = {".jsonl", ".ndjson", ".json", ".csv"}
CODE_EXTENSIONS = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".tsx": "typescript",
    ".java": "java",
    ".kt": "kotlin",
    ".scala": "scala",
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hpp": "cpp",
    ".cs": "csharp",
    ".go": "go",
    ".rs": "rust",
    ".rb": "ruby",
    ".php": "php",
    ".swift": "swift",
    ".m": "objective-c",
    ".sh": "shell",
    ".bash": "shell",
    ".zsh": "shell",
    ".ps1": "powershell",
    ".sql": "sql",
    ".r": "r",
    ".jl": "julia",
    ".lua": "lua",
    ".pl": "perl",
    ".hs": "haskell",
    ".ml": "ocaml",
    ".ex": "elixir",
    ".erl": "erlang",
    ".clj": "clojure",
    ".dart": "dart",
    ".vue": "vue",
    ".svelte": "svelte",
    ".css": "css",
    ".scss": "scss",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".toml": "toml",
    ".ini": "ini",
    ".cfg": "ini",
    ".xml": "xml",
    ".proto": "protobuf",
    ".graphql": "graphql",
    ".cmake": "cmake",
    ".ipynb": "json",
}
SUPPORTED_EXTENSIONS = (
    set(TEXT_EXTENSIONS) | HTML_EXTENSIONS | RECORD_EXTENSIONS | set(CODE_EXTENSIONS) | {".pdf"}
)
# Folders nobody wants in an index; skipped while walking (a file named explicitly is still read).
_SKIP_DIRS = {
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    "node_modules",
    ".venv",
    "venv",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".tox",
    ".idea",
    ".hypothesis",
}
_ID_FIELDS = ("_id", "id", "doc_id", "docid")
_TEXT_FIELDS = ("text", "content", "body", "contents", "page_content")


class SkipFile(Exception):
    """A file that is deliberately not indexed (binary, empty, unsupported); not an error."""


@dataclass(frozen=True)
class RecordFields:
    """Which fields of a record file hold the id, the text and the metadata.

    Attributes:
        id: The id field; ``None`` tries ``_id``, ``id``, ``doc_id``, ``docid``, then the record number.
        text: The text fields, joined with a space; ``None`` means ``title`` (when present) + ``text`` (or
            ``content``, ``body``, ...), which reads a BEIR corpus as MTEB does.
        metadata: Fields copied into the metadata; ``None`` means every field that is not the id or the text
            (the title is kept too).
    """

    id: str | None = None
    text: Sequence[str] | None = None
    metadata: Sequence[str] | None = None


@dataclass
class LoadReport:
    """What happened to each input that did not become a document."""

    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    files: int = 0

    def skip(self, source: str, reason: str) -> None:
        logger.warning("skipped %s: %s", source, reason)
        self.skipped.append((source, reason))

    def fail(self, source: str, reason: str) -> None:
        logger.warning("failed %s: %s", source, reason)
        self.failed.append((source, reason))


# -- walking
# ------------------------------------------------------------------------------------------------------


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(
        fnmatch.fnmatchcase(rel, p)
        or fnmatch.fnmatchcase(name, p)
        or (p.startswith("**/") and fnmatch.fnmatchcase(rel, p[3:]))
        for p in patterns
    )


def iter_files(
    sources: Iterable[str | os.PathLike[str]],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    report: LoadReport | None = None,
) -> Iterator[tuple[Path, str]]:
    """Yield ``(path, doc_id_base)`` for every file under ``sources``, in a stable (sorted) order.

    A folder is walked recursively; only supported extensions are taken unless ``include`` names others. Globs
    are matched against the path relative to the folder given (``guide/*.md``, ``**/test_*``), against that
    path with the folder's name in front (``docs/guide/*.md``, the document id) and against the file name.
    The id base of a file is its path relative to the parent of the source, in POSIX form
    (``docs/guide/intro.md`` for ``docs``), so ids do not depend on the working directory.

    Raises:
        FileNotFoundError: if a source does not exist.
    """
    report = report if report is not None else LoadReport()
    for src in sources:
        root = Path(src)
        if not root.exists():
            raise FileNotFoundError(f"source {str(src)!r} does not exist")
        if root.is_file():
            if exclude and _matches(root.name, exclude):
                continue
            yield root, root.name
            continue
        base = root.resolve().name or "root"
        for dirpath, dirnames, filenames in os.walk(
            root, onerror=lambda e: report.fail(str(e.filename), _reason(e))
        ):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            for fname in sorted(filenames):
                path = Path(dirpath) / fname
                rel = path.relative_to(root).as_posix()
                if include:
                    if not (_matches(rel, include) or _matches(f"{base}/{rel}", include)):
                        continue
                elif path.suffix.lower() not in SUPPORTED_EXTENSIONS:
                    logger.debug("not indexed (extension): %s", path)
                    continue
                if exclude and (_matches(rel, exclude) or _matches(f"{base}/{rel}", exclude)):
                    continue
                yield path, f"{base}/{rel}"


def iter_documents(
    sources: Iterable[str | os.PathLike[str]],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    record_fields: RecordFields | None = None,
    report: LoadReport | None = None,
) -> Iterator[Document]:
    """Stream the documents of files and folders; problems go to ``report``, never raise.

    Args:
        sources: Files and folders.
        include: Globs a file must match (default: every supported extension).
        exclude: Globs that drop a file.
        record_fields: Field mapping for .jsonl / .json / .csv files.
        report: Collects skipped and failed files.

    Yields:
        Documents, one file (or one record) at a time.
    """
    report = report if report is not None else LoadReport()
    fields = record_fields or RecordFields()
    for path, doc_id in iter_files(sources, include, exclude, report):
        report.files += 1
        try:
            yield from load_file(path, doc_id=doc_id, record_fields=fields)
        except SkipFile as exc:
            report.skip(str(path), str(exc))
        except Exception as exc:  # a bad file must not stop the run
            report.fail(str(path), _reason(exc))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"


# -- reading
# ------------------------------------------------------------------------------------------------------


def load_file(
    path: str | os.PathLike[str], *, doc_id: str | None = None, record_fields: RecordFields | None = None
) -> Iterator[Document]:
    """Read one file into documents (several for a record file).

    Raises:
        SkipFile: for a binary or empty file.
        OSError, ValueError: when the file cannot be read or parsed.
    """
    path = Path(path)
    ext = path.suffix.lower()
    doc_id = doc_id or path.name
    source = str(path)
    if ext in RECORD_EXTENSIONS and ext != ".json":
        yield from _load_records(path, record_fields or RecordFields())
        return
    if ext == ".json":
        records = _json_records(path)
        if records is not None:  # a list of objects; any other JSON file is indexed as text
            yield from _load_records(path, record_fields or RecordFields(), records)
            return
    if ext == ".pdf":
        yield _load_pdf(path, doc_id)
        return
    raw = path.read_bytes()
    if not raw.strip():
        raise SkipFile("empty file")
    text, encoding = decode_bytes(raw)
    meta: dict[str, Any] = {"path": source}
    if encoding != "utf-8":
        meta["encoding"] = encoding
    if ext in HTML_EXTENSIONS:
        title, text = html_to_text(text)
        meta["format"] = "html"
        if title:
            meta["title"] = title
    elif ext in CODE_EXTENSIONS:
        meta["format"] = "code"
        meta["language"] = CODE_EXTENSIONS[ext]
    else:
        meta["format"] = TEXT_EXTENSIONS.get(ext, "text")
    if not text.strip():
        raise SkipFile("no text")
    yield Document(id=doc_id, text=text, source=source, metadata=meta)


def decode_bytes(raw: bytes) -> tuple[str, str]:
    """Decode file bytes: BOMs first, then UTF-8, then cp1252, then latin-1 (which cannot fail).

    Raises:
        SkipFile: for binary content (NUL bytes or many control characters).
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


def _load_pdf(path: Path, doc_id: str) -> Document:
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
        meta["title"] = str(title)
    return Document(id=doc_id, text=text, source=str(path), metadata=meta)


# -- records
# ------------------------------------------------------------------------------------------------------


def _iter_records(path: Path) -> Iterator[Mapping[str, Any]]:
    ext = path.suffix.lower()
    if ext in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8", errors="replace") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"line {lineno}: invalid JSON ({exc.msg})") from exc
                if not isinstance(rec, Mapping):
                    raise ValueError(f"line {lineno}: expected a JSON object, got {type(rec).__name__}")
                yield rec
    else:
        raw = path.read_bytes()
        text, _ = decode_bytes(raw)
        yield from csv.DictReader(io.StringIO(text))


def _json_records(path: Path) -> list[Mapping[str, Any]] | None:
    """The records of a .json file that is a list of objects (or an object holding one such list), else
    None."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError:
            return None
    if isinstance(data, Mapping):
        lists = [v for v in data.values() if isinstance(v, list) and v and isinstance(v[0], Mapping)]
        data = lists[0] if len(lists) == 1 else None
    if isinstance(data, list) and data and all(isinstance(r, Mapping) for r in data):
        return data
    return None


def _load_records(
    path: Path, fields: RecordFields, records: Iterable[Mapping[str, Any]] | None = None
) -> Iterator[Document]:
    n = 0
    for n, rec in enumerate(records if records is not None else _iter_records(path), 1):
        doc = record_to_document(rec, fields, source=str(path), number=n)
        if doc is not None:
            yield doc
    if n == 0:
        raise SkipFile("no records")


def record_to_document(
    record: Mapping[str, Any], fields: RecordFields | None = None, *, source: str = "", number: int = 0
) -> Document | None:
    """Build a document from one record (None when its text is empty).

    Raises:
        ValueError: if a field named in ``fields`` is missing.
    """
    fields = fields or RecordFields()
    if fields.id is not None:
        if fields.id not in record:
            raise ValueError(f"record {number} has no id field {fields.id!r}; fields are {sorted(record)}")
        doc_id = str(record[fields.id])
        id_field: str | None = fields.id
    else:
        id_field = next((f for f in _ID_FIELDS if f in record and record[f] not in (None, "")), None)
        doc_id = str(record[id_field]) if id_field else f"{Path(source).name}#{number}"
    if fields.text is not None:
        missing = [f for f in fields.text if f not in record]
        if missing:
            raise ValueError(
                f"record {doc_id!r} has no text field {missing[0]!r}; fields are {sorted(record)}"
            )
        text_fields = list(fields.text)
        text = " ".join(str(record[f]) for f in text_fields if record[f] not in (None, "")).strip()
    else:
        body = next((f for f in _TEXT_FIELDS if f in record), None)
        if body is None:
            raise ValueError(
                f"record {doc_id!r} has no text field (tried {', '.join(_TEXT_FIELDS)}); "
                "name it with --text-field"
            )
        title = record.get("title")
        text = (f"{title} {record[body] or ''}" if title else str(record[body] or "")).strip()
        text_fields = [body]
    if not text:
        return None
    if fields.metadata is not None:
        meta = {f: record[f] for f in fields.metadata if f in record}
    else:
        meta = {k: v for k, v in record.items() if k != id_field and k not in text_fields}
    meta = {k: v for k, v in meta.items() if v not in (None, "", {}, [])}
    return Document(id=doc_id, text=text, source=f"{source}#{doc_id}" if source else "", metadata=meta)
