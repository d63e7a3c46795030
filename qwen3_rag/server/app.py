"""The application: routes, error handling, the request guard, and loading the models in the background.

:func:`create_app` returns an ASGI application (FastAPI) to run with uvicorn; ``qwen3-rag serve`` does that. The
models load on a thread after the server has started, so ``/health`` answers at once and ``/ready`` answers 200
when they have loaded (until then the API answers 503).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from qwen3_rag._optional import require

require("fastapi", "server", "qwen3-rag serve")

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse, Response  # noqa: E402

from qwen3_rag.server import chat, index_routes, model_routes, page  # noqa: E402
from qwen3_rag.server.config import ServerConfig  # noqa: E402
from qwen3_rag.server.errors import error_body, install_error_handlers  # noqa: E402
from qwen3_rag.server.guard import Guard  # noqa: E402
from qwen3_rag.server.metrics import Metrics  # noqa: E402
from qwen3_rag.server.resources import Resources  # noqa: E402
from qwen3_rag.server.state import Runtime  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = ["create_app"]

Loader = Callable[[], Resources]


def create_app(resources: Resources | Loader, config: ServerConfig | None = None, *,
               on_load_error: Callable[[BaseException], None] | None = None) -> FastAPI:
    """The qwen3-rag HTTP service.

    Args:
        resources: The models and indexes to serve, or a function that loads them (run on a thread after the
            server starts; see :func:`~qwen3_rag.server.resources.load_resources`).
        config: Limits, batching, the API key, the language model for chat.
        on_load_error: Called with the exception when loading fails (``qwen3-rag serve`` stops the server).

    Example:
        >>> from qwen3_rag.server import create_app, load_resources, parse_index_spec  # doctest: +SKIP
        >>> app = create_app(lambda: load_resources([parse_index_spec("docs=my-index")]))  # doctest: +SKIP
        >>> import uvicorn; uvicorn.run(app, port=8000)                               # doctest: +SKIP
    """
    from qwen3_rag import __version__

    config = config or ServerConfig()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.llm = chat.LanguageModel(config) if config.llm_url else None
        loading = asyncio.ensure_future(_load(app, resources, config, metrics, on_load_error))
        try:
            yield
        finally:
            await asyncio.gather(loading, return_exceptions=True)  # a load under way finishes, then is closed
            runtime: Runtime | None = app.state.runtime
            app.state.runtime = None
            if runtime is not None:
                await runtime.stop()
            if app.state.llm is not None:
                await app.state.llm.aclose()
            logger.info("stopped; the indexes are closed")

    app = FastAPI(title="qwen3-rag", version=__version__, lifespan=lifespan,
                  description="Embeddings, reranking, search, RAG context and chat over Qwen3 models and indexes.")
    app.state.runtime = None
    app.state.load_error = None
    app.state.config = config
    app.state.metrics = metrics
    app.state.started_at = time.time()
    install_error_handlers(app)
    app.add_middleware(Guard, config=config, metrics=metrics)
    app.include_router(model_routes.router)
    app.include_router(index_routes.router)
    app.include_router(chat.router)
    app.include_router(page.router)
    _add_probes(app, metrics)
    return app


async def _load(app: FastAPI, resources: Resources | Loader, config: ServerConfig, metrics: Metrics,
                on_load_error: Callable[[BaseException], None] | None) -> None:
    def build() -> Runtime:
        loaded = resources if isinstance(resources, Resources) else resources()
        return Runtime(loaded, config, metrics.model_callbacks)

    try:
        runtime = await asyncio.get_running_loop().run_in_executor(None, build)
    except Exception as exc:
        logger.error("loading the models and indexes failed: %s", exc)
        app.state.load_error = exc
        if on_load_error is not None:
            on_load_error(exc)
        return
    runtime.start()
    app.state.runtime = runtime
    logger.info("ready: models %s, indexes %s", [s.name for s in runtime.slots], list(runtime.indexes))


def _add_probes(app: FastAPI, metrics: Metrics) -> None:
    @app.get("/health")
    async def health() -> dict[str, Any]:
        """The process answers (no key needed)."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(request: Request) -> JSONResponse:
        """200 once the models are loaded and the indexes open, else 503 (no key needed)."""
        runtime: Runtime | None = request.app.state.runtime
        if runtime is not None:
            return JSONResponse({"ready": True, "models": [s.name for s in runtime.slots],
                                 "indexes": list(runtime.indexes)})
        error = request.app.state.load_error
        if error is not None:
            return JSONResponse({"ready": False, **error_body(503, f"loading failed: {error}", "load_failed")},
                                status_code=503)
        return JSONResponse({"ready": False, "status": "loading"}, status_code=503, headers={"Retry-After": "5"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus metrics: requests, latency, queue depth, batch sizes, tokens embedded."""
        content, media_type = metrics.render()
        return Response(content, media_type=media_type)
