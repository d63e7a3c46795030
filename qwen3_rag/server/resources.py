"""What a server serves: its models and its indexes, loaded once at start through the library's one loading path
(:func:`~qwen3_rag.retrieval.models.load_embedder`, :func:`~qwen3_rag.retrieval.models.load_reranker`,
:meth:`Index.open <qwen3_rag.Index.open>`)."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from qwen3_rag.protocols import PairScorer, StorageBackend, TextEmbedder

logger = logging.getLogger(__name__)

__all__ = ["IndexSpec", "OpenIndex", "Resources", "load_resources", "parse_index_spec"]

#: What an index name may be: it appears in URLs, and is only ever looked up among the served indexes.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class IndexSpec:
    """An index to serve: the name clients use and the location it is opened at."""

    name: str
    location: str


def parse_index_spec(text: str) -> IndexSpec:
    """``NAME=LOCATION`` or ``LOCATION`` (named after the directory, or the last part of a URI).

    Raises:
        ValueError: the name is not letters, digits, ``.``, ``_`` and ``-`` (64 at most).
    """
    name, sep, location = text.partition("=")
    if not (sep and NAME.fullmatch(name) and location):
        name, location = "", text
    if not name:
        name = re.split(r"[/\\]", location.rstrip("/\\"))[-1]
        if not NAME.fullmatch(name):
            raise ValueError(f"cannot name the index at {location!r} after {name!r}: give it a name of letters, "
                             f"digits, '.', '_' and '-' as NAME=LOCATION, e.g. docs={location}")
    return IndexSpec(name, location)


@dataclass
class OpenIndex:
    """A served index: open with ``embedder`` (its model), writable unless ``read_only_reason`` says why not."""

    name: str
    index: StorageBackend
    embedder: TextEmbedder
    read_only_reason: str | None = None

    @property
    def writable(self) -> bool:
        return self.read_only_reason is None


@dataclass
class Resources:
    """Loaded models and open indexes. ``embedders[0]`` answers ``/v1/embeddings`` by default, under the name
    ``model_name`` when given (else its id)."""

    embedders: list[TextEmbedder]
    reranker: PairScorer | None = None
    indexes: list[OpenIndex] = field(default_factory=list)
    model_name: str | None = None

    def close(self) -> None:
        """Close every index (commits, publishes the search files, releases the write lock)."""
        for served in self.indexes:
            try:
                served.index.close()
            except Exception:  # one index that fails to close must not keep the others open
                logger.exception("closing the index %r failed", served.name)


def load_resources(indexes: Sequence[IndexSpec] = (), *, model: str | None = None, reranker: str | None = None,
                   device: str = "auto", read_only: bool = False, model_name: str | None = None,
                   warm: bool = True) -> Resources:
    """Load the models and open the indexes a server serves.

    Each index is opened with the embedder its model record names (``model`` instead, when given: the index
    refuses another model), writable unless ``read_only``; when another process holds an index's write lock it is
    served read-only. Indexes recording the same model share one embedder.

    Args:
        indexes: What to serve.
        model: The embedding model (a name, directory or URL); default: each index's own, and for
            ``/v1/embeddings`` the first index's, else :data:`~qwen3_rag.DEFAULT_EMBEDDING_MODEL`.
        reranker: A reranker (name, directory or URL) for ``/v1/rerank`` and reranked search; None: none.
        device: Where local models run.
        read_only: Open every index read-only.
        model_name: The name clients use for the default embedding model (default: its id or directory).
        warm: Run each model once, so its weights are loaded before the first request.

    Raises:
        FileNotFoundError: a location holds no index.
        ValueError: two indexes share a name, or a model is refused by an index.
    """
    from qwen3_rag.indexers.index import Index
    from qwen3_rag.retrieval.models import load_embedder, load_reranker

    names = [spec.name for spec in indexes]
    if len(set(names)) != len(names):
        raise ValueError(f"two indexes are named alike ({', '.join(names)}); name them as NAME=LOCATION")
    embedders: dict[str, TextEmbedder] = {}

    def shared(embedder: TextEmbedder) -> TextEmbedder:
        return embedders.setdefault(json.dumps(embedder.describe(), sort_keys=True, default=str), embedder)

    if model is not None:
        shared(load_embedder(model, device=device))
    opened: list[OpenIndex] = []
    resources = Resources([], None, opened, model_name)
    try:
        for spec in indexes:
            if not Index.exists(spec.location):
                raise FileNotFoundError(f"no index at {spec.location!r}; build one with `qwen3-rag index SOURCES... "
                                        f"--index {spec.location}`")
            record = Index.read_manifest(spec.location)["model"]
            embedder = shared(load_embedder(model, record=record, device=device))
            opened.append(_open(spec, embedder, read_only))
        if not embedders:
            shared(load_embedder(None, device=device))
        resources.embedders = list(embedders.values())
        resources.reranker = load_reranker(reranker, device=device) if reranker is not None else None
        if warm:
            _warm(resources)
    except BaseException:
        resources.close()
        raise
    return resources


def _open(spec: IndexSpec, embedder: TextEmbedder, read_only: bool) -> OpenIndex:
    from qwen3_rag.indexers.index import Index
    from qwen3_rag.indexers.manifest import IndexLockedError

    if read_only:
        return OpenIndex(spec.name, Index.open(spec.location, embedder, read_only=True), embedder,
                         "the server was started with --read-only")
    try:
        return OpenIndex(spec.name, Index.open(spec.location, embedder), embedder)
    except IndexLockedError as exc:
        logger.warning("serving the index %r read-only: %s", spec.name, exc)
        return OpenIndex(spec.name, Index.open(spec.location, embedder, read_only=True), embedder,
                         f"another process is writing to it ({exc})")


def _warm(resources: Resources) -> None:
    for embedder in resources.embedders:
        embedder.embed_documents(["warm-up"])
    if resources.reranker is not None:
        resources.reranker.score_pairs([("warm-up", "warm-up")])


def served_name(model: object) -> str:
    """The name ``/v1/models`` gives a model: its id, or its endpoint's model for a served one."""
    name = getattr(model, "model_id", None)
    return os.fspath(name) if isinstance(name, (str, os.PathLike)) else type(model).__name__
