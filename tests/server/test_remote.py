"""RemoteEmbedder and RemoteReranker against a qwen3-rag server and a fake vLLM (vLLM's exact request and answer
shapes): the same vectors and scores as the local models, everywhere a model name is accepted."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qwen3_rag import (
    TASKS,
    Embedder,
    Index,
    IndexMismatchError,
    Retriever,
    ingest_documents,
    load_embedder,
    load_reranker,
)
from qwen3_rag.retrieval.prompts import RERANKER_PREFIX, RERANKER_SUFFIX, format_query
from qwen3_rag.retrieval.remote import RemoteEmbedder, RemoteReranker
from qwen3_rag.server import ServerConfig
from qwen3_rag.server.resources import Resources

TEXTS = ["The capital of China is Beijing.", "Gravity is a force.", "Logs are rotated nightly."]
QUERIES = ["what is the capital of China?", "explain gravity"]


def test_remote_embedder_equals_the_embedder_through_a_qwen3_rag_server(qwen_server, tiny_embedder):
    remote = load_embedder(qwen_server)
    assert isinstance(remote, RemoteEmbedder) and remote.dim == tiny_embedder.dim
    np.testing.assert_allclose(remote.embed_documents(TEXTS), tiny_embedder.embed_documents(TEXTS), atol=1e-5)
    np.testing.assert_allclose(remote.embed_queries(QUERIES, instruction="scifact"),
                               tiny_embedder.embed_queries(QUERIES, instruction="scifact"), atol=1e-5)
    record = remote.describe()
    assert record["model"] == "tiny-qwen3" and record["model_type"] == "remote"
    assert record["fingerprint"] == tiny_embedder.describe()["fingerprint"] and record["endpoint"] == qwen_server


def test_remote_reranker_equals_the_reranker_through_a_qwen3_rag_server(qwen_server, tiny_reranker):
    remote = load_reranker(qwen_server + "/v1")
    assert isinstance(remote, RemoteReranker)
    pairs = [(q, t) for q in QUERIES for t in TEXTS]
    np.testing.assert_allclose(remote.score_pairs(pairs, instruction="scifact"),
                               tiny_reranker.score_pairs(pairs, instruction="scifact"), atol=1e-5)
    ranked = remote.rerank(QUERIES[0], TEXTS, top_n=2)
    expected = tiny_reranker.rerank(QUERIES[0], TEXTS, top_n=2)
    assert [r.index for r in ranked] == [r.index for r in expected]


def test_vllm_embeddings_with_the_query_format_applied_by_the_client(fake_vllm, tiny_embedder):
    server, fake = fake_vllm()
    with server as url:
        remote = RemoteEmbedder(url + "/v1", instruction="scifact")
        np.testing.assert_allclose(remote.embed_queries(QUERIES), tiny_embedder.embed_queries(QUERIES,
                                   instruction="scifact"), atol=1e-5)
        np.testing.assert_allclose(remote.embed_documents(TEXTS), tiny_embedder.embed_documents(TEXTS), atol=1e-5)
        assert remote.describe()["model"] == "Qwen/Qwen3-Embedding-0.6B" and "fingerprint" in remote.describe()
    sent = [body for route, body in fake.requests if route == "embeddings"]
    queries = next(body for body in sent if body["input"][0].startswith("Instruct:"))
    assert queries["input"] == [format_query(q, TASKS["scifact"]) for q in QUERIES]
    assert queries["model"] == "Qwen/Qwen3-Embedding-0.6B" and queries["encoding_format"] == "base64"
    assert all("dimensions" not in body for body in sent)  # the model's own size is never asked for


def test_vllm_dimensions_need_matryoshka(fake_vllm, tiny_qwen3_embedding_dir):
    expected = Embedder(tiny_qwen3_embedding_dir, device="cpu", dtype="float32", dim=32).embed_documents(TEXTS)
    server, fake = fake_vllm(matryoshka=True)
    with server as url:
        np.testing.assert_allclose(RemoteEmbedder(url, dim=32).embed_documents(TEXTS), expected, atol=1e-5)
    assert fake.requests[-1][1]["dimensions"] == 32
    server, _ = fake_vllm(matryoshka=False)
    with server as url, pytest.raises(ValueError, match="is_matryoshka"):
        RemoteEmbedder(url, dim=32).embed_documents(TEXTS)


def test_vllm_rerank_with_the_qwen3_template(fake_vllm, tiny_reranker):
    server, fake = fake_vllm(template=True)
    with server as url:
        remote = RemoteReranker(url, model="Qwen/Qwen3-Embedding-0.6B", instruction="scifact")
        np.testing.assert_allclose(remote.score(QUERIES[0], TEXTS),
                                   tiny_reranker.score(QUERIES[0], TEXTS, instruction="scifact"), atol=1e-5)
    body = fake.requests[-1][1]
    assert body["query"] == QUERIES[0] and body["documents"] == TEXTS and "scientific claim" in body["instruction"]


def test_vllm_rerank_without_a_template_gets_the_prompt_from_the_client(fake_vllm, tiny_reranker):
    server, fake = fake_vllm(template=False)
    with server as url:
        remote = RemoteReranker(url, prompt="client")
        pairs = [(q, t) for q in QUERIES for t in TEXTS]
        np.testing.assert_allclose(remote.score_pairs(pairs), tiny_reranker.score_pairs(pairs), atol=1e-5)
    body = fake.requests[-1][1]
    assert body["query"].startswith(RERANKER_PREFIX) and body["documents"][0].endswith(RERANKER_SUFFIX)
    assert "instruction" not in body


def test_an_index_built_remotely_records_the_served_model(qwen_server, tmp_path, tiny_embedder, minilm_embedder,
                                                           corpus):
    remote = RemoteEmbedder(qwen_server)
    with Index.create(tmp_path / "ix", remote, chunk_size=0) as index:
        ingest_documents(corpus, index)
    record = Index.read_manifest(tmp_path / "ix")["model"]
    assert record["model_type"] == "remote" and record["endpoint"] == qwen_server
    with Retriever(tmp_path / "ix") as retriever:  # the record brings the server back
        assert isinstance(retriever.embedder, RemoteEmbedder)
        remote_hits = retriever.search("when are logs rotated?", k=3)
    with Retriever(tmp_path / "ix", embedder=tiny_embedder) as retriever:  # the same model, local
        local_hits = retriever.search("when are logs rotated?", k=3)
    assert [h.doc_id for h in remote_hits] == [h.doc_id for h in local_hits]
    assert [h.score for h in remote_hits] == pytest.approx([h.score for h in local_hits], abs=1e-5)
    with pytest.raises(IndexMismatchError, match="model"):
        Index.open(tmp_path / "ix", minilm_embedder)


def test_a_vllm_built_index_refuses_another_model(fake_vllm, tmp_path, minilm_embedder, corpus):
    server, _ = fake_vllm()
    with server as url:
        with Index.create(tmp_path / "ix", load_embedder(url), chunk_size=0) as index:
            ingest_documents(corpus[:2], index)
        assert Index.read_manifest(tmp_path / "ix")["model"]["model"] == "Qwen/Qwen3-Embedding-0.6B"
    with pytest.raises(IndexMismatchError, match="Qwen/Qwen3-Embedding-0.6B"):
        Index.open(tmp_path / "ix", minilm_embedder)


def test_cli_model_url_indexes_and_queries(qwen_server, tmp_path, capsys):
    from qwen3_rag.cli import main

    folder = tmp_path / "notes"
    folder.mkdir()
    for name, text, _ in [("ops.md", "Logs are rotated nightly by logrotate.", 0),
                          ("deploy.md", "Deploys go out on Tuesdays.", 0)]:
        (folder / name).write_text(text)
    assert main(["index", str(folder), "--index", str(tmp_path / "ix"), "--model", qwen_server, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["query", str(tmp_path / "ix"), "when are logs rotated?", "-k", "1", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits[0]["doc_id"] == "notes/ops.md"


def test_langchain_embeddings_take_a_url(qwen_server, tiny_embedder):
    pytest.importorskip("langchain_core")
    from qwen3_rag.integrations.langchain import Qwen3Embeddings

    embeddings = Qwen3Embeddings(model=qwen_server)
    np.testing.assert_allclose(np.array(embeddings.embed_query(QUERIES[0]), dtype=np.float32),
                               tiny_embedder.embed_queries(QUERIES[:1])[0], atol=1e-5)


def test_remote_errors_say_what_happened(serve, tiny_embedder, qwen_server):
    with serve(Resources([tiny_embedder]), ServerConfig(api_key="k1")) as url:
        with pytest.raises(PermissionError, match="401"):
            RemoteEmbedder(url, api_key="wrong").embed_documents(TEXTS)
        assert RemoteEmbedder(url, api_key="k1").embed_documents(TEXTS).shape == (3, tiny_embedder.dim)
    with pytest.raises(ValueError, match="serves 'tiny-qwen3'"):
        RemoteEmbedder(qwen_server, model="other").embed_documents(TEXTS)
    with pytest.raises(ValueError, match="dim=8 is out of range"):
        RemoteEmbedder(qwen_server, dim=8, retries=0).embed_documents(TEXTS)
    with pytest.raises(ConnectionError, match="cannot reach"):
        RemoteEmbedder(url, retries=0).embed_documents(TEXTS)  # that server has stopped
    with pytest.raises(ValueError, match="http"):
        RemoteEmbedder("ftp://example")


def test_the_key_comes_from_the_environment_and_never_reaches_the_record(serve, tiny_embedder, monkeypatch):
    from qwen3_rag.retrieval.remote import API_KEY_ENV

    monkeypatch.setenv(API_KEY_ENV, "env-key")
    with serve(Resources([tiny_embedder]), ServerConfig(api_key="env-key")) as url:
        port = url.rsplit(":", 1)[1]
        remote = RemoteEmbedder(f"http://someone:secret@127.0.0.1:{port}/v1/")
        assert remote.embed_documents(TEXTS).shape == (3, tiny_embedder.dim)
        record = json.dumps(remote.describe())
    assert remote.endpoint == f"http://127.0.0.1:{port}" and "secret" not in record and "env-key" not in record
