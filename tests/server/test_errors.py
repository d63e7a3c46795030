"""Bad requests get the right 4xx with a JSON message (never a 500); the limits, the API key, time-outs, back-pressure,
a busy model and shutdown behave as documented."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from qwen3_rag.server import ServerConfig
from qwen3_rag.server.resources import Resources

BAD_REQUESTS = {
    "wrong type: input is a number": ("/v1/embeddings", {"input": 123}, 400, "input"),
    "wrong type: k is a string": ("/v1/search", {"index": "docs", "query": "logs", "k": "5"}, 400, "k"),
    "wrong type: documents is a string": ("/v1/rerank", {"query": "q", "documents": "d"}, 400, "documents"),
    "wrong type: token ids as input": ("/v1/embeddings", {"input": [[1, 2, 3]]}, 400, "input"),
    "empty input list": ("/v1/embeddings", {"input": []}, 400, "empty"),
    "empty input text": ("/v1/embeddings", {"input": ""}, 400, "empty"),
    "empty documents": ("/v1/rerank", {"query": "q", "documents": []}, 400, "empty"),
    "empty query": ("/v1/search", {"index": "docs", "query": ""}, 400, "empty"),
    "query and queries": ("/v1/search", {"index": "docs", "query": "a", "queries": ["b"]}, 400, "either"),
    "not Unicode text": ("/v1/embeddings", {"input": ["ok", "bad \ud800"]}, 400, "surrogate"),
    "unknown index": ("/v1/search", {"index": "../../etc", "query": "logs"}, 404, "no index named"),
    "unknown model": ("/v1/embeddings", {"input": "x", "model": "text-embedding-3-small"}, 404, "not served"),
    "unknown reranker": ("/v1/rerank", {"query": "q", "documents": ["d"], "model": "other"}, 404, "not served"),
    "bad filter": ("/v1/search", {"index": "docs", "query": "logs", "filter": {"year": {"$near": 3}}}, 400,
                   "bad filter"),
    "k=0": ("/v1/search", {"index": "docs", "query": "logs", "k": 0}, 400, "k must be a positive int"),
    "k over the limit": ("/v1/search", {"index": "docs", "query": "logs", "k": 10**6}, 400, "limit"),
    "dimensions out of range": ("/v1/embeddings", {"input": "x", "dimensions": 8}, 400, "dim=8"),
    "unknown mode": ("/v1/search", {"index": "docs", "query": "logs", "mode": "fuzzy"}, 400, "mode"),
    "context of many queries": ("/v1/context", {"index": "docs", "queries": ["a"]}, 400, "one query"),
    "chat without a question": ("/v1/chat/completions", {"messages": [{"role": "system", "content": "hi"}]}, 400,
                                "no user message"),
    "write to a read-only index": ("/v1/indexes/docs/documents", {"documents": [{"text": "t"}]}, 409, "read-only"),
}


@pytest.mark.parametrize("path, body, status, words", list(BAD_REQUESTS.values()), ids=list(BAD_REQUESTS))
def test_bad_request(qwen_server, path, body, status, words):
    # json.dumps escapes what is not Unicode (a lone surrogate), as a client in another language may send it
    response = httpx.post(qwen_server + path, content=json.dumps(body), timeout=60,
                          headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"] and error["type"] and "code" in error


def test_invalid_json(qwen_server):
    response = httpx.post(qwen_server + "/v1/embeddings", content=b'{"input": ', timeout=60,
                          headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


def test_ten_megabyte_body(qwen_server):
    response = httpx.post(qwen_server + "/v1/embeddings", json={"input": "x" * (10 << 20)}, timeout=60)
    assert response.status_code == 413
    assert "larger than the server's limit" in response.json()["error"]["message"]


def test_streamed_body_over_the_limit(qwen_server):
    def chunks():
        yield b'{"input": "'
        for _ in range(10):
            yield b"x" * (1 << 20)
        yield b'"}'

    response = httpx.post(qwen_server + "/v1/embeddings", content=chunks(), timeout=60,
                          headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"


def test_unknown_route_and_method_answer_json(qwen_server):
    assert httpx.get(qwen_server + "/v1/nothing").json()["error"]["type"] == "not_found_error"
    assert httpx.get(qwen_server + "/v1/embeddings").status_code == 405


@pytest.fixture()
def keyed(serve, tiny_embedder):
    with serve(Resources([tiny_embedder]), ServerConfig(api_key="s3cret-key")) as url:
        yield url


@pytest.mark.parametrize("headers, status, code", [
    ({}, 401, "missing_api_key"),
    ({"Authorization": "Bearer wrong-key"}, 401, "invalid_api_key"),
    ({"Authorization": "Basic czNjcmV0LWtleQ=="}, 401, "missing_api_key"),
    ({"Authorization": "Bearer s3cret-key"}, 200, None),
], ids=["missing key", "wrong key", "other scheme", "right key"])
def test_api_key(keyed, headers, status, code):
    response = httpx.post(keyed + "/v1/embeddings", json={"input": "x"}, headers=headers)
    assert response.status_code == status
    if code:
        assert response.json()["error"]["code"] == code and response.headers["www-authenticate"] == "Bearer"


def test_probes_and_the_web_page_need_no_key_and_the_rest_does(keyed):
    assert httpx.get(keyed + "/health").status_code == 200 and httpx.get(keyed + "/ready").status_code == 200
    for path in ("/metrics", "/docs", "/openapi.json", "/v1/models", "/v1/indexes", "/statics/app.js"):
        assert httpx.get(keyed + path).status_code == 401, path
    page = httpx.get(keyed + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"] and "/static/app.js" in page.text
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        asset = httpx.get(f"{keyed}/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind), name
    for name in ("page.py", "..%2Fpage.py", "index.htm"):  # only the page's own files are served
        missing = httpx.get(f"{keyed}/static/{name}")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found", name


def test_the_key_is_never_logged(serve, tiny_embedder, caplog):
    caplog.set_level(logging.DEBUG)
    config = ServerConfig(api_key="s3cret-key")
    with serve(Resources([tiny_embedder]), config) as url:
        httpx.post(url + "/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer s3cret-key"})
        httpx.post(url + "/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer s3cret-kez"})
    logging.getLogger("test").info("config %r", config)
    assert caplog.records and "s3cret" not in caplog.text and "s3cret" not in repr(config)


def test_health_answers_while_a_batch_runs(serve, held_embedder):
    model = held_embedder()
    with serve(Resources([model])) as url, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, url + "/v1/embeddings", json={"input": "x"}, timeout=60)
        assert model.entered.wait(30)
        assert httpx.get(url + "/health", timeout=10).json() == {"status": "ok"}  # the loop is not blocked
        assert httpx.get(url + "/ready", timeout=10).json()["ready"] is True
        model.release.set()
        assert pending.result().status_code == 200


def test_a_full_queue_answers_429_with_retry_after(serve, held_embedder):
    model = held_embedder()
    with serve(Resources([model]), ServerConfig(max_batch=1, max_queue=2, batch_wait_ms=0)) as url, \
            ThreadPoolExecutor(3) as pool:
        first = pool.submit(httpx.post, url + "/v1/embeddings", json={"input": "a"}, timeout=60)
        assert model.entered.wait(30)
        queued = [pool.submit(httpx.post, url + "/v1/embeddings", json={"input": t}, timeout=60) for t in "bc"]
        while _depth(url) < 2:
            pass
        refused = httpx.post(url + "/v1/embeddings", json={"input": "d"}, timeout=60)
        model.release.set()
        assert [f.result().status_code for f in (first, *queued)] == [200, 200, 200]
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "queue_full"


def _depth(url: str) -> float:
    lines = httpx.get(url + "/metrics").text.splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("qwen3_rag_queue_depth{"))


def test_a_slow_request_times_out_with_504(serve, held_embedder):
    model = held_embedder()
    with serve(Resources([model]), ServerConfig(timeout=0.5)) as url:
        response = httpx.post(url + "/v1/embeddings", json={"input": "x"}, timeout=60)
        model.release.set()
        assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"
        assert httpx.post(url + "/v1/embeddings", json={"input": "y"}, timeout=60).status_code == 200


def test_non_finite_vectors_are_an_error_never_a_200(serve, held_embedder):
    model = held_embedder(nan=True)
    model.release.set()
    with serve(Resources([model])) as url:
        response = httpx.post(url + "/v1/embeddings", json={"input": "x"}, timeout=60)
    assert response.status_code == 500 and response.json()["error"]["code"] == "non_finite_embedding"


def test_graceful_shutdown_finishes_requests_in_flight(serve, held_embedder):
    model = held_embedder()
    stack = contextlib.ExitStack()
    url = stack.enter_context(serve(Resources([model])))
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, url + "/v1/embeddings", json={"input": "x"}, timeout=60)
        assert model.entered.wait(30)
        closing = threading.Thread(target=stack.close)
        closing.start()
        while _accepting(url):  # the server stops taking new connections, and waits for the request it has
            pass
        model.release.set()
        closing.join(30)
        assert pending.result().status_code == 200 and not closing.is_alive()


def _accepting(url: str) -> bool:
    try:
        httpx.get(url + "/health", timeout=1)
    except httpx.HTTPError:
        return False
    return True


def test_an_index_locked_by_another_writer_is_served_read_only(serve, tmp_path, minilm_embedder):
    from qwen3_rag import Index
    from qwen3_rag.server import IndexSpec, load_resources

    Index.create(tmp_path / "ix", minilm_embedder).close()
    with Index.open(tmp_path / "ix", minilm_embedder):  # another writer holds the lock
        resources = load_resources([IndexSpec("notes", str(tmp_path / "ix"))], model=_model_dir(minilm_embedder),
                                   device="cpu", warm=False)
        with serve(resources) as url:
            info = httpx.get(url + "/v1/indexes/notes").json()
            response = httpx.post(url + "/v1/indexes/notes/documents", json={"documents": [{"text": "t"}]})
    assert info["writable"] is False and "another process is writing" in info["read_only_reason"]
    assert response.status_code == 409 and response.json()["error"]["code"] == "read_only"
    assert "another process is writing" in response.json()["error"]["message"]


def _model_dir(embedder: Any) -> str:
    return str(embedder.model_id)


def test_rerank_without_a_reranker(serve, tiny_embedder):
    with serve(Resources([tiny_embedder])) as url:
        response = httpx.post(url + "/v1/rerank", json={"query": "q", "documents": ["d"]})
    assert response.status_code == 404 and "--reranker" in response.json()["error"]["message"]


def test_api_before_ready_answers_503(serve, tiny_embedder):
    gate = threading.Event()

    def load() -> Resources:
        assert gate.wait(30)
        return Resources([tiny_embedder])

    with serve(load, ready=False) as url:
        assert httpx.get(url + "/health").status_code == 200
        assert httpx.get(url + "/ready").status_code == 503
        early = httpx.post(url + "/v1/embeddings", json={"input": "x"})
        gate.set()
        while httpx.get(url + "/ready").status_code != 200:
            pass
        assert httpx.post(url + "/v1/embeddings", json={"input": "x"}).status_code == 200
    assert early.status_code == 503 and early.json()["error"]["code"] == "loading" and early.headers["retry-after"]


def test_a_load_failure_is_reported(serve):
    failures: list[BaseException] = []

    def load() -> Resources:
        raise FileNotFoundError("no index at 'missing'")

    with serve(load, ready=False, on_load_error=failures.append) as url:
        while not failures:
            pass
        ready = httpx.get(url + "/ready")
    assert ready.status_code == 503 and "no index at 'missing'" in ready.json()["error"]["message"]
