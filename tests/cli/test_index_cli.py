"""`qwen3-rag index` and `qwen3-rag info` end to end with the real MiniLM model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qwen3_rag.cli import main


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    rows = [
        {"_id": f"d{i}", "title": f"Title {i}", "text": f"Scientific claim number {i} about cells."}
        for i in range(6)
    ]
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "readme.md").write_text("# Readme\n\nHow to build an index of documents.")
    return root


def test_index_then_info_then_noop(
    corpus: Path, tmp_path: Path, minilm_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ix = str(tmp_path / "ix")
    assert (
        main(
            [
                "index",
                str(corpus),
                "--index",
                ix,
                "--model",
                minilm_path,
                "--chunk-size",
                "64",
                "--chunk-overlap",
                "8",
                "--device",
                "cpu",
                "--batch-size",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "7 added" in out

    assert main(["info", ix, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["documents"], info["dim"]) == (7, 384)
    assert info["vectors"] == info["chunks"] >= 7
    assert info["model"] == minilm_path and info["model_info"]["pooling"] == "mean"
    assert info["chunking"] == {"chunk_size": 64, "chunk_overlap": 8, "tokenizer": "model"}
    assert info["format_version"] == 3 and "faiss" in info["versions"]

    assert main(["info", ix]) == 0
    assert "documents   7" in capsys.readouterr().out

    # second run: the model comes from the manifest, nothing is embedded
    assert main(["index", str(corpus), "--index", ix, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "0 added, 0 updated, 7 unchanged" in out and "index is up to date" in out


def test_cli_errors(
    corpus: Path, tmp_path: Path, minilm_path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ix = str(tmp_path / "ix")
    assert (
        main(["index", str(corpus / "readme.md"), "--index", ix, "--model", minilm_path, "--no-progress"])
        == 0
    )
    capsys.readouterr()
    assert (
        main(["index", str(corpus), "--index", ix, "--model", minilm_path, "--dim", "128", "--no-progress"])
        == 2
    )
    err = capsys.readouterr().err
    assert "dim 384" in err and "dim 128" in err and "qwen3-rag: error:" in err
    assert main(["index", str(corpus), "--index", ix, "--chunk-size", "99", "--no-progress"]) == 2
    assert "chunk_size 128, not 99" in capsys.readouterr().err
    assert main(["index", str(tmp_path / "nope"), "--index", ix, "--no-progress"]) == 2
    assert main(["info", str(tmp_path / "no-index")]) == 2
    assert "no index at" in capsys.readouterr().err
