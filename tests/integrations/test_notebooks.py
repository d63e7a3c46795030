"""The notebooks run top to bottom, offline, on small models.

Code cells are extracted in order and run as one script in a fresh interpreter (no Jupyter kernel needed);
the reranker is pointed at the tiny Qwen3 checkpoint built by conftest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = ["quickstart", "langchain_chatbot", "llamaindex"]


def _code(path: Path) -> str:
    book = json.loads(path.read_text(encoding="utf-8"))
    assert book["nbformat"] == 4
    cells = [c for c in book["cells"] if c["cell_type"] == "code"]
    assert cells, f"{path.name} has no code cells"
    for cell in cells:
        assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name}: clear the outputs"
    return "\n\n".join("".join(c["source"]) for c in cells)


def test_every_notebook_is_tested() -> None:
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name: str, tmp_path: Path, minilm_path: str, tiny_qwen3_reranker_dir: str) -> None:
    if name != "quickstart":
        pytest.importorskip("langchain_core" if name.startswith("langchain") else "llama_index.core")
    script = tmp_path / f"{name}.py"
    script.write_text(_code(NOTEBOOKS / f"{name}.ipynb"), encoding="utf-8")
    env = dict(
        os.environ,
        QWEN3_RAG_EMBEDDER=minilm_path,
        QWEN3_RAG_RERANKER=tiny_qwen3_reranker_dir,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        TMPDIR=str(tmp_path),
    )
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
