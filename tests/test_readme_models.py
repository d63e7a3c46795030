"""The README is the front door: its first sections are install, the main job, the tests and a Python
quickstart, the quickstart runs (offline, with small models in place of the Qwen3 ones and a fake chat model),
and it links every reference page."""

from __future__ import annotations

import re

import pytest
from conftest import DOCS, FAKE_ANSWER, README, ROOT, python_blocks, run_offline

FIRST_SCREEN = ["Install", "The main job in one command", "Tests", "Python quickstart"]


def test_first_sections_are_install_main_job_tests_quickstart():
    headings = re.findall(r"^## (.+)$", README.read_text(encoding="utf-8"), re.M)
    assert headings[: len(FIRST_SCREEN)] == FIRST_SCREEN


def test_quickstart_runs_documents_to_index_to_answer(tmp_path, minilm_path, tiny_qwen3_reranker_dir):
    pytest.importorskip("langchain_core")
    text = README.read_text(encoding="utf-8")
    quickstart = text[text.index("## Python quickstart"):]
    quickstart = quickstart[: quickstart.index("\n## ")]
    blocks = python_blocks(quickstart)
    assert len(blocks) == 1, "the quickstart is one block, to copy and run"
    out = run_offline(blocks[0], tmp_path, minilm_path, tiny_qwen3_reranker_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 added" in out.stdout and "notes/logs.md" in out.stdout and FAKE_ANSWER in out.stdout, out.stdout
    assert (tmp_path / "notes-index" / "manifest.json").is_file()


def test_milvus_example_runs(tmp_path, minilm_path, tiny_qwen3_reranker_dir):
    pytest.importorskip("milvus_lite")
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Milvus"):]
    blocks = python_blocks(section[: section.index("\n## ")])
    assert len(blocks) == 1, "the Milvus example is one block, to copy and run"
    out = run_offline(blocks[0], tmp_path, minilm_path, tiny_qwen3_reranker_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 added" in out.stdout and "notes/logs.md  '# Logs" in out.stdout, out.stdout
    assert (tmp_path / "notes.db").exists() and not (tmp_path / "notes").joinpath("manifest.json").exists()


def test_readme_links_every_reference_page():
    text = README.read_text(encoding="utf-8")
    pages = [f"docs/{p.name}" for p in sorted(DOCS.glob("*.md"))] + ["BENCHMARKS.md", "CHANGELOG.md", "LICENSE"]
    for page in pages:
        assert (ROOT / page).is_file(), page
        assert f"]({page})" in text, f"README.md does not link {page}"
