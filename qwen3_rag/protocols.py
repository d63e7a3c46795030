"""The contracts between the layers: what the core asks of an embedder, a reranker, a token counter, a language
model and a storage backend.

Each role is a small :class:`typing.Protocol`. The classes of this package implement them
(:class:`~qwen3_rag.Embedder` is a :class:`TokenEmbedder`, :class:`~qwen3_rag.Reranker` a :class:`PairScorer`,
:class:`~qwen3_rag.Index` a :class:`StorageBackend`), and anything else with the same methods works wherever they
are accepted: a remote embedder, a framework's embedding wrapped by an adapter, a test fake. A second storage
backend is a new class behind :class:`StorageBackend`, proven by the same conformance suite
(``tests/indexers/test_backend_conformance.py``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from qwen3_rag.types import Chunk, Document, IndexCounts, RerankResult, WriteStats

if TYPE_CHECKING:
    from qwen3_rag.indexers.bm25 import BM25Config
    from qwen3_rag.indexers.chunking import ChunkingConfig

__all__ = [
    "PARTIAL",
    "ChatModel",
    "Filter",
    "KnowsItsModel",
    "PairScorer",
    "StorageBackend",
    "TextEmbedder",
    "TokenCounter",
    "TokenEmbedder",
]

#: The content hash :meth:`StorageBackend.document_states` reports for a document written in parts whose last
#: part is not written yet (no content hash equals it).
PARTIAL = "partial"

#: A metadata filter: a Mongo-style dict (see :mod:`qwen3_rag.indexers.filters`), or, on the local index only, a
#: callable ``metadata -> bool``.
Filter = Mapping[str, Any] | Callable[[Mapping[str, Any]], bool]


@runtime_checkable
class TextEmbedder(Protocol):
    """Texts -> L2-normalised float32 vectors.

    ``describe()`` is the model record an index stores and checks on open: at least ``model`` and ``dim``, plus
    whatever identifies the model's output (``fingerprint``, ``pooling``, ``max_length``, ``instruction``).
    """

    @property
    def dim(self) -> int: ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` unit rows, documents embedded as they are."""
        ...

    def embed_queries(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        """``(len(texts), dim)`` unit rows, each query formatted for retrieval (with ``instruction``)."""
        ...

    def describe(self) -> dict[str, Any]:
        """The model record, JSON-serialisable."""
        ...


@runtime_checkable
class TokenEmbedder(TextEmbedder, Protocol):
    """A :class:`TextEmbedder` that can also be fed token ids, so chunks are never tokenized twice: the chunker
    counts with ``tokenizer`` and ``ids_from_content`` frames its ids into the model's input."""

    @property
    def tokenizer(self) -> Any: ...

    @property
    def max_length(self) -> int: ...

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """The exact input ids of each text (truncated, with the model's special tokens)."""
        ...

    def ids_from_content(self, content_ids: Sequence[Sequence[int]]) -> list[list[int]] | None:
        """:meth:`tokenize` from content token ids, or None when the special tokens are no fixed frame."""
        ...

    def embed_tokenized(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Vectors of id sequences made by :meth:`tokenize`: the same as embedding the texts."""
        ...


@runtime_checkable
class KnowsItsModel(Protocol):
    """An embedder that can tell whether a fingerprint recorded earlier (perhaps by an older scheme) names its
    model; an index's model check asks it before refusing."""

    def same_model(self, fingerprint: str) -> bool: ...


@runtime_checkable
class PairScorer(Protocol):
    """A reranker: the relevance of (query, document) pairs, higher is better."""

    def score_pairs(self, pairs: Sequence[tuple[str, str]], instruction: str | None = None) -> Sequence[float]:
        """One score per pair, in order."""
        ...

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None,
               instruction: str | None = None) -> list[RerankResult]:
        """The documents sorted by relevance to ``query``, best first, at most ``top_n``."""
        ...


@runtime_checkable
class TokenCounter(Protocol):
    """Counts the content tokens of texts (an :class:`~qwen3_rag.Embedder` or a :class:`~qwen3_rag.Reranker` is
    one); a plain ``Callable[[str], int]`` is accepted where a counter is."""

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...


@runtime_checkable
class ChatModel(Protocol):
    """A language model as LangChain runs one: ``invoke(prompt)`` returns a str or a message with ``.content``;
    a plain ``Callable[[str], str]`` is accepted where a model is."""

    def invoke(self, prompt: str) -> Any: ...


@runtime_checkable
class StorageBackend(Protocol):
    """Where chunks, their vectors and their documents live, and how they are found.

    A backend is created or opened at a location (a directory for the local FAISS + SQLite index; a URI for
    others, see :meth:`qwen3_rag.Index.open`) and stores the model record given at creation, refusing another
    model on open. Chunk ids are int64, assigned by the backend, never reused for other content.

    Writes are batched and transactional: :meth:`write` replaces each given document with its chunks and vectors,
    :meth:`delete` removes documents; inside :meth:`transaction` they become visible together at the commit, and
    an interrupted transaction leaves the last commit intact (a backend without transactions must still never
    leave a partly written document looking complete: :meth:`changed` reports it again). A document with more
    chunks than one commit should hold is written in parts, each part in its own commit (see :meth:`write`).
    Content hashes make ingestion incremental. Searches apply the filter inside the search, so ``k`` hits come
    back when ``k`` chunks match.
    """

    #: Whether many processes may open the backend for writing at once, each writing other documents (a database
    #: server): distributed ingestion then writes from its workers, each opening the backend by :attr:`location`.
    #: False for a backend with one writer at a time (the local index holds a lock): the driver writes.
    concurrent_writers: ClassVar[bool] = False

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the index lives (a path, or a URI without credentials)."""

    @property
    @abstractmethod
    def read_only(self) -> bool: ...

    @property
    @abstractmethod
    def dim(self) -> int: ...

    @property
    @abstractmethod
    def model_info(self) -> dict[str, Any]:
        """The stored model record."""

    @property
    @abstractmethod
    def manifest(self) -> dict[str, Any]:
        """Format, model record, chunking, index type and current counts, JSON-serialisable."""

    @property
    @abstractmethod
    def chunking(self) -> ChunkingConfig: ...

    @property
    @abstractmethod
    def hybrid_settings(self) -> dict[str, Any] | None:
        """The hybrid fusion calibrated for this index's data (``fusion``, ``alpha`` and how it was chosen), which
        a :class:`~qwen3_rag.Retriever` uses unless told otherwise; None when there is none."""

    @property
    @abstractmethod
    def keyword_config(self) -> BM25Config:
        """The BM25 settings keyword search tokenises with (what a highlight of the query's terms must follow)."""

    @abstractmethod
    def set_hybrid_settings(self, settings: dict[str, Any] | None) -> None:
        """Store (None: remove) :attr:`hybrid_settings`; durable when it returns. Retrievers opened afterwards use
        them."""

    @property
    @abstractmethod
    def embedder(self) -> TextEmbedder | None:
        """The embedder the index was opened with (checked against the model record), if any."""

    # -- writing
    @abstractmethod
    def write(self, items: Sequence[tuple[Document, Sequence[Chunk]]], vectors: np.ndarray, *,
              append: bool = False, complete: bool = True) -> list[list[int]]:
        """Store documents with their chunks and one vector per chunk (in order), replacing earlier versions of
        those documents; returns each document's new chunk ids.

        A document written in parts (the write loop splits one whose chunks exceed ``commit_every``) takes several
        calls, each in its own transaction, its chunks in order and carrying their positions in the whole
        document (``Chunk.index``):

        - the first part with ``complete=False``: it replaces the stored document like any write, but the document
          is stored *partly written*: :meth:`document_states` reports :data:`PARTIAL` as its content hash;
        - each next part with ``append=True, complete=False``: the chunks are added after the stored ones (nothing
          is replaced; the document stays partly written);
        - the last part with ``append=True`` (``complete=True``): the chunks are added and the document's content
          hash is stored, so it is complete from this commit on.

        A run interrupted between two parts leaves the document partly written: :meth:`changed` reports it, and
        the next run writes it again from its first part, which replaces every chunk of the earlier parts (no
        duplicate, no orphan). Searches may return the chunks of a partly written document. ``append=True`` for
        a document that is not stored is a ValueError.
        """

    @abstractmethod
    def delete(self, doc_ids: Iterable[str]) -> int:
        """Delete documents and their chunks; returns how many existed."""

    @abstractmethod
    def transaction(self, *, publish: bool = True) -> AbstractContextManager[Any]:
        """Group writes into one commit; an exception rolls them back. ``publish=False`` lets a bulk load skip
        rewriting derived files (search structures) at the commit."""

    @abstractmethod
    def commit(self, *, publish: bool = True) -> None: ...

    @abstractmethod
    def rollback(self) -> None: ...

    @abstractmethod
    def document_states(self, doc_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        """``doc_id -> (content hash, number of chunks)`` of those of ``doc_ids`` that are stored."""

    @abstractmethod
    def changed(self, documents: Sequence[Document], *, replace: bool = True) -> tuple[list[Document], WriteStats]:
        """The new and changed documents among ``documents``, with the counts."""

    # -- reading
    @abstractmethod
    def count(self) -> IndexCounts: ...

    @abstractmethod
    def iter_documents(self) -> Iterator[tuple[str, str, str]]:
        """``(doc_id, source, content_hash)`` of every document."""

    @abstractmethod
    def get_documents(self, doc_ids: Iterable[str]) -> list[Document]:
        """Stored documents in the order asked; unknown ids are left out."""

    @abstractmethod
    def get_chunks(self, chunk_ids: Iterable[int]) -> list[Chunk]:
        """Stored chunks (with ``chunk_id``, ``source`` and metadata) in the order asked; unknown ids left out."""

    @abstractmethod
    def chunks_of(self, doc_id: str) -> list[Chunk]:
        """One document's chunks, in order."""

    @abstractmethod
    def get_vectors(self, chunk_ids: Iterable[int]) -> np.ndarray:
        """The stored unit vectors, one row per id in order; KeyError for an unknown id."""

    @abstractmethod
    def reading(self) -> AbstractContextManager[Any]:
        """A consistent view for the length of one search: what is read inside sees one commit (a backend
        without snapshots may give the newest state)."""

    @abstractmethod
    def find_documents(self, filter: Filter) -> list[str]:
        """The ids of the documents whose metadata match ``filter``, sorted."""

    # -- searching
    @abstractmethod
    def search_vectors(self, queries: np.ndarray, k: int = 10,
                       filter: Filter | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Nearest chunks by inner product: ``(ids int64 (n, k), scores float32 (n, k))``, best first, padded
        with ``-1`` / ``-inf``; a ``k`` above 10,000 may be cut at the number of chunks stored (nothing is
        allocated for ids that cannot exist). ``k < 1`` is a ValueError."""

    @abstractmethod
    def keyword_search(self, queries: Sequence[str], k: int = 10,
                       filter: Filter | None = None) -> list[list[tuple[int, float]]]:
        """BM25: ``(chunk_id, score)`` of the best chunks per query (only chunks sharing a term), best first."""

    @abstractmethod
    def close(self) -> None: ...
