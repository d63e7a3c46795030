"""The Python examples of docs/integrations.md run, in order, with the model ids swapped for offline models
(MiniLM for the embedder, the tiny Qwen3 checkpoint for the reranker) and a mock LLM."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DOCS, run_page

PAGE = DOCS / "integrations.md"

# What the page takes as given: an index "my-index" built from a docs/ folder, and `llm`, any LlamaIndex LLM.
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

EPILOGUE = """
assert len(compressed.invoke("capital of China")) == 2
print(index.as_retriever(similarity_top_k=1).retrieve("capital of China")[0].node.text)
print("ok")
"""


def test_integrations_page_runs(tmp_path: Path, minilm_path: str, tiny_qwen3_reranker_dir: str) -> None:
    pytest.importorskip("langchain_classic")
    pytest.importorskip("llama_index.core")
    proc = run_page(PAGE, tmp_path, minilm_path, tiny_qwen3_reranker_dir, prelude=PRELUDE, epilogue=EPILOGUE)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert proc.stdout.strip().endswith("Beijing is the capital of China.\nok"), proc.stdout[-2000:]
