"""LlamaIndex adapters: an embedding model, a vector store over an index directory, and a reranker.

Install with ``pip install 'qwen3-rag[llamaindex]'``.

Example:
    >>> from llama_index.core import StorageContext, VectorStoreIndex           # doctest: +SKIP
    >>> from qwen3_rag.integrations.llamaindex import (                         # doctest: +SKIP
    ...     Qwen3Embedding, Qwen3Rerank, Qwen3VectorStore)
    >>> context = StorageContext.from_defaults(vector_store=Qwen3VectorStore("my-index"))  # doctest: +SKIP
    >>> index = VectorStoreIndex.from_documents(                               # doctest: +SKIP
    ...     docs, storage_context=context, embed_model=Qwen3Embedding())
    >>> engine = index.as_query_engine(node_postprocessors=[Qwen3Rerank(top_n=3)], llm=llm)  # doctest: +SKIP

Every class holds a core object (:class:`~qwen3_rag.Embedder`, :class:`~qwen3_rag.indexers.index.Index`,
:class:`~qwen3_rag.Reranker`) and only converts between LlamaIndex's types and the core's.
"""

# ruff: noqa: E402  (the extra is checked before anything imports it)
from __future__ import annotations

from qwen3_rag._optional import require

require("llama_index.core", "llamaindex", "qwen3_rag.integrations.llamaindex")

import asyncio
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import (
    BaseNode,
    MetadataMode,
    NodeRelationship,
    NodeWithScore,
    QueryBundle,
    RelatedNodeInfo,
    TextNode,
)
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from qwen3_rag.indexers.filters import FilterError
from qwen3_rag.integrations import _common as common
from qwen3_rag.pipelines.documents import DocumentError
from qwen3_rag.protocols import PairScorer, StorageBackend, TextEmbedder
from qwen3_rag.retrieval import DEFAULT_EMBEDDING_MODEL, DEFAULT_RERANKER_MODEL
from qwen3_rag.retrieval.models import load_embedder, load_reranker
from qwen3_rag.types import Chunk, check_metadata
from qwen3_rag.types import Document as CoreDocument

__all__ = ["Qwen3Embedding", "Qwen3Rerank", "Qwen3VectorStore", "translate_filters"]


_COMPARE = {
    FilterOperator.EQ: "$eq",
    FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte",
    FilterOperator.LT: "$lt",
    FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in",
}
_SUPPORTED = "EQ, NE, GT, GTE, LT, LTE, IN, NIN with AND / OR / NOT"


def translate_filters(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """Translate LlamaIndex :class:`MetadataFilters` into the core filter dialect (run inside the FAISS
    search).

    Semantics follow LlamaIndex's own ``SimpleVectorStore``: ``NE`` and ``NIN`` also match nodes without the
    field, ``NOT`` matches when none of its filters match, and a missing field never matches the other
    operators.

    Raises:
        FilterError: for an operator other than EQ, NE, GT, GTE, LT, LTE, IN, NIN.
    """
    if filters is None or not filters.filters:
        return None
    parts: list[dict[str, Any]] = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            sub = translate_filters(f)
            if sub is not None:
                parts.append(sub)
            continue
        op = getattr(f, "operator", FilterOperator.EQ)
        value = list(f.value) if isinstance(f.value, (list, tuple)) else f.value
        if op in _COMPARE:
            parts.append({f.key: {_COMPARE[op]: value}})
        elif op == FilterOperator.NE:
            parts.append({"$not": {f.key: {"$eq": value}}})
        elif op == FilterOperator.NIN:
            parts.append({"$not": {f.key: {"$in": value}}})
        else:
            raise FilterError(
                f"filter on {f.key!r}: operator {op.name} is not supported; supported: {_SUPPORTED}"
            )
    if not parts:
        return None
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        return parts[0] if len(parts) == 1 else {"$and": parts}
    if condition == FilterCondition.OR:
        return {"$or": parts}
    if condition == FilterCondition.NOT:
        return {"$not": {"$or": parts}}
    raise FilterError(f"filter condition {condition!r} is not supported; supported: {_SUPPORTED}")


# -- embeddings
# --------------------------------------------------------------------------------------------------------


class _LazyCore(BaseModel):
    """Fields of an adapter whose core model is loaded on first use (see ``built_once``)."""

    device: str = "auto"
    instruction: str | None = None
    model_kwargs: dict[str, Any] = Field(default_factory=dict)

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def class_name(cls) -> str:
        return cls.__name__


class Qwen3Embedding(_LazyCore, BaseEmbedding):
    """LlamaIndex embedding model over a :class:`~qwen3_rag.Embedder`.

    Queries get the query instruction, texts are embedded raw; ``get_text_embedding_batch`` sends each batch
    of ``embed_batch_size`` texts to the core embedder at once (which batches by token budget). Async methods
    run in a worker thread so that they do not block the event loop.

    Args:
        embedder: A :class:`~qwen3_rag.Embedder` (or anything with its interface). When omitted, one is built
            from ``model_name`` on first use, so constructing this object loads nothing.
        model_name: Model id or directory used when ``embedder`` is not given.
        device: Device for the embedder built from ``model_name``.
        instruction: Query instruction (None: the embedder's default).
        model_kwargs: Other :class:`~qwen3_rag.Embedder` arguments (``dim``, ``dtype``...).
        embed_batch_size: Texts per call into the core embedder.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=("pydantic_model_",))

    embedder: TextEmbedder | None = Field(default=None, exclude=True)
    model_name: str = DEFAULT_EMBEDDING_MODEL
    embed_batch_size: int = Field(default=256, gt=0, le=65536)

    @property
    def core(self) -> TextEmbedder:
        """The core embedder (built from ``model_name`` on first access when none was given)."""
        return common.built_once(self, "embedder",
                                 lambda: load_embedder(self.model_name, device=self.device, **self.model_kwargs))

    def _embed(self, texts: list[str], query: bool) -> list[Embedding]:
        return common.embed_texts(self.core, texts, query, self.instruction)

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([query], query=True)[0]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([text], query=False)[0]

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embed(list(texts), query=False)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)


# -- vector store
# ------------------------------------------------------------------------------------------------------

# keys node_to_metadata_dict adds that would shadow the core's own ``doc_id`` filter field (the node id)
_SHADOWING_KEYS = ("doc_id", "document_id")


class Qwen3VectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store over a qwen3-rag index directory (SQLite store + FAISS).

    Each node is one stored document (id = node id) with one vector; the node is kept whole (its metadata,
    relationships and text), so ``stores_text`` is True and no docstore is needed. An index built by
    ``qwen3-rag index`` can be queried too: its chunks come back as nodes ``"<doc_id>#<n>"`` whose source
    document is the indexed file. ``ref_doc_id`` is a
    filterable field, so :meth:`delete` removes every node of a source document. Metadata filters run inside
    the FAISS search. Similarities are cosine similarities.

    Args:
        path: The index location, a directory or a backend URI (opened when it holds an index, else created on the
            first ``add``, when the vector dimension is known); None: a temporary directory removed with the store.
        embed_model: Optional: the embedding model the vectors come from, recorded in the manifest so that the
            index refuses to be reopened with another one. A :class:`Qwen3Embedding` records the Qwen3 model.
        index_type: FAISS index type for a new index.

    Raises:
        IndexMismatchError: if the index at ``path`` was built with another embedding model.
    """

    stores_text: bool = True
    flat_metadata: bool = False

    path: str | None = None
    index_type: str = "Flat"

    _index: StorageBackend | None = PrivateAttr(default=None)
    _tmp: Any = PrivateAttr(default=None)
    _embedder: TextEmbedder | None = PrivateAttr(default=None)
    _lock: Any = PrivateAttr(default_factory=threading.RLock)

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        embed_model: Any = None,
        index_type: str = "Flat",
        **kwargs: Any,
    ) -> None:
        super().__init__(  # type: ignore[call-arg]
            path=None if path is None else os.fspath(path), index_type=index_type, **kwargs
        )
        if isinstance(embed_model, Qwen3Embedding):
            self._embedder = embed_model.core
        elif embed_model is not None:
            self._embedder = common.EmbeddingBridge(
                embed_model, embed_model.get_text_embedding_batch, embed_model.get_query_embedding
            )
        from qwen3_rag.indexers.index import Index

        if path is None or Index.exists(path) or self._embedder is not None:
            self._open()

    @classmethod
    def class_name(cls) -> str:
        return "Qwen3VectorStore"

    def _open(self, dim: int | None = None) -> StorageBackend | None:
        if self._index is None:
            from qwen3_rag.indexers.index import Index

            if self._embedder is None and (self.path is None or not Index.exists(self.path)) and dim is None:
                return None  # a new store learns its dimension from the first nodes added
            self._index, tmp = common.open_store(self.path, self._embedder, self.index_type, dim=dim)
            if tmp is not None:
                self._tmp = tmp
            self.path = self._index.location
        return self._index

    @property
    def client(self) -> Any:
        """The core :class:`~qwen3_rag.indexers.index.Index` (None before a new store's first ``add``)."""
        return self._open()

    # -- lifecycle
    @classmethod
    def from_persist_dir(cls, persist_dir: str | os.PathLike[str], **kwargs: Any) -> Qwen3VectorStore:
        """Open an index directory written by :meth:`persist` (or the CLI / the core).

        Raises:
            FileNotFoundError: if there is no index there.
        """
        from qwen3_rag.indexers.index import Index

        if not Index.exists(persist_dir):
            raise FileNotFoundError(f"no index at {str(persist_dir)!r}")
        return cls(persist_dir, **kwargs)

    def persist(self, persist_path: str | None = None, fs: Any = None) -> None:
        """Commit; with ``persist_path`` (a directory other than the store's own) also copy a local index there (an
        index in Milvus is committed where it is: ``StorageContext.persist`` then works with it too).

        Raises:
            NotImplementedError: for an fsspec filesystem other than the local one.
        """
        if fs is not None and "file" not in getattr(fs, "protocol", ("file",)):
            raise NotImplementedError("Qwen3VectorStore persists to the local filesystem only")
        with self._lock:
            index = self._open()
            if index is None:
                return
            from qwen3_rag.indexers.local import LocalIndex

            if persist_path is None or not isinstance(index, LocalIndex) \
                    or Path(persist_path).resolve() == Path(index.location).resolve():
                index.commit()
            else:
                common.copy_index(index, persist_path)

    def close(self) -> None:
        """Commit, write the FAISS file and release the index (and remove a temporary directory)."""
        with self._lock:
            if self._index is not None:
                self._index.close()
                self._index = None
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    # -- writing
    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Store nodes with their embeddings; a node id that exists already is replaced. All are written in one
        transaction: when one fails, none is.

        Node metadata follows the rule of :func:`qwen3_rag.types.check_metadata` (the same for every adapter):
        keys are ``str``; values are ``str``, ``bool``, ``None``, 64-bit integers, finite floats and lists and
        dicts of these; a tuple is stored as a list and a NumPy number as a plain one; anything else (NaN,
        ``bytes``, ``datetime``, ``set``, other objects) is refused rather than turned into a string.

        Raises:
            ValueError: a node without an embedding, embeddings of different lengths, an embedding with NaN or
                infinite values, or metadata that breaks the rule above; each names the node.
        """
        nodes = list(nodes)
        if not nodes:
            return []
        for node in nodes:
            check_metadata(node.metadata, f"node {node.node_id!r}")
        missing = [n.node_id for n in nodes if n.embedding is None]
        if missing:
            raise ValueError(
                f"nodes {missing[:3]} have no embedding; embed them first (VectorStoreIndex and "
                "IngestionPipeline with an embed_model do)"
            )
        lengths = {len(n.get_embedding()) for n in nodes}
        if len(lengths) > 1:
            first = len(nodes[0].get_embedding())
            odd = next(n for n in nodes if len(n.get_embedding()) != first)
            raise ValueError(f"node {odd.node_id!r} has an embedding of {len(odd.get_embedding())} values, node "
                             f"{nodes[0].node_id!r} one of {first}; one store holds one dimension")
        with self._lock:
            index = self._open(dim=lengths.pop())
            assert index is not None
            latest = {node.node_id: node for node in nodes}  # a repeated id: the last one wins
            try:
                with index.transaction(publish=False), common.writer(index, None, 256) as write:
                    for node in latest.values():
                        write.add(self._to_document(node), np.asarray(node.get_embedding(), dtype=np.float32))
            except DocumentError as exc:
                raise ValueError(f"node {exc.document_id!r}: {exc.reason}; nothing was written") from None
        return [n.node_id for n in nodes]

    def _to_document(self, node: BaseNode) -> CoreDocument:
        metadata = node_to_metadata_dict(node, remove_text=True, flat_metadata=self.flat_metadata)
        for key in _SHADOWING_KEYS:
            metadata.pop(key, None)
        return CoreDocument(id=node.node_id, text=node.get_content(metadata_mode=MetadataMode.NONE),
                            source=str(node.metadata.get("file_path", "")), metadata=metadata)

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id`` (unknown ids are ignored)."""
        with self._lock:
            index = self._open()
            if index is not None:
                with index.transaction(publish=False):
                    index.delete(index.find_documents({"ref_doc_id": str(ref_doc_id)}))

    def delete_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **delete_kwargs: Any
    ) -> None:
        """Delete nodes by id and/or metadata filter (both given: the nodes that satisfy both)."""
        with self._lock:
            index = self._open()
            if index is None or (node_ids is None and filters is None):
                return
            with index.transaction(publish=False):
                index.delete(self._node_ids(index, node_ids, filters))

    def clear(self) -> None:
        """Delete every node."""
        with self._lock:
            index = self._open()
            if index is not None:
                with index.transaction(publish=False):
                    index.delete([doc_id for doc_id, _, _ in index.iter_documents()])

    def _node_ids(self, index: StorageBackend, node_ids: list[str] | None,
                  filters: MetadataFilters | None) -> list[str]:
        flt = translate_filters(filters)
        if flt is None:
            return list(node_ids) if node_ids is not None else [d for d, _, _ in index.iter_documents()]
        found = index.find_documents(flt)
        if node_ids is not None:
            wanted = set(node_ids)
            found = [i for i in found if i in wanted]
        return found

    # -- reading
    def _to_node(self, chunk: Chunk) -> BaseNode:
        metadata = dict(chunk.metadata)
        if "_node_content" in metadata:
            return metadata_dict_to_node(metadata, text=chunk.text)
        # a chunk written by `qwen3-rag index` / the core ingest: a node per chunk, its document as the source
        if chunk.source:
            metadata.setdefault("source", chunk.source)
        node = TextNode(id_=f"{chunk.doc_id}#{chunk.index}", text=chunk.text, metadata=metadata)
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=chunk.doc_id)
        return node

    def get_nodes(
        self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None, **kwargs: Any
    ) -> list[BaseNode]:
        """Nodes by id (in that order, unknown ids left out) and/or filter."""
        with self._lock:
            index = self._open()
            if index is None:
                return []
            ids = self._node_ids(index, node_ids, filters)
            return [self._to_node(chunks[0]) for chunks in (index.chunks_of(i) for i in ids) if chunks]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The ``similarity_top_k`` nodes nearest to ``query.query_embedding`` that pass ``query.filters``
        (and ``query.doc_ids`` / ``query.node_ids`` when given).

        Raises:
            ValueError: without a query embedding, or for a query mode other than the default.
        """
        if query.mode != VectorStoreQueryMode.DEFAULT:
            raise ValueError(
                f"Qwen3VectorStore supports the default (dense) query mode, got {query.mode!r}; for hybrid "
                "BM25 search use qwen3_rag.pipelines.search.Retriever on the index directory"
            )
        if query.query_embedding is None:
            raise ValueError("Qwen3VectorStore.query needs query.query_embedding")
        parts = [p for p in [translate_filters(query.filters)] if p is not None]
        if query.doc_ids:
            parts.append({"ref_doc_id": {"$in": [str(i) for i in query.doc_ids]}})
        if query.node_ids:
            parts.append({"doc_id": {"$in": [str(i) for i in query.node_ids]}})
        flt = None if not parts else parts[0] if len(parts) == 1 else {"$and": parts}
        with self._lock:
            index = self._open()
            if index is None or query.similarity_top_k < 1:
                return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
            found = common.nearest_chunks(index, query.query_embedding, query.similarity_top_k, flt)
        nodes, sims, node_ids = [], [], []
        for chunk, score in found:
            node = self._to_node(chunk)
            nodes.append(node)
            sims.append(score)
            node_ids.append(node.node_id)
        return VectorStoreQueryResult(nodes=nodes, similarities=sims, ids=node_ids)


# -- reranker
# ----------------------------------------------------------------------------------------------------------


class Qwen3Rerank(_LazyCore, BaseNodePostprocessor):
    """Rerank retrieved nodes with Qwen3-Reranker; node scores become the reranker's relevance probability.

    Args:
        reranker: The core reranker (a :class:`~qwen3_rag.Reranker`, or any
            :class:`~qwen3_rag.protocols.PairScorer`); without one, ``model`` is loaded on first use, on
            ``device``, with ``model_kwargs`` (other :class:`~qwen3_rag.Reranker` arguments).
        top_n: Nodes kept (None: all of them, reordered).
        instruction: Reranking instruction (None: the reranker's default).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    reranker: PairScorer | None = Field(default=None, exclude=True)
    model: str = DEFAULT_RERANKER_MODEL
    top_n: int | None = Field(default=3, ge=1)

    @property
    def core(self) -> PairScorer:
        """The core reranker (built from ``model`` on first access when none was given)."""
        return common.built_once(self, "reranker",
                                 lambda: load_reranker(self.model, device=self.device, **self.model_kwargs))

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("Qwen3Rerank needs the query: call postprocess_nodes(nodes, query_str=...)")
        if not nodes:
            return []
        texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
        results = self.core.rerank(query_bundle.query_str, texts, top_n=self.top_n, instruction=self.instruction)
        return [NodeWithScore(node=nodes[r.index].node, score=float(r.score)) for r in results]
