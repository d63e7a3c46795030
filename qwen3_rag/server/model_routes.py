"""The model routes: ``GET /v1/models``, ``POST /v1/embeddings`` (OpenAI) and ``POST /v1/rerank`` (Cohere / Jina)."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Sequence
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from qwen3_rag.pipelines.rag import approx_token_count
from qwen3_rag.retrieval.embedding import check_dim
from qwen3_rag.retrieval.inputs import check_texts
from qwen3_rag.retrieval.remote import rank_documents
from qwen3_rag.server.batching import ModelSlot
from qwen3_rag.server.errors import APIError
from qwen3_rag.server.schemas import EmbeddingRequest, RerankRequest
from qwen3_rag.server.state import NotServed, Runtime

__all__ = ["RuntimeDep", "checked_texts", "get_runtime", "router"]

router = APIRouter()


def get_runtime(request: Request) -> Runtime:
    """The running server's state; 503 while the models load."""
    runtime: Runtime | None = request.app.state.runtime
    if runtime is None:
        raise APIError(503, "the server is loading its models; retry when GET /ready answers 200", "loading",
                       {"Retry-After": "5"})
    return runtime


#: A route's argument for the running server's state.
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def checked_texts(texts: Sequence[str], name: str, limit: int) -> list[str]:
    """Texts of a request: at least one, at most ``limit``, none empty, valid Unicode (else 400)."""
    items = check_texts(texts, name)
    if not items:
        raise APIError(400, f"{name} is empty: send at least one text", "empty_input")
    if len(items) > limit:
        raise APIError(400, f"{name} holds {len(items)} texts; at most {limit} per request", "too_many_inputs")
    for i, text in enumerate(items):
        if not text:
            raise APIError(400, f"{name}[{i}] is an empty string", "empty_input")
    return items


@router.get("/v1/models")
async def models(request: Request, runtime: RuntimeDep) -> dict[str, Any]:
    """The served models (OpenAI shape; ``record`` is an embedding model's identity), and the language model chat
    forwards to (``task: "chat"``) when there is one."""
    created = int(request.app.state.started_at)
    data = [{"id": slot.name, "object": "model", "created": created, "owned_by": "qwen3-rag", "task": "embed",
             "record": slot.model.describe()} for slot in runtime.embedders]
    if runtime.reranker is not None:
        data.append({"id": runtime.reranker.name, "object": "model", "created": created, "owned_by": "qwen3-rag",
                     "task": "rerank"})
    llm = request.app.state.llm
    if llm is not None:  # the language model /v1/chat/completions forwards to
        data.append({"id": llm.model, "object": "model", "created": created, "owned_by": "qwen3-rag", "task": "chat"})
    return {"object": "list", "data": data}


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, runtime: RuntimeDep) -> JSONResponse:
    """Embed texts: documents as they are, queries (``input_type: "query"``) in the Qwen3 query format."""
    texts = checked_texts([body.input] if isinstance(body.input, str) else body.input, "input",
                          runtime.config.max_inputs)
    slot = runtime.embedder(body.model)
    dim = _dimensions(body.dimensions, slot)
    query = body.input_type == "query"
    rows = await slot.embed(texts, query=query, instruction=body.instruction if query else None)
    vectors = np.stack([vector for vector, _ in rows])
    if dim is not None:
        vectors = vectors[:, :dim]
        if getattr(slot.model, "normalize", True):  # the Matryoshka rule: slice, then normalise again
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    if not np.isfinite(vectors).all():
        raise APIError(500, "the model produced NaN or infinite values; nothing is returned", "non_finite_embedding")
    encode = _base64 if body.encoding_format == "base64" else _floats
    data = [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)]
    tokens = int(sum(n for _, n in rows))
    return JSONResponse({"object": "list", "data": data, "model": slot.name,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _dimensions(dimensions: int | None, slot: ModelSlot) -> int | None:
    if dimensions is None:
        return None
    full = int(slot.model.dim)
    check_dim(dimensions, full, slot.name)
    return None if dimensions == full else dimensions


def _floats(vector: np.ndarray) -> list[float]:
    return vector.tolist()  # type: ignore[no-any-return]


def _base64(vector: np.ndarray) -> str:
    return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")


@router.post("/v1/rerank")
async def rerank(body: RerankRequest, runtime: RuntimeDep) -> JSONResponse:
    """Score documents against a query with the server's reranker; best first."""
    slot = runtime.reranker
    if slot is None:
        raise APIError(404, "this server has no reranker; start it with --reranker MODEL", "no_reranker")
    if body.model is not None and body.model not in (slot.name, slot.name.rstrip("/").rsplit("/", 1)[-1]):
        raise NotServed(f"the reranker {body.model!r} is not served here; this server reranks with {slot.name!r}")
    texts = [d if isinstance(d, str) else d.text for d in body.documents]
    documents = checked_texts(texts, "documents", runtime.config.max_inputs)
    if not body.query.strip():
        raise APIError(400, "query is empty", "empty_input")
    scores = await slot.score([(body.query, d) for d in documents], body.instruction)
    ranked = rank_documents(scores, documents, body.top_n or None)
    results = []
    for result in ranked:
        item: dict[str, Any] = {"index": result.index, "relevance_score": result.score}
        if body.return_documents:
            item["document"] = {"text": result.document}
        results.append(item)
    # an estimate (the reranker's own count is inside its batches): query and document of every pair
    tokens = approx_token_count(body.query) * len(documents) + sum(approx_token_count(d) for d in documents)
    return JSONResponse({"id": f"rerank-{uuid.uuid4().hex}", "model": slot.name, "results": results,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}, "created": int(time.time())})
