"""The one place where a model name, or the model record an index stores, becomes a model object.

Every layer that loads a model by name (ingestion, the retriever, evaluation, the CLI, the server, the framework
adapters) calls :func:`load_embedder` / :func:`load_reranker`, so a setting recorded with an index (dimension, max
length, pooling, instruction) is applied the same way everywhere, and a model given as an ``http://`` or ``https://``
URL is a model served over HTTP (:mod:`qwen3_rag.retrieval.remote`) wherever a name is accepted.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from qwen3_rag.protocols import PairScorer, TextEmbedder
from qwen3_rag.retrieval.remote import is_remote

logger = logging.getLogger(__name__)

__all__ = ["RECORD_SETTINGS", "is_remote", "load_embedder", "load_reranker"]

#: Model-record entries that configure an embedder rebuilt from an index's record.
RECORD_SETTINGS = ("dim", "max_length", "instruction", "pooling", "normalize", "revision")
#: The settings a model served over HTTP takes (the others, such as ``device``, belong to the server).
_REMOTE_EMBEDDER_SETTINGS = ("dim", "instruction", "api_key", "batch_size", "query_template", "tokenizer", "timeout")
_REMOTE_RERANKER_SETTINGS = ("instruction", "api_key", "batch_size", "prompt", "timeout")


def load_embedder(model: str | os.PathLike[str] | None = None, *, record: Mapping[str, Any] | None = None,
                  device: str = "auto", **settings: Any) -> TextEmbedder:
    """An embedder for ``model``, or for the model an index was built with.

    Args:
        model: A hub id or local directory, or the URL of a server (``http://host:8000``: a
            :class:`~qwen3_rag.retrieval.remote.RemoteEmbedder`); None: the model named in ``record`` (for an index
            built through a server, that server), else :data:`~qwen3_rag.DEFAULT_EMBEDDING_MODEL`.
        record: An index's stored model record (``index.model_info`` or ``Index.read_manifest(loc)["model"]``):
            its settings (``dim``, ``max_length``, ``instruction``, ``pooling``, ``normalize``, ``revision``) apply
            unless given in ``settings``, so the embedder matches the index.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        **settings: Other :class:`~qwen3_rag.Embedder` arguments (``dim``, ``max_length``, ``batch_size``,
            ``max_tokens_per_batch``, ``compile``, ...); None values are ignored. A served model takes ``dim``,
            ``instruction``, ``batch_size``, ``api_key``, ``query_template``, ``tokenizer`` and ``timeout`` and
            leaves the others (``device``, ``compile``, ...) to its server.

    Raises:
        ValueError: the record names no model that can be loaded (an index built from vectors made elsewhere).
    """
    from qwen3_rag.retrieval.embedding import DEFAULT_EMBEDDING_MODEL, Embedder

    kwargs = {key: value for key, value in settings.items() if value is not None}
    if record is not None:
        if record.get("model_type") == "framework":
            raise ValueError(f"the index was built with a framework embedding ({record.get('model')}) that cannot be "
                             "loaded by name; pass that embedding object")
        if model is None:
            model = record.get("endpoint") if record.get("model_type") == "remote" else record.get("model")
            if not model:
                raise ValueError("the index records no embedding model (its vectors were made elsewhere); pass the "
                                 "embedder that made them")
            logger.info("loading the index's embedding model %s", model)
        kwargs.update({key: record[key] for key in RECORD_SETTINGS if record.get(key) is not None
                       and key not in kwargs})
        if record.get("model_type") == "remote" and is_remote(model):
            kwargs.setdefault("model", record.get("model"))
    if is_remote(model):
        from qwen3_rag.retrieval.remote import RemoteEmbedder

        return RemoteEmbedder(str(model), **_for_remote(kwargs, (*_REMOTE_EMBEDDER_SETTINGS, "model")))
    return Embedder(os.fspath(model) if model is not None else DEFAULT_EMBEDDING_MODEL, device=device, **kwargs)


def load_reranker(model: str | os.PathLike[str] | None = None, *, device: str = "auto",
                  **settings: Any) -> PairScorer:
    """A :class:`~qwen3_rag.Reranker` for ``model`` (default :data:`~qwen3_rag.DEFAULT_RERANKER_MODEL`), or for a
    URL (``http://host:8001``) a :class:`~qwen3_rag.retrieval.remote.RemoteReranker`; ``settings`` are its other
    arguments (None values ignored; a served model takes ``instruction``, ``api_key``, ``batch_size``, ``prompt``
    and ``timeout``)."""
    from qwen3_rag.retrieval.reranking import DEFAULT_RERANKER_MODEL, Reranker

    kwargs = {key: value for key, value in settings.items() if value is not None}
    if is_remote(model):
        from qwen3_rag.retrieval.remote import RemoteReranker

        return RemoteReranker(str(model), **_for_remote(kwargs, _REMOTE_RERANKER_SETTINGS))
    return Reranker(os.fspath(model) if model is not None else DEFAULT_RERANKER_MODEL, device=device, **kwargs)


def _for_remote(settings: dict[str, Any], accepted: tuple[str, ...]) -> dict[str, Any]:
    """The settings a served model takes; the rest configure a local model and are left to the server."""
    left = sorted(key for key in settings if key not in accepted)
    if left:
        logger.debug("a served model leaves %s to its server", ", ".join(left))
    return {key: value for key, value in settings.items() if key in accepted}
