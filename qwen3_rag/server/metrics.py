"""Prometheus metrics of one server (``GET /metrics``): requests, latency, queue depth, batch sizes, tokens."""

from __future__ import annotations

from collections.abc import Callable

from qwen3_rag._optional import require

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The server's metrics, in a registry of its own (several servers can live in one process, e.g. in tests)."""

    def __init__(self) -> None:
        prometheus = require("prometheus_client", "server", "the server's /metrics")
        self._prometheus = prometheus
        self.registry = prometheus.CollectorRegistry()
        r = self.registry
        self.requests = prometheus.Counter("qwen3_rag_requests", "HTTP requests answered",
                                           ["route", "status"], registry=r)
        self.latency = prometheus.Histogram("qwen3_rag_request_seconds", "Time to answer a request",
                                            ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_depth = prometheus.Gauge("qwen3_rag_queue_depth", "Texts or pairs waiting for a model",
                                            ["model", "kind"], registry=r)
        self.batch_size = prometheus.Histogram("qwen3_rag_batch_size", "Texts or pairs per model call",
                                               ["model", "kind"], buckets=_BATCH_BUCKETS, registry=r)
        self.tokens = prometheus.Counter("qwen3_rag_tokens_embedded", "Tokens of the texts embedded",
                                         ["model"], registry=r)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def model_callbacks(self, kind: str, name: str) -> tuple[Callable[[int], None], ...]:
        """``(on_depth, on_batch, on_tokens)`` for one model's slot."""
        depth = self.queue_depth.labels(name, kind)
        batch = self.batch_size.labels(name, kind)
        tokens = self.tokens.labels(name)
        return depth.set, batch.observe, tokens.inc

    def render(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and its content type."""
        return self._prometheus.generate_latest(self.registry), self._prometheus.CONTENT_TYPE_LATEST
