"""The server called by real clients (the openai package, LangChain, plain HTTP): every answer equals what the
in-process classes give (Embedder, Reranker, Retriever, build_context)."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

from qwen3_rag.pipelines.rag import DEFAULT_PROMPT, build_context, cite
from qwen3_rag.pipelines.search import Retriever, hits_to_dicts

TEXTS = ["The capital of China is Beijing.", "Gravity is a force.", "Logs are rotated nightly by logrotate.",
         "Deploys go out on Tuesdays after the tests pass."]
QUERY = "when are the logs rotated?"


def _post(url: str, path: str, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    response = httpx.post(url + path, json=body, timeout=60, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_openai_embeddings_equal_the_embedder(qwen_server, tiny_embedder):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=qwen_server + "/v1", api_key="unused")
    answer = client.embeddings.create(model="tiny-qwen3", input=TEXTS)
    got = np.array([d.embedding for d in answer.data], dtype=np.float32)
    np.testing.assert_allclose(got, tiny_embedder.embed_documents(TEXTS), atol=1e-5)
    assert answer.model == "tiny-qwen3" and answer.usage.prompt_tokens == sum(tiny_embedder.count_tokens(TEXTS))


def test_openai_dimensions_and_base64_follow_the_matryoshka_rule(qwen_server, tiny_qwen3_embedding_dir):
    openai = pytest.importorskip("openai")
    from qwen3_rag import Embedder

    client = openai.OpenAI(base_url=qwen_server + "/v1", api_key="unused")
    answer = client.embeddings.create(model="tiny-qwen3", input=TEXTS, dimensions=32, encoding_format="base64")
    raw = client.embeddings.with_raw_response.create(model="tiny-qwen3", input=TEXTS[:1], dimensions=32,
                                                     encoding_format="base64")
    assert isinstance(json.loads(raw.text)["data"][0]["embedding"], str)  # base64 on the wire
    # asked for base64 explicitly, the client hands the strings over as they came: little-endian float32
    got = np.stack([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in answer.data])
    expected = Embedder(tiny_qwen3_embedding_dir, device="cpu", dtype="float32", dim=32).embed_documents(TEXTS)
    assert got.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_queries_get_the_qwen3_query_format(qwen_server, tiny_embedder):
    body = {"input": [QUERY], "input_type": "query", "instruction": "scifact"}
    got = np.array(_post(qwen_server, "/v1/embeddings", body)["data"][0]["embedding"], dtype=np.float32)
    np.testing.assert_allclose(got, tiny_embedder.embed_queries([QUERY], instruction="scifact")[0], atol=1e-5)
    assert not np.allclose(got, tiny_embedder.embed_documents([QUERY])[0], atol=1e-3)


def test_langchain_openai_embeddings(qwen_server, tiny_embedder):
    langchain_openai = pytest.importorskip("langchain_openai")
    embeddings = langchain_openai.OpenAIEmbeddings(base_url=qwen_server + "/v1", api_key="unused",
                                                   model="tiny-qwen3", check_embedding_ctx_length=False)
    np.testing.assert_allclose(np.array(embeddings.embed_documents(TEXTS), dtype=np.float32),
                               tiny_embedder.embed_documents(TEXTS), atol=1e-5)
    np.testing.assert_allclose(np.array(embeddings.embed_query(QUERY), dtype=np.float32),
                               tiny_embedder.embed_documents([QUERY])[0], atol=1e-5)


def test_rerank_equals_the_reranker(qwen_server, tiny_reranker):
    body = {"query": QUERY, "documents": [TEXTS[0], {"text": TEXTS[2]}, TEXTS[3]], "top_n": 2}
    answer = _post(qwen_server, "/v1/rerank", body)
    expected = tiny_reranker.score(QUERY, [TEXTS[0], TEXTS[2], TEXTS[3]])
    order = sorted(range(3), key=lambda i: -expected[i])[:2]
    assert [r["index"] for r in answer["results"]] == order
    assert [r["relevance_score"] for r in answer["results"]] == pytest.approx([expected[i] for i in order], abs=1e-5)
    assert answer["results"][0]["document"]["text"] == [TEXTS[0], TEXTS[2], TEXTS[3]][order[0]]
    bare = _post(qwen_server, "/v1/rerank", {**body, "return_documents": False, "top_n": 0, "instruction": "scifact"})
    assert len(bare["results"]) == 3 and "document" not in bare["results"][0]
    scored = {r["index"]: r["relevance_score"] for r in bare["results"]}
    assert [scored[i] for i in range(3)] == pytest.approx(
        tiny_reranker.score(QUERY, [TEXTS[0], TEXTS[2], TEXTS[3]], instruction="scifact"), abs=1e-5)


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_search_equals_the_retriever(qwen_server, qwen_index_dir, tiny_embedder, tiny_reranker, mode):
    options = {"k": 3, "mode": mode, "filter": {"team": "ops"}, "rerank": mode == "hybrid", "candidates": 5}
    answer = _post(qwen_server, "/v1/search", {"index": "docs", "query": QUERY, **options})
    with Retriever(qwen_index_dir, embedder=tiny_embedder, reranker=tiny_reranker) as retriever:
        expected = hits_to_dicts(retriever.search(QUERY, k=3, filter={"team": "ops"}, mode=mode,
                                                  rerank=mode == "hybrid", candidates=5))
    assert answer["index"] == "docs" and len(answer["hits"]) == len(expected) > 0
    for got, want in zip(answer["hits"], expected, strict=True):
        assert {k: v for k, v in got.items() if k not in ("score", "scores")} == \
            {k: v for k, v in want.items() if k not in ("score", "scores")}
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-5)
        assert got["metadata"]["team"] == "ops" and got["start_line"] >= 1
    many = _post(qwen_server, "/v1/search", {"index": "docs", "queries": [QUERY, "capital of China"], "k": 2})
    assert [r["query"] for r in many["results"]] == [QUERY, "capital of China"]


def test_search_highlights_the_query_terms_and_documents_are_read_whole(qwen_server, corpus):
    from qwen3_rag.indexers.bm25 import matching_spans

    body = {"index": "docs", "query": "when are old logs rotated?", "k": 5, "mode": "hybrid"}
    plain = _post(qwen_server, "/v1/search", body)["hits"]
    marked = _post(qwen_server, "/v1/search", {**body, "highlight": True})["hits"]
    assert all("highlights" not in hit for hit in plain)
    assert [{k: v for k, v in hit.items() if k != "highlights"} for hit in marked] == plain
    for hit in marked:
        assert hit["highlights"] == [list(span) for span in matching_spans(hit["text"], body["query"])]
    shown = {hit["text"][a:b].lower() for hit in marked for a, b in hit["highlights"]}
    assert {"logs", "old"} <= shown <= {"logs", "old", "rotated"}  # "are" is a stop word
    cited = _post(qwen_server, "/v1/context", {**body, "highlight": True})["citations"]
    assert [c["highlights"] for c in cited] == [h["highlights"] for h in marked][:len(cited)]

    texts = {doc.id: doc for doc in corpus}
    for hit in marked:  # a hit's start and end index the whole document
        document = httpx.get(f"{qwen_server}/v1/indexes/docs/documents/{hit['doc_id']}").json()
        assert document == {"index": "docs", "id": hit["doc_id"], "source": texts[hit["doc_id"]].source,
                            "text": texts[hit["doc_id"]].text, "metadata": texts[hit["doc_id"]].metadata}
        assert document["text"][hit["start"]:hit["end"]] == hit["text"]
    missing = httpx.get(f"{qwen_server}/v1/indexes/docs/documents/nope.md")
    assert missing.status_code == 404 and missing.json()["error"]["message"] == \
        "the index 'docs' holds no document 'nope.md'"


def test_context_equals_build_context(qwen_server, qwen_index_dir, tiny_embedder):
    answer = _post(qwen_server, "/v1/context", {"index": "docs", "query": QUERY, "k": 4, "max_tokens": 60})
    with Retriever(qwen_index_dir, embedder=tiny_embedder) as retriever:
        expected = build_context(retriever.search(QUERY, k=4), max_tokens=60, tokens=tiny_embedder)
    assert answer["context"] == expected.text and answer["tokens"] == expected.tokens
    assert answer["truncated"] == expected.truncated
    assert [c["citation"] for c in answer["citations"]] == [cite(h) for h in expected.hits]
    assert [c["n"] for c in answer["citations"]] == list(range(1, len(expected.hits) + 1))


def test_chat_answers_with_citations(qwen_server, fake_llm):
    openai = pytest.importorskip("openai")
    url, received = fake_llm
    client = openai.OpenAI(base_url=qwen_server + "/v1", api_key="unused")
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How are logs rotated?"}]
    answer = client.chat.completions.create(model="any", messages=history, temperature=0.0,
                                            extra_body={"index": "docs", "k": 3})
    assert answer.choices[0].message.content == "Logs are rotated nightly [1]."
    citations = answer.model_extra["citations"]
    assert [c["n"] for c in citations] == list(range(1, len(citations) + 1)) and citations[0]["used"]
    sent = received[-1]
    assert sent["model"] == "fake-qwen3" and sent["temperature"] == 0.0 and "index" not in sent
    assert sent["messages"][0] == history[0]
    context = _post(qwen_server, "/v1/context", {"index": "docs", "query": "How are logs rotated?", "k": 3})
    prompt = DEFAULT_PROMPT.replace("{context}", context["context"]).replace("{question}", "How are logs rotated?")
    assert sent["messages"][1] == {"role": "user", "content": prompt}
    assert [c["citation"] for c in citations] == [c["citation"] for c in context["citations"]]


def test_chat_streams_and_sends_citations_last(qwen_server, fake_llm):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=qwen_server + "/v1", api_key="unused")
    chunks = list(client.chat.completions.create(model="any", stream=True,
                                                 messages=[{"role": "user", "content": "How are logs rotated?"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Logs are rotated nightly [1]."
    final = chunks[-1]
    assert final.choices == [] and final.model_extra["citations"][0]["used"]
    assert fake_llm[1][-1]["stream"] is True


def test_index_routes(qwen_server, qwen_index_dir):
    from qwen3_rag import Index

    listed = httpx.get(qwen_server + "/v1/indexes").json()["data"]
    assert [i["name"] for i in listed] == ["docs"] and listed[0]["writable"] is False
    one = httpx.get(qwen_server + "/v1/indexes/docs").json()
    manifest = Index.read_manifest(qwen_index_dir)
    assert one["counts"]["documents"] == 5 and one["model"] == manifest["model"]
    assert one["chunking"]["chunk_size"] == 16
    assert one["hybrid"] == "convex, BM25 confidence-weighted, alpha 0.35 (0.8 on code)"  # nothing calibrated
    models = httpx.get(qwen_server + "/v1/models").json()["data"]
    assert [(m["id"], m["task"]) for m in models] == [("tiny-qwen3", "embed"), (models[1]["id"], "rerank"),
                                                       ("fake-qwen3", "chat")]  # chat: the model it forwards to
    assert models[0]["record"]["fingerprint"] == manifest["model"]["fingerprint"]


def test_documents_are_written_through_the_write_loop(serve, tmp_path, minilm_embedder):
    from qwen3_rag import Index
    from qwen3_rag.server.resources import OpenIndex, Resources

    index = Index.create(tmp_path / "ix", minilm_embedder)
    with serve(Resources([minilm_embedder], None, [OpenIndex("notes", index, minilm_embedder)])) as url:
        docs = [{"id": "a", "text": "The backup job runs on Sundays.", "metadata": {"team": "ops"}},
                {"text": "Deploys happen on Tuesdays.", "source": "wiki/deploy"}]
        report = _post(url, "/v1/indexes/notes/documents", {"documents": docs})
        assert report["added"] == 2 and report["chunks_added"] == 2
        assert _post(url, "/v1/indexes/notes/documents", {"documents": docs})["unchanged"] == 2
        hits = _post(url, "/v1/search", {"index": "notes", "query": "when does the backup run?", "k": 1})["hits"]
        assert hits[0]["doc_id"] == "a" and hits[0]["metadata"] == {"team": "ops"}
        assert httpx.delete(url + "/v1/indexes/notes/documents/a").json()["deleted"] is True
        assert httpx.delete(url + "/v1/indexes/notes/documents/a").status_code == 404
        assert httpx.get(url + "/v1/indexes/notes").json()["counts"]["documents"] == 1
    with Index.open(tmp_path / "ix", minilm_embedder, read_only=True) as reopened:  # committed, lock released
        assert [doc_id for doc_id, _, _ in reopened.iter_documents()] != ["a"] and len(reopened) == 1


def test_concurrent_requests_are_batched_and_equal_unbatched(serve, tiny_embedder, tiny_reranker):
    """Requests that arrive while the model is busy are computed together in one call, with the results each
    gets alone (the model is held in its first call until the others have queued)."""
    import threading
    import time

    from qwen3_rag.server import ServerConfig
    from qwen3_rag.server.resources import Resources

    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []

    class Held:
        """The tiny embedder, held in its first call so that the other requests queue behind it."""

        dim, describe, count_tokens = tiny_embedder.dim, tiny_embedder.describe, tiny_embedder.count_tokens

        def embed_documents(self, texts):
            entered.set()
            release.wait(30)
            calls.append(len(texts))
            return tiny_embedder.embed_documents(texts)

        def embed_queries(self, texts, instruction=None):
            return tiny_embedder.embed_queries(texts, instruction=instruction)

    texts = [f"text number {i} about {word}" for i, word in enumerate(["logs", "gravity", "China", "deploys"] * 4)]
    with serve(Resources([Held()], tiny_reranker), ServerConfig(batch_wait_ms=0)) as url:

        def embed(text):
            return _post(url, "/v1/embeddings", {"input": text})["data"][0]["embedding"]

        with ThreadPoolExecutor(len(texts)) as pool:
            first = pool.submit(embed, texts[0])
            assert entered.wait(30)
            rest = [pool.submit(embed, t) for t in texts[1:]]
            while _queue_depth(url) < len(texts) - 1:
                time.sleep(0.01)
            release.set()
            vectors = [first.result(), *(f.result() for f in rest)]
    assert calls == [1, len(texts) - 1]  # one call for everything that queued meanwhile
    np.testing.assert_allclose(np.array(vectors, dtype=np.float32),
                               np.concatenate([tiny_embedder.embed_documents([t]) for t in texts]), atol=1e-5)


def _queue_depth(url: str) -> float:
    lines = httpx.get(url + "/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("qwen3_rag_queue_depth{"))


def test_metrics_count_requests_and_batches(qwen_server):
    _post(qwen_server, "/v1/embeddings", {"input": ["one", "two"]})
    text = httpx.get(qwen_server + "/metrics").text
    assert 'qwen3_rag_requests_total{route="/v1/embeddings",status="200"}' in text
    assert 'qwen3_rag_batch_size_count{kind="embed",model="tiny-qwen3"}' in text
    assert "qwen3_rag_tokens_embedded_total" in text and "qwen3_rag_request_seconds_bucket" in text


def test_openapi_and_docs_are_served(qwen_server):
    spec = httpx.get(qwen_server + "/openapi.json").json()
    assert {"/v1/embeddings", "/v1/rerank", "/v1/search", "/v1/context", "/v1/chat/completions",
            "/v1/indexes/{name}/documents"} <= set(spec["paths"])
    assert httpx.get(qwen_server + "/docs").status_code == 200


def test_concurrent_writes_and_searches_on_one_index(serve, tmp_path, minilm_embedder):
    """The index is used by one request at a time (its lock), the models by batches: all answers are right."""
    from qwen3_rag import Index
    from qwen3_rag.server.resources import OpenIndex, Resources

    index = Index.create(tmp_path / "ix", minilm_embedder, chunk_size=0)
    topics = ["logs", "deploys", "backups", "gravity"]
    with serve(Resources([minilm_embedder], None, [OpenIndex("notes", index, minilm_embedder)])) as url:

        def work(i: int) -> dict[str, Any]:
            doc = {"id": f"d{i}", "text": f"Note {i}: all about {topics[i % 4]} and nothing else."}
            _post(url, "/v1/indexes/notes/documents", {"documents": [doc]})
            return _post(url, "/v1/search", {"index": "notes", "query": topics[i % 4], "k": 2, "mode": "hybrid"})

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(work, range(16)))
        assert all(a["hits"] for a in answers)
        assert httpx.get(url + "/v1/indexes/notes").json()["counts"] == {"documents": 16, "chunks": 16, "vectors": 16}
        hits = _post(url, "/v1/search", {"index": "notes", "query": "Note 6: all about backups", "k": 1})["hits"]
        assert hits[0]["doc_id"] == "d6"


def test_highlights_follow_the_index_s_bm25_settings() -> None:
    """An index written before identifiers were split matches ``parse_config_file`` only whole: its highlights
    must not mark it for "config file", as a new index's do."""
    from qwen3_rag.indexers.bm25 import BM25Config
    from qwen3_rag.server.index_routes import _results
    from qwen3_rag.types import Hit

    hit = Hit(chunk_id=1, doc_id="code", text="call parse_config_file() first", score=1.0)
    new, old = (_results(["the config file"], [[hit]], True, BM25Config(identifiers=setting))[0][0]
                for setting in ("split", "none"))
    assert new["highlights"] == [[5, 22]] and old["highlights"] == []
