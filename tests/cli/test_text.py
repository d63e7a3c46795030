"""Human-readable CLI output shows control characters as escapes: a document or a file name cannot drive the
terminal; --json stays exact. Also the CLI's small argument checks from the reliability probes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen3_rag import Index, ingest_documents
from qwen3_rag.cli import main
from qwen3_rag.cli._text import printable
from qwen3_rag.cli.query import parse_filters
from qwen3_rag.types import Document

TITLE = "\x1b]0;pwned\x07"  # sets the terminal window's title
CLEAR = "\x1b[2J\x1b[H"  # clears the screen
TERMINAL_ACTS_ON = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"a{TITLE}b", "a\\x1b]0;pwned\\x07b"),
        (CLEAR, "\\x1b[2J\\x1b[H"),
        ("csi\x9b31m", "csi\\x9b31m"),
        ("evil\u202etxt.exe", "evil\\u202etxt.exe"),
        ("a\tb\nc\rd\x7f", "a\\tb\\nc\\rd\\x7f"),
        ("caf\udce9", "caf\\udce9"),
        ("plain text, café, 北京, 🙂", "plain text, café, 北京, 🙂"),
    ],
)
def test_printable_shows_controls_as_escapes(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_multiline_keeps_tabs_and_newlines() -> None:
    assert printable("a\tb\nc\x1b", multiline=True) == "a\tb\nc\\x1b"


@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_nothing_a_terminal_acts_on_survives(text: str) -> None:
    out = printable(text)
    assert not TERMINAL_ACTS_ON.search(out) and "\n" not in out and "\t" not in out
    out.encode("utf-8")  # printable on any UTF-8 terminal
    assert printable(text, multiline=True).count("\n") == text.count("\n")


@pytest.fixture(scope="module")
def hostile_index(tmp_path_factory: pytest.TempPathFactory, minilm_embedder: Any) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "index"
    with Index.create(path, minilm_embedder, chunk_size=0) as index:
        ingest_documents([Document(id=f"cats{CLEAR}.txt", text=f"Cats purr when happy.{TITLE} Then{CLEAR} they sleep.",
                                   source=f"notes/cats{TITLE}.txt")], index)
    return path


def test_query_prints_a_hostile_document_harmlessly(hostile_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", str(hostile_index), "why do cats purr", "-k", "1"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "Cats purr when happy.\\x1b]0;pwned\\x07 Then\\x1b[2J\\x1b[H they sleep." in out
    assert "notes/cats\\x1b]0;pwned\\x07.txt" in out
    assert main(["query", str(hostile_index), "why do cats purr", "-k", "1", "--json"]) == 0
    [hit] = json.loads(capsys.readouterr().out)
    assert hit["text"] == f"Cats purr when happy.{TITLE} Then{CLEAR} they sleep."  # JSON stays exact


def test_index_failure_lines_print_paths_harmlessly(tmp_path: Path, minilm_path: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.txt").write_text("A good document about cats.")
    (docs / f"bad{CLEAR}.jsonl").write_text('{"text": "fine"}\nnot json\n')
    code = main(["index", str(docs), "--index", str(tmp_path / "ix"), "--model", minilm_path, "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1  # a record failed, the rest is indexed
    assert "\x1b" not in out
    assert f"failed: {docs}/bad\\x1b[2J\\x1b[H.jsonl: line 2: invalid JSON" in out


def test_commit_every_zero_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.txt").write_text("text")
    for bad in ("0", "-5"):
        assert main(["index", str(tmp_path / "a.txt"), "--index", str(tmp_path / "ix"), "--commit-every", bad]) == 2
        assert f"--commit-every must be at least 1, got {bad}" in capsys.readouterr().err
    assert not (tmp_path / "ix").exists()


def test_a_json_object_filter_value_is_a_condition_not_text() -> None:
    assert parse_filters(['year={"$gte": 2020}']) == {"year": {"$gte": 2020}}
    assert parse_filters(["lang=en", "n=3", "x=null", "y=NaN"]) == {
        "$and": [{"lang": "en"}, {"n": 3}, {"x": "null"}, {"y": "NaN"}]}


def test_a_filter_value_that_is_an_object_is_a_clear_error(hostile_index: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["query", str(hostile_index), "cats", "--filter", 'year={"from": 2020}']) == 2
    assert "bad filter: field 'year': the value {'from': 2020} is an object" in capsys.readouterr().err
    assert main(["query", str(hostile_index), "cats", "--filter", 'year={"$gte": 2020}']) == 0
    assert "no matching passages" in capsys.readouterr().out
