"""Loading files: formats, encodings, bad files reported without aborting, stable ids, globs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from qwen3_rag.indexers.loaders import (
    LoadReport,
    RecordFields,
    decode_bytes,
    html_to_text,
    iter_documents,
    load_file,
)


def _pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one text line per page (hand-written objects and xref)."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", ""]
    kids = []
    for i, text in enumerate(pages):
        page_no, content_no = 3 + 2 * i, 4 + 2 * i
        kids.append(f"{page_no} 0 R")
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET"
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content_no} 0 R "
            f"/Resources << /Font << /F1 {3 + 2 * len(pages)} 0 R >> >> >>"
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>"
    objects.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = b"%PDF-1.4\n"
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


@pytest.fixture()
def messy_corpus(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("Plain text file.\n\nSecond paragraph.", encoding="utf-8")
    (root / "empty.txt").write_bytes(b"")
    (root / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (root / "latin1.txt").write_bytes("Café crème, naïve façade.".encode("cp1252"))
    (root / "bad-utf8.md").write_bytes(b"# Title\n\nvalid start \xff\xfe broken \xc3 bytes")
    (root / "sub" / "page.html").write_text(
        "<html><head><title>T</title><style>p {color: red}</style><script>var x = 1;</script></head>"
        "<body><h1>Heading</h1><p>Visible &amp; text.</p><noscript>nope</noscript></body></html>"
    )
    (root / "sub" / "code.py").write_text("def f():\n    return 1\n")
    (root / "sub" / "image.png").write_bytes(b"\x89PNG\x00\x00")  # unsupported extension: not even tried
    (root / "doc.pdf").write_bytes(_pdf(["Hello page one", "Second page here"]))
    unreadable = root / "secret.txt"
    unreadable.write_text("cannot read me")
    unreadable.chmod(0)
    os.symlink(root / "does-not-exist.txt", root / "dangling.txt")  # unreadable for every user, root included
    return root


def test_messy_corpus_never_aborts(messy_corpus: Path) -> None:
    report = LoadReport()
    docs = {d.id: d for d in iter_documents([messy_corpus], report=report)}
    assert "docs/a.txt" in docs and docs["docs/a.txt"].text.startswith("Plain text file.")
    assert docs["docs/latin1.txt"].text == "Café crème, naïve façade."
    assert docs["docs/latin1.txt"].metadata["encoding"] == "cp1252"
    assert (
        "valid start" in docs["docs/bad-utf8.md"].text
        and docs["docs/bad-utf8.md"].metadata["format"] == "markdown"
    )
    html = docs["docs/sub/page.html"]
    assert "Visible & text." in html.text and "Heading" in html.text
    assert "var x" not in html.text and "color" not in html.text and "nope" not in html.text
    assert html.metadata["title"] == "T"
    assert docs["docs/sub/code.py"].metadata["language"] == "python"
    pdf = docs["docs/doc.pdf"]
    assert "Hello page one" in pdf.text and "Second page here" in pdf.text
    assert pdf.metadata["page_starts"][1] == pdf.text.index("Second page here")
    skipped = dict(report.skipped)
    assert "empty file" in skipped[str(messy_corpus / "empty.txt")]
    assert "binary" in skipped[str(messy_corpus / "binary.txt")]
    failed = dict(report.failed)
    assert "FileNotFoundError" in failed[str(messy_corpus / "dangling.txt")]
    if os.geteuid() != 0:  # root reads mode-000 files
        assert "PermissionError" in failed[str(messy_corpus / "secret.txt")]
    assert not any("image.png" in d for d in docs)


def test_include_exclude_globs(messy_corpus: Path) -> None:
    ids = {d.id for d in iter_documents([messy_corpus], include=["*.txt"], exclude=["latin*"])}
    assert ids == {"docs/a.txt", "docs/secret.txt"} or ids == {"docs/a.txt"}
    ids = {d.id for d in iter_documents([messy_corpus], include=["sub/*"])}
    # an explicit include reaches any extension; the PNG is then tried and skipped as binary
    assert ids == {"docs/sub/page.html", "docs/sub/code.py"}


def test_beir_jsonl_needs_no_options(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    rows = [
        {"_id": "4983", "title": "Microstructural development", "text": "Alterations of the brain."},
        {"_id": "5836", "title": "", "text": "No title here."},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    docs = list(iter_documents([path]))
    assert [d.id for d in docs] == ["4983", "5836"]
    assert docs[0].text == "Microstructural development Alterations of the brain."
    assert docs[1].text == "No title here."
    assert docs[0].metadata == {"title": "Microstructural development"}
    assert docs[0].source == f"{path}#4983"


def test_records_with_configured_fields(tmp_path: Path) -> None:
    csv_path = tmp_path / "faq.csv"
    csv_path.write_text("key,question,answer,lang\nq1,What?,Because.,en\nq2,Wie?,Darum.,de\n")
    fields = RecordFields(id="key", text=["question", "answer"], metadata=["lang"])
    docs = list(load_file(csv_path, record_fields=fields))
    assert [(d.id, d.text, dict(d.metadata)) for d in docs] == [
        ("q1", "What? Because.", {"lang": "en"}),
        ("q2", "Wie? Darum.", {"lang": "de"}),
    ]
    json_path = tmp_path / "items.json"
    json_path.write_text(json.dumps({"items": [{"id": 1, "content": "one"}, {"id": 2, "content": "two"}]}))
    assert [(d.id, d.text) for d in load_file(json_path)] == [("1", "one"), ("2", "two")]
    config = tmp_path / "tsconfig.json"
    config.write_text(json.dumps({"compilerOptions": {"strict": True}}))
    [doc] = load_file(config)
    assert "strict" in doc.text  # a JSON file that is not a list of records is indexed as text
    with pytest.raises(ValueError, match="no id field 'nope'"):
        list(load_file(csv_path, record_fields=RecordFields(id="nope")))


def test_decode_bytes_fallbacks() -> None:
    assert decode_bytes("héllo".encode("utf-16")) == ("héllo", "utf-16")
    assert decode_bytes(b"\xef\xbb\xbfbom") == ("bom", "utf-8-sig")
    assert decode_bytes(b"\x81\x8d\x8f\x90")[1] == "latin-1"  # not valid cp1252 either
    assert html_to_text("<p>a</p><p>b</p>") == ("", "a\n\nb")


def test_missing_source_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(iter_documents([tmp_path / "nope"]))


def test_globs_match_the_document_id_too(messy_corpus: Path) -> None:
    by_id = {d.id for d in iter_documents([messy_corpus], include=["docs/sub/*.py"])}
    assert by_id == {"docs/sub/code.py"}
    assert "docs/sub/code.py" not in {d.id for d in iter_documents([messy_corpus], exclude=["docs/sub/*"])}
