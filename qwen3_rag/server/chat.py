"""``POST /v1/chat/completions``: retrieve, build a cited context, ask an OpenAI-compatible language model.

The question is the last user message. Its passages are found as ``/v1/search`` finds them and packed as
``/v1/context`` packs them; the last user message is replaced by the RAG prompt of
:data:`~qwen3_rag.pipelines.rag.DEFAULT_PROMPT` (context and question), earlier messages stay as the conversation,
and the request goes to the language model with its other parameters unchanged. The answer comes back in the
language model's own shape with ``citations`` added: every passage of the context, ``used`` when the answer cites
its number. With ``stream: true`` the language model's Server-Sent Events are relayed as they come, and one more
event before ``[DONE]`` carries the citations.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from qwen3_rag.pipelines.rag import DEFAULT_PROMPT
from qwen3_rag.server.config import ServerConfig
from qwen3_rag.server.errors import APIError
from qwen3_rag.server.index_routes import citations, run_context
from qwen3_rag.server.model_routes import RuntimeDep
from qwen3_rag.server.schemas import ChatRequest
from qwen3_rag.server.state import Runtime, ServedIndex

logger = logging.getLogger(__name__)

__all__ = ["LanguageModel", "router"]

router = APIRouter()

class LanguageModel:
    """An OpenAI-compatible chat server (``POST {url}/v1/chat/completions``), called with httpx."""

    def __init__(self, config: ServerConfig) -> None:
        import httpx

        url = (config.llm_url or "").rstrip("/")
        self.url = (url[:-3] if url.endswith("/v1") else url) + "/v1/chat/completions"
        self.model = config.llm_model
        headers = {"Authorization": f"Bearer {config.llm_api_key}"} if config.llm_api_key else {}
        self._client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(config.timeout or None))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def complete(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The language model's answer (one JSON object)."""
        import httpx

        try:
            response = await self._client.post(self.url, json=payload)
        except httpx.HTTPError as exc:
            raise APIError(502, f"cannot reach the language model at {self.url}: {exc}", "llm_unreachable") from None
        if response.status_code >= 400:
            raise _upstream_error(self.url, response.status_code, response.content)
        answer: dict[str, Any] = response.json()
        return answer

    async def open_stream(self, payload: dict[str, Any]) -> Any:
        """The language model's streamed answer, open (its status checked); the caller closes it."""
        import httpx

        request = self._client.build_request("POST", self.url, json=payload)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise APIError(502, f"cannot reach the language model at {self.url}: {exc}", "llm_unreachable") from None
        if response.status_code >= 400:
            body = await response.aread()
            await response.aclose()
            raise _upstream_error(self.url, response.status_code, body)
        return response


def _upstream_error(url: str, status: int, body: bytes) -> APIError:
    message = body[:300].decode("utf-8", "replace")
    try:
        error = json.loads(body).get("error")
        message = str(error.get("message") if isinstance(error, dict) else error or message)
    except (ValueError, AttributeError):
        pass
    return APIError(502, f"the language model at {url} answered {status}: {message}", "llm_error")


def _question(messages: list[dict[str, Any]]) -> tuple[int, str]:
    """The position and text of the last user message."""
    for position in range(len(messages) - 1, -1, -1):
        message = messages[position]
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):  # content parts: the text ones
            content = "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        if isinstance(content, str) and content.strip():
            return position, content
        break
    raise APIError(400, "messages holds no user message with text to answer", "invalid_value")


def _served(runtime: Runtime, name: str | None) -> ServedIndex:
    if name is not None:
        return runtime.index(name)
    if len(runtime.indexes) != 1:
        raise APIError(400, f"say which index to retrieve from with 'index' (served: {', '.join(runtime.indexes)})"
                       if runtime.indexes else "this server serves no index to retrieve from", "invalid_value")
    return next(iter(runtime.indexes.values()))


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatRequest, request: Request,
                           runtime: RuntimeDep) -> JSONResponse | StreamingResponse:
    """Answer the last user message from the index's passages, with the citations used."""
    llm: LanguageModel | None = request.app.state.llm
    if llm is None:
        raise APIError(404, "chat is off: start the server with --llm-url URL --llm-model NAME", "chat_disabled")
    position, question = _question(body.messages)
    served = _served(runtime, body.index)
    context = await run_context(runtime, served, question, body, body.max_context_tokens)
    prompt = DEFAULT_PROMPT.replace("{context}", context.text).replace("{question}", question)
    messages = [*body.messages[:position], {"role": "user", "content": prompt}, *body.messages[position + 1:]]
    # the fields that steer retrieval are the request model's own; the others (temperature, ...) go on as they are
    payload = {**(body.model_extra or {}), "model": llm.model, "messages": messages, "stream": body.stream}
    cited = citations(context)
    if not body.stream:
        answer = await llm.complete(payload)
        text = "".join(str((c.get("message") or {}).get("content") or "") for c in answer.get("choices", []))
        answer["citations"] = _mark_used(cited, text)
        return JSONResponse(answer)
    upstream = await llm.open_stream(payload)
    return StreamingResponse(_relay(upstream, cited), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


def _mark_used(cited: list[dict[str, Any]], answer: str) -> list[dict[str, Any]]:
    return [{**c, "used": f"[{c['n']}]" in answer} for c in cited]


async def _relay(upstream: Any, cited: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    """The language model's events as they come, then the citations event, then ``[DONE]``."""
    text: list[str] = []
    last: dict[str, Any] = {}
    try:
        async for line in upstream.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            try:
                chunk = json.loads(data)
            except ValueError:
                continue
            last = chunk
            for choice in chunk.get("choices") or []:
                text.append(str((choice.get("delta") or {}).get("content") or ""))
            yield f"data: {data}\n\n".encode()
    finally:
        await upstream.aclose()
    final = {"id": last.get("id", "chatcmpl-qwen3-rag"), "object": "chat.completion.chunk",
             "created": last.get("created", 0), "model": last.get("model", ""), "choices": [],
             "citations": _mark_used(cited, "".join(text))}
    yield f"data: {json.dumps(final)}\n\n".encode()
    yield b"data: [DONE]\n\n"
