"""LangChain adapters: embeddings, a vector store over an index directory, a retriever and a reranker.

Install with ``pip install 'qwen3-rag[langchain]'``.

Example:
    >>> from qwen3_rag.integrations.langchain import Qwen3Embeddings, Qwen3VectorStore  # doctest: +SKIP
    >>> embeddings = Qwen3Embeddings(model="Qwen/Qwen3-Embedding-0.6B")                   # doctest: +SKIP
    >>> store = Qwen3VectorStore.from_texts(["FAISS is a library."], embeddings)          # doctest: +SKIP
    >>> store.similarity_search("what is faiss?", k=1)                                     # doctest: +SKIP

Every class holds a core object (:class:`~qwen3_rag.Embedder`, :class:`~qwen3_rag.indexers.index.Index`,
:class:`~qwen3_rag.pipelines.search.Retriever`, :class:`~qwen3_rag.Reranker`) and only converts between
LangChain's types and the core's.
"""

# ruff: noqa: E402  (the extra is checked before anything imports it)
from __future__ import annotations

from qwen3_rag._optional import require

require("langchain_core", "langchain", "qwen3_rag.integrations.langchain")

import os
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun, Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from qwen3_rag.integrations._common import (
    EmbeddingBridge,
    built_once,
    copy_index,
    embed_texts,
    nearest_chunks,
    open_store,
    unit_rows,
    writer,
)
from qwen3_rag.integrations.langchain_filters import translate_filter
from qwen3_rag.pipelines.documents import DocumentError
from qwen3_rag.pipelines.search import Retriever, SearchMode
from qwen3_rag.protocols import PairScorer, StorageBackend, TextEmbedder
from qwen3_rag.retrieval import DEFAULT_EMBEDDING_MODEL, DEFAULT_RERANKER_MODEL
from qwen3_rag.retrieval.models import load_embedder, load_reranker
from qwen3_rag.types import Document as CoreDocument
from qwen3_rag.types import Hit, check_metadata

__all__ = [
    "Qwen3Embeddings",
    "Qwen3Reranker",
    "Qwen3Retriever",
    "Qwen3VectorStore",
    "relevance_from_cosine",
    "translate_filter",
]


def relevance_from_cosine(score: float) -> float:
    """Map a cosine similarity in [-1, 1] to a relevance score in [0, 1]: ``(1 + cos) / 2``.

    Unlike LangChain's ``_max_inner_product_relevance_score_fn`` this keeps the order of negative similarities
    and never leaves [0, 1], so ``score_threshold`` means the same thing for every query.
    """
    return min(1.0, max(0.0, (1.0 + float(score)) / 2.0))


# -- embeddings
# --------------------------------------------------------------------------------------------------------


class _LazyCore(BaseModel):
    """Fields of an adapter whose core model is loaded on first use (see ``built_once``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", protected_namespaces=())

    device: str = "auto"
    instruction: str | None = None
    model_kwargs: dict[str, Any] = Field(default_factory=dict)

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)


class Qwen3Embeddings(_LazyCore, Embeddings):
    """LangChain :class:`~langchain_core.embeddings.Embeddings` over a :class:`~qwen3_rag.Embedder`.

    Queries get the query instruction (``Instruct: ...\\nQuery:...``), documents are embedded raw, exactly as
    Qwen3-Embedding expects. Vectors are L2-normalised lists of floats.

    Args:
        embedder: A :class:`~qwen3_rag.Embedder` (or anything with its interface). When omitted, one is
            built from ``model`` on first use, so constructing this object loads nothing.
        model: Model id or directory used when ``embedder`` is not given.
        device: Device for the embedder built from ``model``.
        instruction: Query instruction (text or a task name from :data:`qwen3_rag.TASKS`); None: the
            embedder's default.
        model_kwargs: Other :class:`~qwen3_rag.Embedder` arguments (``dim``, ``dtype``, ``max_length``...).

    Example:
        >>> emb = Qwen3Embeddings(model_kwargs={"dim": 256})  # doctest: +SKIP
        >>> len(emb.embed_query("what is faiss?"))           # doctest: +SKIP
        256
    """

    embedder: TextEmbedder | None = None
    model: str = DEFAULT_EMBEDDING_MODEL

    @property
    def core(self) -> TextEmbedder:
        """The core embedder (built from ``model`` on first access when none was given)."""
        return built_once(self, "embedder",
                          lambda: load_embedder(self.model, device=self.device, **self.model_kwargs))

    def _embed(self, texts: list[str], query: bool) -> list[list[float]]:
        return embed_texts(self.core, texts, query, self.instruction)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed documents (no instruction), in input order."""
        return self._embed(list(texts), query=False)

    def embed_query(self, text: str) -> list[float]:
        """Embed one query with the query instruction."""
        return self._embed([text], query=True)[0]

    def embed_queries(self, texts: list[str]) -> list[list[float]]:
        """Embed many queries in one batch with the query instruction."""
        return self._embed(list(texts), query=True)


def _core_embedder(embedding: Embeddings, dim: int | None = None) -> TextEmbedder:
    """What the core index embeds with: the Qwen3 embedder, or a bridge over any LangChain Embeddings."""
    if isinstance(embedding, Qwen3Embeddings):
        return embedding.core
    # looked up at each call, so an Embeddings object whose methods are replaced later is followed
    return EmbeddingBridge(embedding, lambda texts: embedding.embed_documents(texts),
                           lambda text: embedding.embed_query(text), dim=dim)


# -- vector store
# ------------------------------------------------------------------------------------------------------


class Qwen3VectorStore(VectorStore):
    """A LangChain vector store over a qwen3-rag index directory (SQLite store + FAISS), with any Embeddings.

    Each LangChain document is one stored document with one vector (LangChain splits texts itself); its id is
    ``Document.id`` (or the ``ids`` given; a UUID when neither is), and adding an existing id replaces it.
    Scores of :meth:`similarity_search_with_score` are cosine similarities; relevance scores
    (``similarity_search_with_relevance_scores``, ``score_threshold``) are ``(1 + cos) / 2`` in [0, 1].
    Metadata filters use LangChain's dict dialect (see :func:`translate_filter`) and run inside the FAISS
    search, so ``k`` hits come back whenever ``k`` documents match. Async methods run the sync ones in an
    executor; one lock serialises access to the index.
    An index built by ``qwen3-rag index`` opens too (with :class:`Qwen3Embeddings` on its model): its chunks
    come back as documents whose id is the id of the file they come from.

    Args:
        embedding: Any LangChain :class:`~langchain_core.embeddings.Embeddings`. With :class:`Qwen3Embeddings`
            the index records the Qwen3 model, so the index also works with the CLI and the core retriever.
        path: The index location, a directory or a backend URI (opened when it holds an index, else created);
            None: a temporary directory that is removed with the store (use :meth:`save` to keep it).
        index: An open core :class:`~qwen3_rag.Index` to use instead of ``path``.
        index_type: FAISS index type for a new index (``Flat``, ``HNSW32``, ``IVF1024,Flat``...).
        batch_size: Texts embedded per ``embed_documents`` call when adding.

    Raises:
        IndexMismatchError: if the index at ``path`` was built with another embedding model.
    """

    def __init__(
        self,
        embedding: Embeddings,
        path: str | os.PathLike[str] | None = None,
        *,
        index: StorageBackend | None = None,
        index_type: str = "Flat",
        batch_size: int = 256,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.embedding = embedding
        self.batch_size = batch_size
        self._tmp: Any = None
        self._embedder = _core_embedder(embedding)
        if index is None:
            index, self._tmp = open_store(path, self._embedder, index_type)
        elif path is not None:
            raise ValueError("pass either path= or index=, not both")
        self.index: StorageBackend = index
        self._lock = threading.RLock()

    # -- lifecycle
    @classmethod
    def load(cls, path: str | os.PathLike[str], embedding: Embeddings, **kwargs: Any) -> Qwen3VectorStore:
        """Open the index directory at ``path`` (written by :meth:`save`, the CLI or the core).

        Raises:
            FileNotFoundError: if there is no index at ``path``.
            IndexMismatchError: if it was built with another embedding model.
        """
        from qwen3_rag.indexers.index import Index

        if not Index.exists(path):
            raise FileNotFoundError(f"no index at {str(path)!r}; create one with Qwen3VectorStore(emb, path)")
        return cls(embedding, path, **kwargs)

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Commit everything; with ``path`` (another directory) also copy the index there.

        Returns:
            The directory that holds the saved index.
        """
        with self._lock:
            if path is None or Path(path).resolve() == Path(self.index.location).resolve():
                self.index.commit()
                return Path(self.index.location)
            return copy_index(self.index, path)

    def close(self) -> None:
        """Commit, write the FAISS file and release the index (and remove a temporary directory)."""
        with self._lock:
            self.index.close()
            if self._tmp is not None:
                self._tmp.cleanup()
                self._tmp = None

    def __enter__(self) -> Qwen3VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def embeddings(self) -> Embeddings:
        return self.embedding

    # -- writing
    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[Any, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and store texts; an id that exists already is replaced (unchanged ones are not re-embedded). All
        are written in one transaction: when one fails, none is.

        Metadata follows the rule of :func:`qwen3_rag.types.check_metadata` (the same for every adapter): keys are
        ``str``; values are ``str``, ``bool``, ``None``, 64-bit integers, finite floats and lists and dicts of
        these; a tuple is stored as a list and a NumPy number as a plain one; anything else (NaN, ``bytes``,
        ``datetime``, ``set``, other objects) is refused rather than turned into a string.

        Returns:
            The ids, in input order (UUIDs for texts without one).

        Raises:
            ValueError: ``metadatas`` or ``ids`` without one entry per text, a text that is not a ``str``, metadata
                that breaks the rule above, or a vector from the embeddings that holds NaN or infinite values; each
                names the item (``texts[3]``, ``metadatas[3]``).
        """
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise ValueError(f"got {len(texts)} texts but {len(metadatas)} metadatas")
        if ids is not None and len(ids) != len(texts):
            raise ValueError(f"got {len(texts)} texts but {len(ids)} ids")
        for n, text in enumerate(texts):
            if not isinstance(text, str):
                got = "None" if text is None else f"a {type(text).__name__} ({text!r:.60})"
                raise ValueError(f"texts[{n}] is {got}; every text must be a str")
        metas = [check_metadata({} if m is None else m, f"metadatas[{n}]") for n, m in enumerate(metadatas or [])]
        given: list[str | None] = list(ids) if ids is not None else [None] * len(texts)
        # add_documents passes Document.id for every document, None where one has no id
        out_ids = [str(i) if i else str(uuid.uuid4()) for i in given]
        docs = [
            CoreDocument(id=doc_id, text=text, source=str(metas[n].get("source", "")) if metas else "",
                         metadata=metas[n] if metas else {})
            for n, (doc_id, text) in enumerate(zip(out_ids, texts, strict=True))
        ]
        latest = {d.id: d for d in docs}  # a repeated id: the last one wins
        try:
            with self._lock, self.index.transaction(publish=False), writer(self.index, self._embedder,
                                                                           self.batch_size) as write:
                write.add_all(latest.values())
        except DocumentError as exc:
            n = max(i for i, doc_id in enumerate(out_ids) if doc_id == exc.document_id)
            raise ValueError(f"texts[{n}] (id {exc.document_id!r}): {exc.reason}; nothing was written") from None
        return out_ids

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete documents by id (unknown ids are ignored); ``ids=None`` deletes everything.

        Returns:
            True.
        """
        with self._lock:
            if ids is None:
                ids = [doc_id for doc_id, _, _ in self.index.iter_documents()]
            with self.index.transaction(publish=False):
                self.index.delete([str(i) for i in ids])
        return True

    # -- reading
    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Documents by id, in the order asked; unknown ids are left out."""
        with self._lock:
            found = self.index.get_documents([str(i) for i in ids])
        return [Document(page_content=d.text, metadata=dict(d.metadata), id=d.id) for d in found]

    def _search(
        self, vector: Sequence[float] | np.ndarray, k: int, filter: Any
    ) -> list[tuple[Document, float, int]]:
        """The one search path: ``(document, cosine, chunk_id)`` of the ``k`` nearest vectors."""
        if k < 1:
            return []
        with self._lock:
            found = nearest_chunks(self.index, vector, k, translate_filter(filter))
        return [(Document(page_content=c.text, metadata=dict(c.metadata), id=c.doc_id), s, int(c.chunk_id or 0))
                for c, s in found]

    def similarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, filter: Any = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Documents nearest to a vector with their cosine similarity, best first."""
        return [(doc, score) for doc, score, _ in self._search(embedding, k, filter)]

    def similarity_search_by_vector(
        self, embedding: list[float], k: int = 4, filter: Any = None, **kwargs: Any
    ) -> list[Document]:
        """Documents nearest to a vector, best first."""
        return [doc for doc, _, _ in self._search(embedding, k, filter)]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: Any = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Documents nearest to ``query`` with their cosine similarity, best first."""
        return self.similarity_search_with_score_by_vector(self.embedding.embed_query(query), k, filter)

    def similarity_search(self, query: str, k: int = 4, filter: Any = None, **kwargs: Any) -> list[Document]:
        """The ``k`` documents nearest to ``query``; ``filter`` in LangChain's dict dialect."""
        return self.similarity_search_by_vector(self.embedding.embed_query(query), k, filter)

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return relevance_from_cosine

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Any = None,
        **kwargs: Any,
    ) -> list[Document]:
        """Diverse results: the ``fetch_k`` nearest documents re-picked by maximal marginal relevance."""
        found = self._search(embedding, max(k, fetch_k), filter)
        if not found:
            return []
        with self._lock:
            vectors = self.index.get_vectors([i for _, _, i in found])
        picked = maximal_marginal_relevance(unit_rows(embedding)[0], list(vectors), lambda_mult, k)
        return [found[i][0] for i in picked]

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: Any = None,
        **kwargs: Any,
    ) -> list[Document]:
        """See :meth:`max_marginal_relevance_search_by_vector`."""
        return self.max_marginal_relevance_search_by_vector(
            self.embedding.embed_query(query), k, fetch_k, lambda_mult, filter
        )

    # -- construction
    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[Any, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        path: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> Qwen3VectorStore:
        """A store at ``path`` (None: a temporary directory) holding ``texts``. Other keyword arguments go to
        the constructor."""
        store = cls(embedding, path, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    def __repr__(self) -> str:
        return f"Qwen3VectorStore(path={self.index.location!r}, embedding={type(self.embedding).__name__})"


# -- retriever
# ---------------------------------------------------------------------------------------------------------


def hit_to_document(hit: Hit) -> Document:
    """A core :class:`~qwen3_rag.types.Hit` as a LangChain Document.

    ``id`` is the document id; the metadata is the document's own plus ``doc_id``, ``source``, ``chunk_id``,
    ``start``, ``end``, ``page``, ``score``, ``scores`` and, when reranked, ``relevance_score``.
    """
    metadata: dict[str, Any] = dict(hit.metadata)
    metadata.setdefault("doc_id", hit.doc_id)
    metadata.setdefault("source", hit.source)
    metadata.update(
        chunk_id=hit.chunk_id,
        start=hit.start,
        end=hit.end,
        page=hit.page,
        score=hit.score,
        scores=dict(hit.scores),
    )
    if "rerank" in hit.scores:
        metadata["relevance_score"] = hit.scores["rerank"]
    return Document(page_content=hit.text, metadata=metadata, id=hit.doc_id)


class Qwen3Retriever(BaseRetriever):
    """The full qwen3-rag search pipeline (dense, BM25 hybrid, reranked) as a LangChain retriever.

    Args:
        retriever: A core :class:`~qwen3_rag.pipelines.search.Retriever` (see :meth:`from_index`).
        k: Documents returned per query (``invoke(query, k=...)`` overrides it per call).
        mode: ``"dense"``, ``"bm25"`` or ``"hybrid"`` (dense and BM25 fused).
        rerank: None/False, True (the core retriever's reranker), a model id or a
            :class:`~qwen3_rag.Reranker`.
        candidates: First-stage hits that are fused / reranked.
        filter: Default metadata filter in LangChain's dict dialect (see :func:`translate_filter`).
        instruction: Query instruction (None: the embedder's default).

    Example:
        >>> retriever = Qwen3Retriever.from_index("my-index", k=5, mode="hybrid")  # doctest: +SKIP
        >>> retriever.invoke("how do I rotate the logs?", k=3)                  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Retriever
    k: int = Field(default=4, ge=1)
    mode: SearchMode = "dense"
    rerank: Any = None
    candidates: int = Field(default=50, ge=1)
    filter: Any = None
    instruction: str | None = None

    @classmethod
    def from_index(
        cls,
        path: str | os.PathLike[str] | StorageBackend,
        *,
        embedder: TextEmbedder | Qwen3Embeddings | None = None,
        reranker: PairScorer | Qwen3Reranker | str | None = None,
        **kwargs: Any,
    ) -> Qwen3Retriever:
        """A retriever over an index (a location or an open core Index).

        Args:
            path: The index location (a directory or a backend URI) or an open :class:`~qwen3_rag.Index`.
            embedder: A core embedder, a :class:`Qwen3Embeddings`, or None for the model in the manifest.
            reranker: A :class:`~qwen3_rag.Reranker` or model id used for ``rerank=True``.
            **kwargs: The fields of this class (``k``, ``mode``, ``rerank``...).
        """
        if isinstance(embedder, Qwen3Embeddings):
            embedder = embedder.core
        if isinstance(reranker, Qwen3Reranker):
            reranker = reranker.core
        return cls(retriever=Retriever(path, embedder=embedder, reranker=reranker), **kwargs)

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        filter: Any = None,
        mode: SearchMode | None = None,
        rerank: Any = None,
        **kwargs: Any,
    ) -> list[Document]:
        hits = self.retriever.search(
            query,
            k=self.k if k is None else int(k),
            filter=translate_filter(self.filter if filter is None else filter),
            instruction=self.instruction,
            mode=self.mode if mode is None else mode,
            rerank=self.rerank if rerank is None else rerank,
            candidates=self.candidates,
        )
        return [hit_to_document(hit) for hit in hits]


# -- reranker
# ----------------------------------------------------------------------------------------------------------


class Qwen3Reranker(_LazyCore, BaseDocumentCompressor):
    """Rerank documents with Qwen3-Reranker; the LangChain document compressor for
    ``ContextualCompressionRetriever``.

    The returned documents are copies sorted by relevance, with ``metadata["relevance_score"]`` the reranker's
    probability that the document answers the query.

    Args:
        reranker: A :class:`~qwen3_rag.Reranker` (or anything with ``rerank(query, documents, top_n)``). When
            omitted, one is built from ``model`` on first use.
        model: Model id or directory used when ``reranker`` is not given.
        device: Device for the reranker built from ``model``.
        top_n: Documents kept (None: all of them, reordered).
        instruction: Reranking instruction (None: the reranker's default).
        model_kwargs: Other :class:`~qwen3_rag.Reranker` arguments.
    """

    reranker: PairScorer | None = None
    model: str = DEFAULT_RERANKER_MODEL
    top_n: int | None = Field(default=3, ge=1)

    @property
    def core(self) -> PairScorer:
        """The core reranker (built from ``model`` on first access when none was given)."""
        return built_once(self, "reranker",
                          lambda: load_reranker(self.model, device=self.device, **self.model_kwargs))

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """The ``top_n`` most relevant documents, best first, with ``relevance_score`` in their metadata."""
        documents = list(documents)
        if not documents:
            return []
        results = self.core.rerank(query, [d.page_content for d in documents], top_n=self.top_n,
                                   instruction=self.instruction)
        out = []
        for result in results:
            doc = documents[result.index]
            out.append(
                Document(
                    page_content=doc.page_content,
                    metadata={**doc.metadata, "relevance_score": float(result.score)},
                    id=doc.id,
                )
            )
        return out
