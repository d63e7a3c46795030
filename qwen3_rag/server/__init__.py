"""``qwen3-rag serve``: the HTTP service chatbots and other services call (optional extra ``[server]``).

OpenAI ``/v1/embeddings`` and ``/v1/chat/completions``, Cohere / Jina ``/v1/rerank``, ``/v1/search`` and
``/v1/context`` over served indexes, document writes, health, readiness and Prometheus metrics; concurrent
requests are batched for the models. docs/server.md describes every route. The server translates: searching is
:class:`~qwen3_rag.Retriever`, the context is :func:`~qwen3_rag.build_context`, writing is the write loop.

Importing this package needs ``pip install 'qwen3-rag[server]'`` (FastAPI, uvicorn, prometheus-client);
``import qwen3_rag`` never imports it.
"""

from qwen3_rag.server.app import create_app
from qwen3_rag.server.config import ServerConfig
from qwen3_rag.server.resources import IndexSpec, Resources, load_resources, parse_index_spec

__all__ = ["IndexSpec", "Resources", "ServerConfig", "create_app", "load_resources", "parse_index_spec"]
