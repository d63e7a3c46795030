"""docs/server.md holds to the server: every curl example (and the README's) answers 200 from a real server, and the
Python blocks (the remote backends, the chatbot) run against it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DOCS, README, python_blocks

PAGE = DOCS / "server.md"
KEY = "change-me"  # the key the examples export
FENCE = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)


def curl_commands(page: Path) -> list[str]:
    """The curl commands of a page's bash blocks that call the server on localhost:8000, continuation lines
    joined."""
    commands = []
    for block in FENCE.findall(page.read_text(encoding="utf-8")):
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split("  #")[0].strip()
            if command.startswith("curl") and "localhost:8000" in command:
                commands.append(command)
    return commands


@pytest.fixture()
def docs_server(serve, tmp_path, monkeypatch, minilm_embedder, tiny_reranker, fake_llm):
    from qwen3_rag import Index, ingest
    from qwen3_rag.server import ServerConfig
    from qwen3_rag.server.resources import OpenIndex, Resources

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "ops.md").write_text("# Ops\n\nLogs are rotated nightly by logrotate. Old logs are kept a week.\n")
    (folder / "deploy.md").write_text("# Deploys\n\nDeploys go out on Tuesdays.\n")
    monkeypatch.chdir(tmp_path)  # sources as the examples show them: docs/ops.md
    ingest(["docs"], "my-index", embedder=minilm_embedder)
    index = Index.open(tmp_path / "my-index", minilm_embedder)
    resources = Resources([minilm_embedder], tiny_reranker, [OpenIndex("docs", index, minilm_embedder)],
                          model_name="Qwen/Qwen3-Embedding-0.6B")
    config = ServerConfig(api_key=KEY, llm_url=fake_llm[0], llm_model="qwen3-8b")
    with serve(resources, config) as url:
        yield url


def test_every_curl_example_answers(docs_server):
    commands = curl_commands(PAGE) + curl_commands(README)
    assert len(commands) >= 16
    port = docs_server.rsplit(":", 1)[1]
    env = {**os.environ, "QWEN3_RAG_API_KEY": KEY}
    for command in commands:
        runnable = command.replace("curl", "curl -sS --fail-with-body", 1)
        runnable = runnable.replace("localhost:8000", f"127.0.0.1:{port}")
        proc = subprocess.run(["bash", "-c", runnable], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
        if "/metrics" in command:
            assert "qwen3_rag_requests_total" in proc.stdout
        elif '"stream": true' in command:
            assert proc.stdout.rstrip().endswith("data: [DONE]") and '"citations"' in proc.stdout
        else:
            json.loads(proc.stdout)


def test_python_blocks_run(docs_server, tmp_path):
    code = "\n".join(python_blocks(PAGE)).replace("http://localhost:8000", docs_server)
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "QWEN3_RAG_API_KEY": KEY}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(1, 384)" in proc.stdout
    assert proc.stdout.count("Logs are rotated nightly [1].") == 3  # two answers and the streamed one
    assert "[1] docs/ops.md" in proc.stdout
