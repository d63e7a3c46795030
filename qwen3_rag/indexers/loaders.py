"""Turn files and folders into :class:`~qwen3_rag.types.Document` objects, one at a time.

Supported: plain text (.txt .md .rst and friends), HTML (visible text only), PDF (pypdf, page offsets kept
in ``metadata["page_starts"]``), source code by extension, and record files (.jsonl / .json / .csv) where
every record is a document. A BEIR ``corpus.jsonl`` needs no options: ``_id`` is the id and the text is
``title + " " + text``.

Loading never aborts on a bad input: binary or undecodable files are skipped with a warning, files (and single
records of a record file) that fail are recorded in a :class:`LoadReport` with their reason, and the caller reports
them at the end.
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
from qwen3_rag.types import Document, check_metadata

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
#: Non-UTF-8 content is read as cp1252 (latin-1 for the 5 bytes cp1252 leaves undefined) only when at most this
#: share of its bytes is above 0x7F: legacy Western text has a few accented letters, while random or compressed
#: bytes have about half, and text in another legacy encoding (cp1251, Shift-JIS, GBK) would become mojibake.
LEGACY_HIGH_BYTES = 0.3
#: Largest CSV cell read (the csv module's default, 128 KiB, would reject a file holding one long text).
CSV_FIELD_LIMIT = 64 << 20
#: Bad records of one file reported one by one; the rest are counted in one last line.
MAX_RECORD_FAILURES = 100
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
    """What happened to each input that did not become a document.

    Attributes:
        skipped: ``(source, reason)`` of inputs deliberately not indexed (binary, empty, a symlink out of the tree).
        failed: ``(source, reason)`` of inputs that could not be read. The source is always the file; a bad record
            of a record file is one entry whose reason starts with its place, ``line 7: ...`` (``record 7: ...``
            in a ``.json`` list).
        files: Files tried.
    """

    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    files: int = 0

    def skip(self, source: str, reason: str) -> None:
        logger.warning("skipped %s: %s", source, reason)
        self.skipped.append((source, reason))

    def fail(self, source: str, reason: str) -> None:
        logger.warning("failed %s: %s", source, reason)
        self.failed.append((source, reason))


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


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
    *,
    follow_links: bool = False,
) -> Iterator[tuple[Path, str]]:
    """Yield ``(path, doc_id_base)`` for every file under ``sources``, in a stable (sorted) order.

    A folder is walked recursively; only supported extensions are taken unless ``include`` names others. Globs
    are matched against the path relative to the folder given (``guide/*.md``, ``**/test_*``), against that
    path with the folder's name in front (``docs/guide/*.md``, the document id) and against the file name.
    The id base of a file is its path relative to the parent of the source, in POSIX form
    (``docs/guide/intro.md`` for ``docs``), so ids do not depend on the working directory.

    Symbolic links: a source named explicitly is always followed. Inside a folder, by default, a link to a file
    in the same tree is read, a link to a folder in the tree is not walked (its files are indexed under their own
    path), and a link whose target is outside the tree (or missing outside it) is skipped with a reason in
    ``report``. ``follow_links=True`` (like ``rsync -L`` or ``rg --follow``) follows every link, files and
    folders, wherever they point; each folder is walked once per source, so link loops end.

    Raises:
        FileNotFoundError: if a source does not exist.
    """
    report = report if report is not None else LoadReport()
    for src in sources:
        root = Path(src)
        if not root.exists():
            raise FileNotFoundError(f"source {display_path(src)!r} does not exist")
        if root.is_file():
            if exclude and _matches(root.name, exclude):
                continue
            yield root, root.name
            continue
        base = root.resolve().name or "root"
        for path in _walk(root, follow_links, report):
            rel = path.relative_to(root).as_posix()
            if include:
                if not (_matches(rel, include) or _matches(f"{base}/{rel}", include)):
                    continue
            elif path.suffix.lower() not in SUPPORTED_EXTENSIONS:
                logger.debug("not indexed (extension): %s", display_path(path))
                continue
            if exclude and (_matches(rel, exclude) or _matches(f"{base}/{rel}", exclude)):
                continue
            yield path, f"{base}/{rel}"


def _walk(root: Path, follow_links: bool, report: LoadReport) -> Iterator[Path]:
    """Every file under ``root`` (sorted), by the symlink rules of :func:`iter_files`."""
    tree = root.resolve()
    walked: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(
        root, followlinks=follow_links, onerror=lambda e: report.fail(display_path(e.filename or root), _reason(e))
    ):
        here = Path(dirpath)
        if follow_links:
            st = here.stat()
            if (st.st_dev, st.st_ino) in walked:
                report.skip(display_path(here), "folder already walked (a symlink loop, or a second link to it)")
                dirnames[:] = []
                continue
            walked.add((st.st_dev, st.st_ino))
        dirnames[:] = [
            d for d in sorted(dirnames)
            if d not in _SKIP_DIRS and _keep_link(here / d, tree, follow_links, report, folder=True)
        ]
        yield from (here / f for f in sorted(filenames) if _keep_link(here / f, tree, follow_links, report))


def _keep_link(path: Path, tree: Path, follow_links: bool, report: LoadReport, folder: bool = False) -> bool:
    """Whether the walk takes ``path``: anything that is not a symlink, and links by the rules of
    :func:`iter_files`."""
    if follow_links or not path.is_symlink():
        return True
    try:
        target = path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop on Python < 3.13
        report.skip(display_path(path), "symlink loop")
        return False
    if not target.is_relative_to(tree):
        report.skip(
            display_path(path),
            f"symlink to {display_path(target)!r}, outside {display_path(tree)!r}; "
            "follow_links=True (--follow-links) follows it",
        )
        return False
    if folder:
        logger.debug("not walked (a symlink to a folder of the same tree): %s", display_path(path))
        return False
    return True


def iter_documents(
    sources: Iterable[str | os.PathLike[str]],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    record_fields: RecordFields | None = None,
    report: LoadReport | None = None,
    follow_links: bool = False,
) -> Iterator[Document]:
    """Stream the documents of files and folders; problems go to ``report``, never raise.

    Args:
        sources: Files and folders.
        include: Globs a file must match (default: every supported extension).
        exclude: Globs that drop a file.
        record_fields: Field mapping for .jsonl / .json / .csv files.
        report: Collects skipped and failed files (and each failed record of a record file, with its line).
        follow_links: Follow symbolic links that leave a folder given in ``sources`` (and links to folders);
            by default they are skipped with a reason (see :func:`iter_files`).

    Yields:
        Documents, one file (or one record) at a time. A file whose name (or path) is not valid UTF-8 is a failed
        source, named with its undecodable bytes as ``\\xNN``: ids and sources are stored as UTF-8 text.

    Raises:
        FileNotFoundError: if a source does not exist.
    """
    report = report if report is not None else LoadReport()
    for path, doc_id in iter_files(sources, include, exclude, report, follow_links=follow_links):
        yield from load_listed(path, doc_id, record_fields=record_fields, report=report)


def load_listed(path: Path, doc_id: str, *, record_fields: RecordFields | None = None,
                report: LoadReport) -> Iterator[Document]:
    """The documents of one file that :func:`iter_files` listed (with its id base); problems go to ``report``, never
    raise. :func:`iter_documents` is this over the listing; distributed ingestion lists on the driver and loads
    each file on a worker."""
    report.files += 1
    source = display_path(path)
    if not (_is_utf8(doc_id) and _is_utf8(str(path))):
        report.fail(source, "the file name is not valid UTF-8; rename it (e.g. `convmv -f latin1 -t utf8`)")
        return
    try:
        yield from load_file(path, doc_id=doc_id, record_fields=record_fields or RecordFields(), report=report)
    except SkipFile as exc:
        report.skip(source, str(exc))
    except Exception as exc:  # a bad file must not stop the run
        report.fail(source, _reason(exc))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"


# -- reading
# ------------------------------------------------------------------------------------------------------


def load_file(
    path: str | os.PathLike[str],
    *,
    doc_id: str | None = None,
    record_fields: RecordFields | None = None,
    report: LoadReport | None = None,
) -> Iterator[Document]:
    """Read one file into documents (several for a record file).

    Args:
        path: The file.
        doc_id: Its document id (default: the file name); record files take their ids from the records.
        record_fields: Field mapping for record files.
        report: Where a bad record of a record file (a broken JSON line, a CSV row with the wrong number of
            fields, a missing field) is recorded with its line, the file's other records going on; without one
            the first bad record raises.

    Raises:
        SkipFile: for a binary, undecodable or empty file.
        OSError, ValueError: when the file cannot be read or parsed (or, without ``report``, a record is bad).
    """
    path = Path(path)
    ext = path.suffix.lower()
    doc_id = doc_id or path.name
    source = str(path)
    fields = record_fields or RecordFields()
    if ext in RECORD_EXTENSIONS and ext != ".json":
        yield from _load_records(path, fields, _iter_records(path), report)
        return
    if ext == ".json":
        records = _json_records(path)
        if records is not None:  # a list of objects; any other JSON file is indexed as text
            yield from _load_records(path, fields, ((None, r) for r in records), report)
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
        meta["title"] = str(title).replace("\x00", "")  # metadata text holds no NUL (types.check_metadata)
    return Document(id=doc_id, text=text, source=str(path), metadata=meta)


# -- records
# ------------------------------------------------------------------------------------------------------


#: A record, or why the record at that place is bad.
_Numbered = tuple[int | None, Mapping[str, Any] | ValueError]


def _iter_records(path: Path) -> Iterator[_Numbered]:
    """``(line, record)`` for each record of a .jsonl / .ndjson / .csv file; a bad one comes as a ValueError."""
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8", errors="replace") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    yield lineno, _json_line(line)
    else:
        text, _ = decode_bytes(path.read_bytes())
        yield from _csv_records(text)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (no NaN or Infinity in metadata)")


def _json_line(line: str) -> Mapping[str, Any] | ValueError:
    try:
        rec = json.loads(line, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        return ValueError(f"invalid JSON ({exc.msg} at column {exc.colno})")
    except ValueError as exc:
        return exc
    except RecursionError:
        return ValueError("invalid JSON (nested too deeply)")
    if not isinstance(rec, Mapping):
        return ValueError(f"expected a JSON object, got {type(rec).__name__}")
    return rec


def _csv_records(text: str) -> Iterator[_Numbered]:
    """The rows of a CSV text as dicts keyed by its header, each with the line it starts on."""
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)  # process-wide; only ever raised
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    start = 1
    try:
        for row in reader:
            line, start = start, reader.line_num + 1
            if not row:
                continue
            if header is None:
                header = row
            elif len(row) != len(header):
                yield line, ValueError(f"{len(row)} fields, the header has {len(header)}: {row!r:.120}")
            else:
                yield line, dict(zip(header, row, strict=True))
    except csv.Error as exc:
        yield start, ValueError(f"unreadable CSV ({exc}); the rest of the file is not read")


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
    path: Path, fields: RecordFields, records: Iterable[_Numbered], report: LoadReport | None
) -> Iterator[Document]:
    bad = _BadRecords(path, report)
    n = 0
    for n, (line, rec) in enumerate(records, 1):
        try:
            if isinstance(rec, ValueError):
                raise rec
            doc = record_to_document(rec, fields, source=str(path), number=n)
        except ValueError as exc:
            bad.add(f"line {line}" if line is not None else f"record {n}", exc)
            continue
        if doc is not None:
            yield doc
    bad.close()
    if n == 0:
        raise SkipFile("no records")


class _BadRecords:
    """The bad records of one file: each reported (up to :data:`MAX_RECORD_FAILURES`), or raised without a
    report."""

    def __init__(self, path: Path, report: LoadReport | None) -> None:
        self.file = display_path(path)
        self.report = report
        self.count = 0

    def add(self, where: str, exc: ValueError) -> None:
        if self.report is None:
            raise ValueError(f"{self.file}, {where}: {exc}") from exc
        self.count += 1
        if self.count <= MAX_RECORD_FAILURES:
            self.report.fail(self.file, f"{where}: {exc}")

    def close(self) -> None:
        if self.report is not None and self.count > MAX_RECORD_FAILURES:
            self.report.fail(self.file, f"{self.count - MAX_RECORD_FAILURES} more bad records (not listed)")


def record_to_document(
    record: Mapping[str, Any], fields: RecordFields | None = None, *, source: str = "", number: int = 0
) -> Document | None:
    """Build a document from one record (None when its text is empty).

    Raises:
        ValueError: if a field named in ``fields`` is missing, or the metadata is not plain JSON
            (:func:`~qwen3_rag.types.check_metadata`).
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
    meta = check_metadata(meta, f"record {doc_id!r}")
    return Document(id=doc_id, text=text, source=f"{source}#{doc_id}" if source else "", metadata=meta)
