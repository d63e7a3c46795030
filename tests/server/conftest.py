"""Fixtures of the server tests: real servers (uvicorn on a free loopback port, in a thread) over the tiny Qwen3
models and MiniLM, a fake OpenAI-compatible language model and a fake vLLM that answers in vLLM's exact shapes."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from fastapi import FastAPI, Request  # noqa: E402 - the fake servers' routes are resolved from module globals
from fastapi.responses import JSONResponse, StreamingResponse  # noqa: E402

CORPUS = [
    ("ops.md", "# Ops\n\nLogs are rotated nightly by logrotate. Old logs are compressed and kept for a week.",
     {"team": "ops", "year": 2023}),
    ("deploy.md", "# Deploys\n\nDeploys go out on Tuesdays after the tests pass on the main branch.",
     {"team": "dev", "year": 2024}),
    ("backup.md", "# Backups\n\nBackups run every Sunday night and are copied to a second site.",
     {"team": "ops", "year": 2022}),
    ("gravity.txt", "Gravity is a force that attracts two bodies towards each other.",
     {"team": "science", "year": 1687}),
    ("beijing.txt", "The capital of China is Beijing.", {"team": "geo", "year": 2020}),
]
FAKE_ANSWER = "Logs are rotated nightly [1]."


def documents() -> list[Any]:
    from qwen3_rag import Document

    return [Document(id=name, text=text, source=f"docs/{name}", metadata=meta) for name, text, meta in CORPUS]


@pytest.fixture()
def corpus() -> list[Any]:
    """The corpus as Documents."""
    return documents()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running(app: Any, *, ready: bool = True) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields its base URL, stops it after."""
    import httpx
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=10))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        while ready and httpx.get(f"{url}/ready").status_code != 200:
            assert time.monotonic() < deadline, "the server did not get ready"
            time.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="session")
def qwen_index_dir(tmp_path_factory: pytest.TempPathFactory, tiny_embedder: Any) -> Path:
    """An index of the corpus built with the tiny Qwen3 embedder (small chunks, so documents have several)."""
    from qwen3_rag import Index, ingest_documents

    path = tmp_path_factory.mktemp("qwen-index") / "docs"
    with Index.create(path, tiny_embedder, chunk_size=16, chunk_overlap=4) as index:
        ingest_documents(documents(), index)
    return path


@pytest.fixture(scope="session")
def fake_llm() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """An OpenAI-compatible chat server that answers :data:`FAKE_ANSWER` (streamed in three events when asked);
    yields its URL and the requests it received."""
    received: list[dict[str, Any]] = []
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> Any:
        body = await request.json()
        received.append(body)
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:8]}", int(time.time())
        if not body.get("stream"):
            return JSONResponse({"id": ident, "object": "chat.completion", "created": created, "model": body["model"],
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": FAKE_ANSWER}}],
                                 "usage": {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17}})

        def events() -> Iterator[str]:
            parts = ["Logs are rotated ", "nightly ", "[1]."]
            for i, part in enumerate(parts):
                delta = {"role": "assistant", "content": part} if i == 0 else {"content": part}
                chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": body["model"],
                         "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n"
            end = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": body["model"],
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            yield f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    with running(app, ready=False) as url:
        yield url, received


@pytest.fixture(scope="session")
def qwen_server(tiny_embedder: Any, tiny_reranker: Any, qwen_index_dir: Path,
                fake_llm: tuple[str, list[dict[str, Any]]]) -> Iterator[str]:
    """A server over the tiny Qwen3 embedder and reranker, the corpus index (read-only: it is shared) and the fake
    language model; no API key."""
    from qwen3_rag import Index
    from qwen3_rag.server import ServerConfig, create_app
    from qwen3_rag.server.resources import OpenIndex, Resources

    index = Index.open(qwen_index_dir, tiny_embedder, read_only=True)
    resources = Resources([tiny_embedder], tiny_reranker, [OpenIndex("docs", index, tiny_embedder, "shared")],
                          model_name="tiny-qwen3")
    config = ServerConfig(llm_url=fake_llm[0] + "/v1", llm_model="fake-qwen3", batch_wait_ms=5)
    with running(create_app(resources, config)) as url:
        yield url


def _start(resources: Any, config: Any = None, *, ready: bool = True, **kwargs: Any) -> Any:
    from qwen3_rag.server import create_app

    return running(create_app(resources, config, **kwargs), ready=ready)


@pytest.fixture()
def serve() -> Callable[..., Any]:
    """``serve(resources, config, ready=True, **create_app_options) -> context manager`` yielding the URL of a
    server over them (once it is ready, unless ``ready=False``)."""
    return _start


@pytest.fixture(scope="module")
def serve_for_module() -> Callable[..., Any]:
    """:func:`serve` for a module-scoped server (one that a module's tests share)."""
    return _start


class FakeVLLM:
    """``vllm serve`` in miniature: ``/v1/models``, ``/v1/embeddings`` and ``/v1/rerank`` answered in the shapes of
    vLLM's OpenAI-compatible server (``vllm/entrypoints/pooling``), computed with the local tiny models.

    ``matryoshka``: started with ``--hf-overrides '{"is_matryoshka": true}'`` (else ``dimensions`` is refused as
    vLLM refuses it). ``template``: started with the Qwen3 reranker chat template (``instruction`` is applied, the
    query and document are formatted server-side); else the query and document texts are concatenated, as vLLM
    does without a template, and must already hold the whole prompt.
    """

    def __init__(self, embedder: Any, reranker: Any, *, name: str, matryoshka: bool = True,
                 template: bool = True) -> None:
        self.embedder, self.reranker, self.name = embedder, reranker, name
        self.matryoshka, self.template = matryoshka, template
        self.requests: list[tuple[str, dict[str, Any]]] = []

    def app(self) -> Any:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> Any:
            return {"object": "list", "data": [{"id": self.name, "object": "model", "created": int(time.time()),
                                                "owned_by": "vllm", "root": self.name, "parent": None,
                                                "max_model_len": 1024, "permission": []}]}

        @app.post("/v1/embeddings")
        async def embeddings(request: Request) -> Any:
            body = await request.json()
            self.requests.append(("embeddings", body))
            if body.get("model") not in (None, self.name):
                return _vllm_error(404, f"The model `{body.get('model')}` does not exist.", "NotFoundError")
            if body.get("dimensions") is not None and not self.matryoshka:
                return _vllm_error(400, f'Model "{self.name}" does not support matryoshka representation, '
                                        "changing output dimensions will lead to poor results.", "BadRequestError")
            return JSONResponse(self._embed(body))

        @app.post("/v1/rerank")
        async def rerank(request: Request) -> Any:
            body = await request.json()
            self.requests.append(("rerank", body))
            return JSONResponse(self._rerank(body))

        return app

    def _embed(self, body: dict[str, Any]) -> dict[str, Any]:
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        vectors = self.embedder.embed_documents(texts)  # the pooler: last token, normalised
        if body.get("dimensions") is not None:
            vectors = vectors[:, : body["dimensions"]]
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        data = []
        for i, vector in enumerate(vectors):
            value: Any = (base64.b64encode(vector.astype(np.float32).tobytes()).decode()
                          if body.get("encoding_format") == "base64" else vector.tolist())
            data.append({"index": i, "object": "embedding", "embedding": value})
        tokens = sum(len(ids) for ids in self.embedder.tokenize(texts))
        return {"id": f"embd-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()), "model": self.name,
                "data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0,
                                        "prompt_tokens_details": None}}

    def _rerank(self, body: dict[str, Any]) -> dict[str, Any]:
        from qwen3_rag.retrieval.prompts import DEFAULT_INSTRUCTION, RERANKER_PREFIX, RERANKER_SUFFIX

        query, documents = body["query"], body["documents"]
        if self.template:
            scores = self.reranker.score(query, documents, body.get("instruction") or DEFAULT_INSTRUCTION)
        else:  # the prompt is query + document as sent: it must be the whole Qwen3-Reranker input
            scores = []
            for document in documents:
                text = query + document
                assert text.startswith(RERANKER_PREFIX) and text.endswith(RERANKER_SUFFIX), text[:120]
                body_text = text[len(RERANKER_PREFIX):-len(RERANKER_SUFFIX)]
                head, _, doc = body_text.partition("\n<Document>: ")
                instruction, _, q = head.removeprefix("<Instruct>: ").partition("\n<Query>: ")
                scores.append(self.reranker.score(q, [doc], instruction)[0])
        results = sorted(({"index": i, "document": {"text": d, "multi_modal": None}, "relevance_score": s}
                          for i, (d, s) in enumerate(zip(documents, scores, strict=True))),
                         key=lambda r: r["relevance_score"], reverse=True)
        top_n = body.get("top_n") or len(results)
        tokens = 10 * len(documents)
        return {"id": f"rerank-{uuid.uuid4().hex}", "model": self.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}, "results": results[:top_n]}


def _vllm_error(status: int, message: str, kind: str) -> Any:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status}},
                        status_code=status)


@pytest.fixture()
def fake_vllm(tiny_embedder: Any, tiny_reranker: Any) -> Callable[..., Any]:
    """``fake_vllm(**options) -> (context manager yielding its URL, the FakeVLLM)``."""

    def start(**options: Any) -> tuple[Any, FakeVLLM]:
        fake = FakeVLLM(tiny_embedder, tiny_reranker, name=options.pop("name", "Qwen/Qwen3-Embedding-0.6B"), **options)
        return running(fake.app(), ready=False), fake

    return start


class HeldEmbedder:
    """An embedder (the tiny Qwen3 one) that holds every call until ``release`` is set, after setting ``entered``:
    a test can act while a batch runs. ``nan=True`` makes it return NaN vectors."""

    def __init__(self, embedder: Any, *, nan: bool = False) -> None:
        self._embedder = embedder
        self.dim = embedder.dim
        self.entered = threading.Event()
        self.release = threading.Event()
        self.nan = nan

    def describe(self) -> dict[str, Any]:
        return {**self._embedder.describe(), "model": "held"}

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        self.entered.set()
        assert self.release.wait(60), "the test never released the model"
        vectors = self._embedder.embed_documents(texts)
        return vectors * np.nan if self.nan else vectors

    def embed_queries(self, texts: list[str], instruction: str | None = None) -> np.ndarray:
        return self.embed_documents(texts)


@pytest.fixture()
def held_embedder(tiny_embedder: Any) -> Callable[..., HeldEmbedder]:
    return lambda **options: HeldEmbedder(tiny_embedder, **options)
