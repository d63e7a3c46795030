"""The server's settings: limits, batching, the API key and the language model it forwards chat to."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["ServerConfig"]


@dataclass(frozen=True)
class ServerConfig:
    """How ``qwen3-rag serve`` behaves (every field has a ``--flag`` of the same name, see docs/cli.md).

    Attributes:
        api_key: With a key, every route but ``/health`` and ``/ready`` needs ``Authorization: Bearer KEY``.
        max_batch: Most texts (or rerank pairs) in one model call.
        batch_wait_ms: How long an idle model waits for more requests before it runs a batch.
        max_queue: Most texts (or pairs) waiting for a model; more gets 429 with ``Retry-After``.
        max_in_flight: Most requests being answered at once; more gets 429.
        max_body_bytes: Largest request body; larger gets 413.
        max_inputs: Most texts, documents or queries in one request.
        max_k: Largest ``k``, ``top_n`` and ``candidates`` of a search.
        timeout: Seconds a request may take; then 504.
        context_tokens: Default token budget of ``/v1/context`` and of the chat context.
        llm_url: An OpenAI-compatible server that ``/v1/chat/completions`` forwards to (None: no chat).
        llm_model: The model name sent to it.
        llm_api_key: The key sent to it.
        shutdown_timeout: Seconds a graceful shutdown waits for requests in flight.
    """

    api_key: str | None = None
    max_batch: int = 256
    batch_wait_ms: float = 2.0
    max_queue: int = 4096
    max_in_flight: int = 512
    max_body_bytes: int = 4 << 20
    max_inputs: int = 2048
    max_k: int = 1000
    timeout: float = 60.0
    context_tokens: int = 3000
    llm_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = None
    shutdown_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_in_flight", "max_body_bytes", "max_inputs", "max_k",
                     "context_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("batch_wait_ms", "timeout", "shutdown_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.max_queue < self.max_batch:
            raise ValueError(f"max_queue ({self.max_queue}) must be at least max_batch ({self.max_batch})")
        if bool(self.llm_url) != bool(self.llm_model):
            raise ValueError("chat needs both llm_url and llm_model (the server and the model name to send it)")

    def __repr__(self) -> str:  # the key never reaches a log line or a traceback
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for secret in ("api_key", "llm_api_key"):
            if fields[secret]:
                fields[secret] = "***"
        return "ServerConfig(" + ", ".join(f"{k}={v!r}" for k, v in fields.items()) + ")"
