"""The Python snippets of the integrations README section run, in order, with the model ids swapped for
offline models (MiniLM for the embedder, the tiny Qwen3 checkpoint for the reranker) and a mock LLM."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import README, readme_python_blocks, run_offline

SECTION = re.compile(r"<!-- section:integrations -->(.*?)<!-- /section:integrations -->", re.S)

PRELUDE = """
from llama_index.core.llms import MockLLM
from qwen3_rag import Embedder
from qwen3_rag.pipelines.ingest import ingest
from pathlib import Path

Path("docs").mkdir()
Path("docs/logs.md").write_text("# Logs\\n\\nLogs are rotated nightly by logrotate.\\n")
Path("docs/backup.md").write_text("# Backups\\n\\nBackups run every Sunday.\\n")
Path("docs/deploy.md").write_text("# Deploys\\n\\nDeploys go out on Tuesdays.\\n")
ingest(["docs"], "my-index", embedder=Embedder("Qwen/Qwen3-Embedding-0.6B", device="cpu"))
llm = MockLLM(max_tokens=16)
"""


def test_readme_snippets_run(tmp_path: Path, minilm_path: str, tiny_qwen3_reranker_dir: str) -> None:
    pytest.importorskip("langchain_classic")
    pytest.importorskip("llama_index.core")
    section = SECTION.search(README.read_text(encoding="utf-8"))
    assert section, "README.md lost its integrations section markers"
    blocks = readme_python_blocks(section.group(1))
    assert len(blocks) >= 5
    code = "\n".join([PRELUDE, *blocks])
    code += "\nassert len(compressed.invoke('capital of China')) == 2\nprint('ok')\n"
    proc = run_offline(code, tmp_path, minilm_path, tiny_qwen3_reranker_dir)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-5000:]
