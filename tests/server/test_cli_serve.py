"""``qwen3-rag serve`` as a user runs it: a subprocess on a free port, an API key from the environment, answers equal
to the library's, a clean exit on SIGTERM that commits and releases the index."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from qwen3_rag import Document, Index, Retriever, ingest_documents
from qwen3_rag.pipelines.search import hits_to_dicts


@pytest.fixture()
def notes_index(tmp_path: Path, minilm_embedder) -> Path:
    path = tmp_path / "notes-index"
    with Index.create(path, minilm_embedder) as index:
        ingest_documents([Document(id="ops", text="Logs are rotated nightly by logrotate.", source="ops.md"),
                          Document(id="deploy", text="Deploys go out on Tuesdays.", source="deploy.md")], index)
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_like_the_library_and_stops_cleanly(notes_index, minilm_embedder):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "QWEN3_RAG_API_KEY": "cli-key-123", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "qwen3_rag", "serve", f"notes={notes_index}", "--port", str(port),
                             "--device", "cpu"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    key = {"Authorization": "Bearer cli-key-123"}
    try:
        deadline = time.monotonic() + 180
        while not _ready(url):
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not get ready"
            time.sleep(0.2)
        page = httpx.get(url + "/")  # the web page, which asks for the key itself
        assert page.status_code == 200 and "<title>qwen3-rag</title>" in page.text
        body = {"index": "notes", "query": "when are logs rotated?", "k": 2}
        assert httpx.post(url + "/v1/search", json=body).status_code == 401
        hits = httpx.post(url + "/v1/search", json=body, headers=key, timeout=60).json()["hits"]
        added = httpx.post(url + "/v1/indexes/notes/documents", headers=key, timeout=60,
                           json={"documents": [{"id": "backup", "text": "Backups run on Sundays."}]})
        assert added.status_code == 200 and added.json()["added"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    # uvicorn finishes what is in flight, closes down, then lets the signal end the process as it would have
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output and "stopped; the indexes are closed" in output
    assert "cli-key-123" not in output and "Uvicorn running on" in output
    with Retriever(notes_index, embedder=minilm_embedder) as retriever:
        expected = hits_to_dicts(retriever.search("when are logs rotated?", k=2))
    assert [h["doc_id"] for h in hits] == [h["doc_id"] for h in expected] == ["ops", "deploy"]
    assert [h["score"] for h in hits] == pytest.approx([h["score"] for h in expected], abs=1e-5)
    with Index.open(notes_index, minilm_embedder) as index:  # the lock is released, the write committed
        assert index.get_document("backup") is not None


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("argv, message", [
    (["serve", "no-such-index"], "no index at 'no-such-index'"),
    (["serve", "--llm-url", "http://127.0.0.1:9"], "--llm-model"),
    (["serve", "--max-batch", "0"], "max_batch must be a positive int"),
    (["serve", "/"], "cannot name the index"),
])
def test_serve_usage_errors(argv, message, capsys):
    from qwen3_rag.cli import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_serve_a_milvus_index_by_uri(tmp_path, minilm_embedder):
    """The same server over a Milvus Lite collection: named by URI on the command line, answers equal to the
    library's over that URI (dense, BM25 and hybrid), a document added through the API is committed there."""
    pytest.importorskip("milvus_lite", reason="the [milvus] extra is not installed")
    uri = f"milvus-lite://{tmp_path / 'rag.db'}/notes"
    docs = [Document(id="ops", text="Logs are rotated nightly by logrotate.", source="ops.md"),
            Document(id="deploy", text="Deploys go out on Tuesdays.", source="deploy.md"),
            Document(id="backup", text="Backups run every Sunday night.", source="backup.md")]
    with Index.create(uri, minilm_embedder) as index:
        ingest_documents(docs, index)
    query = "when are logs rotated?"
    with Retriever(uri, embedder=minilm_embedder) as retriever:  # before the server holds the Lite file
        expected = {mode: hits_to_dicts(retriever.search(query, k=2, mode=mode))
                    for mode in ("dense", "bm25", "hybrid")}
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "qwen3_rag", "serve", f"notes={uri}", "--port", str(port),
                             "--device", "cpu"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while not _ready(url):
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not get ready"
            time.sleep(0.2)
        got = {mode: httpx.post(url + "/v1/search", json={"index": "notes", "query": query, "k": 2, "mode": mode},
                                timeout=60).json()["hits"] for mode in expected}
        added = httpx.post(url + "/v1/indexes/notes/documents", timeout=60,
                           json={"documents": [{"id": "lunch", "text": "Lunch is served at noon."}]})
        assert added.status_code == 200 and added.json()["added"] == 1
        counts = httpx.get(url + "/v1/indexes/notes", timeout=30).json()["counts"]
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode in (0, -signal.SIGTERM), output
    for mode, hits in got.items():
        assert [h["doc_id"] for h in hits] == [h["doc_id"] for h in expected[mode]], mode
        assert [h["score"] for h in hits] == pytest.approx([h["score"] for h in expected[mode]], abs=1e-5), mode
    assert got["dense"][0]["doc_id"] == "ops" and counts["documents"] == 4
    with Index.open(uri, minilm_embedder, read_only=True) as index:
        assert index.get_document("lunch") is not None
