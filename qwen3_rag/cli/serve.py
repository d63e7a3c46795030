"""``qwen3-rag serve [INDEX ...]``: serve indexes and models over HTTP (docs/server.md)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from typing import Any

from qwen3_rag.cli import CLIError

#: Where the server's API key and the language model's key are read when no flag gives them.
API_KEY_ENV = "QWEN3_RAG_API_KEY"
LLM_API_KEY_ENV = "QWEN3_RAG_LLM_API_KEY"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve indexes and models over HTTP (OpenAI and Cohere APIs, search, RAG chat)",
        description="Serve indexes and models over HTTP: /v1/embeddings and /v1/chat/completions (OpenAI), "
                    "/v1/rerank (Cohere / Jina), /v1/search, /v1/context, document writes, /health, /ready, "
                    "/metrics. Concurrent requests are batched for the models. See docs/server.md.",
        epilog="example: qwen3-rag serve docs=my-index --reranker Qwen/Qwen3-Reranker-0.6B --port 8000",
    )
    p.add_argument("indexes", nargs="*", metavar="INDEX",
                   help="an index to serve: a directory or backend URI, optionally NAME=LOCATION (default name: "
                        "the directory's name); none: serve the models only")
    p.add_argument("--model", default=None, metavar="M",
                   help="embedding model: id, directory or http(s):// URL of a server (default: each index's own, "
                        "else Qwen/Qwen3-Embedding-0.6B)")
    p.add_argument("--served-model-name", default=None, metavar="NAME",
                   help="the name clients send as 'model' for the embedding model (default: its id or directory)")
    p.add_argument("--reranker", default=None, metavar="R",
                   help="reranker for /v1/rerank and reranked search: id, directory or URL (default: none)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", default=None, metavar="KEY",
                   help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}; prefer the variable, a "
                        "flag shows in the process list)")
    p.add_argument("--llm-url", default=None, metavar="URL",
                   help="OpenAI-compatible server that /v1/chat/completions forwards to (e.g. vLLM serving Qwen3)")
    p.add_argument("--llm-model", default=None, metavar="NAME", help="the model name sent to --llm-url")
    p.add_argument("--llm-api-key", default=None, metavar="KEY",
                   help=f"key for --llm-url (default: ${LLM_API_KEY_ENV})")
    p.add_argument("--device", default="auto", metavar="D", help="device for local models (auto, cpu, cuda, ...)")
    p.add_argument("--read-only", action="store_true", help="serve every index read-only (no document writes)")
    p.add_argument("--max-batch", type=int, default=256, metavar="N", help="most texts per model call (256)")
    p.add_argument("--batch-wait-ms", type=float, default=2.0, metavar="MS",
                   help="how long an idle model waits for more requests to batch (2)")
    p.add_argument("--max-queue", type=int, default=4096, metavar="N",
                   help="most texts waiting per model; beyond it 429 (4096)")
    p.add_argument("--max-inputs", type=int, default=2048, metavar="N", help="most texts per request (2048)")
    p.add_argument("--max-body-bytes", type=int, default=4 << 20, metavar="N",
                   help="largest request body; larger gets 413 (4 MiB)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S", help="seconds per request; then 504 (60)")
    p.add_argument("--context-tokens", type=int, default=3000, metavar="N",
                   help="default token budget of /v1/context and of chat (3000)")
    p.set_defaults(run=run)


def _config(args: argparse.Namespace) -> Any:
    from qwen3_rag.server.config import ServerConfig

    try:
        return ServerConfig(api_key=args.api_key or os.environ.get(API_KEY_ENV) or None, max_batch=args.max_batch,
                            batch_wait_ms=args.batch_wait_ms, max_queue=args.max_queue, max_inputs=args.max_inputs,
                            max_body_bytes=args.max_body_bytes, timeout=args.timeout,
                            context_tokens=args.context_tokens, llm_url=args.llm_url, llm_model=args.llm_model,
                            llm_api_key=args.llm_api_key or os.environ.get(LLM_API_KEY_ENV) or None)
    except ValueError as exc:
        raise CLIError(str(exc).replace("llm_url", "--llm-url").replace("llm_model", "--llm-model")) from None


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def run(args: argparse.Namespace) -> int:
    from qwen3_rag._optional import require
    from qwen3_rag.cli import require_index

    uvicorn = require("uvicorn", "server", "qwen3-rag serve")
    from qwen3_rag.server import create_app, load_resources, parse_index_spec

    try:
        specs = [parse_index_spec(text) for text in args.indexes]
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    for spec in specs:
        require_index(spec.location)
    config = _config(args)
    if config.api_key is None and not _loopback(args.host):
        logging.getLogger(__name__).warning("serving on %s without an API key: anyone who reaches it can use it "
                                            "(set %s)", args.host, API_KEY_ENV)
    failed: list[BaseException] = []

    def load() -> Any:
        return load_resources(specs, model=args.model, reranker=args.reranker, device=args.device,
                              read_only=args.read_only, model_name=args.served_model_name)

    def stop(exc: BaseException) -> None:
        failed.append(exc)
        server.should_exit = True

    app = create_app(load, config, on_load_error=stop)
    logging.getLogger("qwen3_rag.server").setLevel(logging.INFO if args.verbose < 2 else logging.DEBUG)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, access_log=args.verbose > 0,
                                           timeout_graceful_shutdown=int(config.shutdown_timeout),
                                           log_level="info" if args.verbose < 2 else "debug"))
    server.run()
    if failed:
        raise CLIError(f"cannot serve: {failed[0]}")
    return 0
