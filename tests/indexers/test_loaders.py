"""Loading files: formats, encodings, bad files reported without aborting, stable ids, globs."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwen3_rag.indexers.loaders import (
    MAX_RECORD_FAILURES,
    LoadReport,
    RecordFields,
    SkipFile,
    decode_bytes,
    display_path,
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
    assert decode_bytes(b"Caf\x81 au lait, cr\x8fme")[1] == "latin-1"  # not valid cp1252 either
    assert html_to_text("<p>a</p><p>b</p>") == ("", "a\n\nb")


def test_missing_source_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(iter_documents([tmp_path / "nope"]))


def test_globs_match_the_document_id_too(messy_corpus: Path) -> None:
    by_id = {d.id for d in iter_documents([messy_corpus], include=["docs/sub/*.py"])}
    assert by_id == {"docs/sub/code.py"}
    assert "docs/sub/code.py" not in {d.id for d in iter_documents([messy_corpus], exclude=["docs/sub/*"])}


# -- one bad input is one failure, named; the run goes on


def test_a_file_name_that_is_not_utf8_is_one_failed_source(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    for i in range(3):
        (root / f"good{i}.txt").write_text(f"good file {i}")
    bad_dir = os.fsencode(root) + b"/caf\xe9"
    os.mkdir(bad_dir)
    for name in (os.fsencode(root) + b"/caf\xe9.txt", bad_dir + b"/inside.txt"):
        with open(name, "wb") as fh:
            fh.write(b"text in a file with a Latin-1 name")
    report = LoadReport()
    ids = sorted(d.id for d in iter_documents([root], report=report))
    assert ids == ["docs/good0.txt", "docs/good1.txt", "docs/good2.txt"]
    failed = dict(report.failed)
    assert set(failed) == {f"{root}/caf\\xe9.txt", f"{root}/caf\\xe9/inside.txt"}  # escaped, printable
    assert all("not valid UTF-8" in reason for reason in failed.values())
    assert report.files == 5


def test_display_path_escapes_undecodable_bytes() -> None:
    assert display_path(os.fsdecode(b"/x/caf\xe9.txt")) == "/x/caf\\xe9.txt"
    assert display_path("/x/café.txt") == "/x/café.txt"
    assert display_path("/x/\ud800.txt") == "/x/\\ud800.txt"  # a surrogate that is not an escaped byte


def test_jsonl_keeps_every_good_record_and_names_each_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"_id": f"d{i}", "text": f"record {i}"}) for i in range(10)]
    lines[2] = '{"_id": "broken", "text": '  # cut short
    lines[5] = "[1, 2, 3]"  # not an object
    lines[7] = '{"_id": "nan", "text": "t", "score": NaN}'  # not JSON, and would poison every filter
    path.write_text("\n".join(lines) + "\n")
    report = LoadReport()
    ids = [d.id for d in iter_documents([path], report=report)]
    assert ids == ["d0", "d1", "d3", "d4", "d6", "d8", "d9"]
    # one failure per bad line, named by the file (what --prune protects) and the line
    assert [s for s, _ in report.failed] == [str(path)] * 3
    reasons = [r for _, r in report.failed]
    assert reasons[0].startswith("line 3: invalid JSON")
    assert reasons[1] == "line 6: expected a JSON object, got list"
    assert reasons[2] == "line 8: NaN is not JSON (no NaN or Infinity in metadata)"
    # without a report the first bad record raises, naming the file and the line
    with pytest.raises(ValueError, match=r"corpus\.jsonl, line 3: invalid JSON"):
        list(load_file(path))


def test_record_metadata_must_be_plain_json(tmp_path: Path) -> None:
    path = tmp_path / "items.json"
    path.write_text('[{"id": 1, "text": "a", "year": NaN}, {"id": 2, "text": "b", "n": 99999999999999999999},'
                    ' {"id": 3, "text": "c", "year": 2020}]')
    report = LoadReport()
    assert [d.id for d in iter_documents([path], report=report)] == ["3"]
    [(source1, reason1), (source2, reason2)] = report.failed
    assert source1 == source2 == str(path)
    assert reason1.startswith("record 1: record '1': metadata['year'] = nan") and "finite" in reason1
    assert reason2.startswith("record 2: ") and "64-bit" in reason2


def test_csv_rows_with_the_wrong_number_of_fields_fail_alone(tmp_path: Path) -> None:
    path = tmp_path / "faq.csv"
    path.write_text(
        "id,text,lang\n"
        "a,first,en\n"
        "b,extra field,en,oops\n"  # line 3
        'c,"a cell over\ntwo lines",de\n'  # lines 4-5
        "d,too few\n"  # line 6
        "\n"
        "e,last,fr\n"
    )
    report = LoadReport()
    docs = list(iter_documents([path], report=report))
    assert [(d.id, d.text, dict(d.metadata)) for d in docs] == [
        ("a", "first", {"lang": "en"}),
        ("c", "a cell over\ntwo lines", {"lang": "de"}),
        ("e", "last", {"lang": "fr"}),
    ]
    assert [(s, r.split(" [")[0]) for s, r in report.failed] == [
        (str(path), "line 3: 4 fields, the header has 3:"),
        (str(path), "line 6: 2 fields, the header has 3:"),
    ]


def test_a_csv_cell_over_128k_is_read(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    long_text = "word " * 60_000  # 300 KB, over the csv module's default field limit
    path.write_text(f'id,text\nlong,"{long_text}"\nshort,hi\n')
    report = LoadReport()
    docs = list(iter_documents([path], report=report))
    assert [d.id for d in docs] == ["long", "short"] and len(docs[0].text) == len(long_text.strip())
    assert not report.failed


def test_many_bad_records_are_listed_up_to_a_limit(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("not json\n" * (MAX_RECORD_FAILURES + 5) + '{"text": "the one good record"}\n')
    report = LoadReport()
    assert [d.text for d in iter_documents([path], report=report)] == ["the one good record"]
    assert len(report.failed) == MAX_RECORD_FAILURES + 1
    assert report.failed[-1] == (str(path), "5 more bad records (not listed)")


# -- undecodable content is skipped with a reason; text in any language is kept


def test_random_high_bytes_are_skipped_not_indexed(tmp_path: Path) -> None:
    noise = tmp_path / "noise.txt"
    noise.write_bytes(bytes(b | 0x80 for b in random.Random(0).randbytes(20_000)))
    report = LoadReport()
    assert list(iter_documents([noise], report=report)) == []
    [(source, reason)] = report.skipped
    assert source == str(noise) and "not text" in reason and "convert text to UTF-8" in reason


@pytest.mark.parametrize(
    ("raw", "text", "encoding"),
    [
        ("北京是中国的首都。Москва — столица России. القاهرة 🙂".encode(), None, "utf-8"),
        ("Café crème, naïve façade.".encode("cp1252"), "Café crème, naïve façade.", "cp1252"),
        # UTF-8 with one damaged byte stays UTF-8 (U+FFFD in its place), not cp1252 mojibake
        ("北京是中国的首都。".encode() + b"\xff" + "上海。".encode(), "北京是中国的首都。\ufffd上海。", "utf-8-lossy"),
    ],
)
def test_text_is_kept(raw: bytes, text: str | None, encoding: str) -> None:
    assert decode_bytes(raw) == (text if text is not None else raw.decode(), encoding)


def test_other_legacy_encodings_are_skipped_with_advice() -> None:
    with pytest.raises(SkipFile, match="legacy encoding"):
        decode_bytes("Москва — столица России, крупнейший город страны.".encode("cp1251"))


@settings(max_examples=200, deadline=None)
@given(text=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1))
def test_any_utf8_text_decodes_exactly(text: str) -> None:
    assert decode_bytes(text.encode()) == (text, "utf-8")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=400), ext=st.sampled_from([".txt", ".md", ".html", ".jsonl", ".csv", ".json"]))
def test_any_bytes_never_stop_the_run(tmp_path: Path, raw: bytes, ext: str) -> None:
    path = tmp_path / f"f{ext}"
    path.write_bytes(raw)
    report = LoadReport()
    docs = list(iter_documents([path], report=report))
    for doc in docs:
        doc.text.encode("utf-8")  # always storable text
        json.dumps(dict(doc.metadata), allow_nan=False)
    assert len(report.skipped) + len(report.failed) + len(docs) >= 1
    assert all(source.startswith(str(path)) for source, _ in report.failed + report.skipped)


# -- symbolic links


@pytest.fixture()
def linked_tree(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (outside / "secret.txt").write_text("a file outside the tree")
    (outside / "deep" / "more.txt").write_text("a folder outside the tree")
    root = tmp_path / "docs"
    (root / "real").mkdir(parents=True)
    (root / "real" / "a.txt").write_text("inside the tree")
    os.symlink(outside / "secret.txt", root / "passwd.txt")  # a file outside
    os.symlink(outside / "deep", root / "elsewhere")  # a folder outside
    os.symlink(root / "real" / "a.txt", root / "alias.txt")  # a file inside
    os.symlink(root / "real", root / "real-again")  # a folder inside
    os.symlink(root, root / "real" / "loop")  # back to the top: a loop
    os.symlink(tmp_path / "gone.txt", root / "dangling.txt")  # missing, outside
    os.symlink(root / "loop-b.txt", root / "loop-a.txt")  # two file links pointing at each other
    os.symlink(root / "loop-a.txt", root / "loop-b.txt")
    return root


def test_links_out_of_the_tree_are_skipped_by_default(linked_tree: Path) -> None:
    report = LoadReport()
    ids = sorted(d.id for d in iter_documents([linked_tree], report=report))
    assert ids == ["docs/alias.txt", "docs/real/a.txt"]
    skipped = dict(report.skipped)
    assert [skipped.pop(str(linked_tree / n)) for n in ("loop-a.txt", "loop-b.txt")] == ["symlink loop"] * 2
    assert set(skipped) == {str(linked_tree / n) for n in ("passwd.txt", "elsewhere", "dangling.txt")}
    assert all("outside" in r and "follow_links=True (--follow-links)" in r for r in skipped.values())
    assert not report.failed


def test_follow_links_follows_every_link_and_ends_loops(linked_tree: Path) -> None:
    report = LoadReport()
    docs = {d.id: d.text for d in iter_documents([linked_tree], report=report, follow_links=True)}
    assert docs == {
        "docs/alias.txt": "inside the tree",
        "docs/elsewhere/more.txt": "a folder outside the tree",
        "docs/passwd.txt": "a file outside the tree",
        "docs/real/a.txt": "inside the tree",
    }
    # each folder is walked once: the loop back to the top, and the second way into real/, end there
    assert dict(report.skipped).keys() == {str(linked_tree / "real" / "loop"), str(linked_tree / "real-again")}
    assert all("already walked" in r for _, r in report.skipped)
    failed = dict(report.failed)  # a missing target and a file link loop fail
    assert set(failed) == {str(linked_tree / n) for n in ("dangling.txt", "loop-a.txt", "loop-b.txt")}
    assert "Too many levels of symbolic links" in failed[str(linked_tree / "loop-a.txt")]


def test_a_source_named_explicitly_is_followed(linked_tree: Path) -> None:
    assert [d.text for d in iter_documents([linked_tree / "passwd.txt"])] == ["a file outside the tree"]
    assert [d.text for d in iter_documents([linked_tree / "elsewhere"])] == ["a folder outside the tree"]
