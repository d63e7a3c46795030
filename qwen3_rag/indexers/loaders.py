"""Turn files and folders into :class:`~qwen3_rag.types.Document` objects, one at a time.

Supported: plain text (.txt .md .rst and friends), HTML (visible text only), PDF (pypdf, page offsets kept
in ``metadata["page_starts"]``), source code by extension, and record files (.jsonl / .json / .csv) where
every record is a document. A BEIR ``corpus.jsonl`` needs no options: ``_id`` is the id and the text is
``title + " " + text``.

How one file becomes text is in :mod:`~qwen3_rag.indexers.file_text`, how a record file becomes documents in
:mod:`~qwen3_rag.indexers.records`; this module walks folders and picks the reader by extension.

Loading never aborts on a bad input: binary or undecodable files are skipped with a warning, files (and single
records of a record file) that fail are recorded in a :class:`LoadReport` with their reason, and the caller reports
them at the end.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen3_rag.indexers.file_text import (  # noqa: F401  (SkipFile, decode_bytes, html_to_text: re-exported)
    SkipFile,
    decode_bytes,
    display_path,
    html_to_text,
    load_pdf,
)
from qwen3_rag.indexers.records import (  # noqa: F401  (MAX_RECORD_FAILURES, RecordFields: re-exported)
    MAX_RECORD_FAILURES,
    RecordFields,
    iter_records,
    json_records,
    load_records,
)
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
        yield from load_records(path, fields, iter_records(path), report)
        return
    if ext == ".json":
        records = json_records(path)
        if records is not None:  # a list of objects; any other JSON file is indexed as text
            yield from load_records(path, fields, ((None, r) for r in records), report)
            return
    if ext == ".pdf":
        yield load_pdf(path, doc_id)
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
