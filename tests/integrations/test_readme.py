"""The Python snippets of the integrations README section run, in order, with the model ids swapped for
offline models (MiniLM for the embedder, the tiny Qwen3 checkpoint for the reranker) and a mock LLM."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
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
    blocks = re.findall(r"```python\n(.*?)```", section.group(1), flags=re.S)
    assert len(blocks) >= 5
    code = "\n".join([PRELUDE, *blocks])
    code = code.replace("Qwen/Qwen3-Embedding-0.6B", minilm_path.replace("\\", "/"))
    code = code.replace("Qwen/Qwen3-Reranker-0.6B", tiny_qwen3_reranker_dir.replace("\\", "/"))
    code += "\nassert len(compressed.invoke('capital of China')) == 2\nprint('ok')\n"
    script = tmp_path / "readme.py"
    script.write_text(code, encoding="utf-8")
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        TMPDIR=str(tmp_path),
    )
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-5000:]
