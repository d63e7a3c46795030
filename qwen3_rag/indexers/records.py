"""Record files (.jsonl / .ndjson / .json / .csv): every record is a document.

A BEIR ``corpus.jsonl`` needs no options: ``_id`` is the id and the text is ``title + " " + text``. A bad record
(broken JSON, a CSV row with the wrong number of fields, a missing field) is reported with its line and the
file's other records go on.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qwen3_rag.indexers.file_text import SkipFile, decode_bytes, display_path
from qwen3_rag.types import Document, check_metadata

if TYPE_CHECKING:
    from qwen3_rag.indexers.loaders import LoadReport

_ID_FIELDS = ("_id", "id", "doc_id", "docid")
#: Largest CSV cell read (the csv module's default, 128 KiB, would reject a file holding one long text).
CSV_FIELD_LIMIT = 64 << 20
#: Bad records of one file reported one by one; the rest are counted in one last line.
MAX_RECORD_FAILURES = 100
_TEXT_FIELDS = ("text", "content", "body", "contents", "page_content")


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


#: A record, or why the record at that place is bad.
_Numbered = tuple[int | None, Mapping[str, Any] | ValueError]


def iter_records(path: Path) -> Iterator[_Numbered]:
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


def json_records(path: Path) -> list[Mapping[str, Any]] | None:
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


def load_records(
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
