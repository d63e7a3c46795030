"""Request bodies, as pydantic models (pydantic stays in the server; the core uses dataclasses).

Types are strict: ``"5"`` is not a number and ``5`` is not a text, so a client's mistake is a 400 that names the
field rather than a guess. Unknown fields are ignored, as OpenAI clients send some this server has no use for.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["ChatRequest", "ContextRequest", "DocumentIn", "DocumentsRequest", "EmbeddingRequest", "RerankDocument",
           "RerankRequest", "SearchRequest"]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class EmbeddingRequest(_Body):
    """``POST /v1/embeddings``: the OpenAI shape, plus ``input_type`` and ``instruction``."""

    input: str | list[str] = Field(description="A text or a list of texts.")
    model: str | None = Field(None, description="A served embedding model (default: the server's).")
    dimensions: int | None = Field(None, description="Output dimension (Matryoshka), from 32 to the model's.")
    encoding_format: Literal["float", "base64"] = "float"
    input_type: Literal["query", "document"] = Field(
        "document", description="'query' formats each text as a Qwen3 query with the instruction.")
    instruction: str | None = Field(None, description="Query instruction: text or a task name (queries only).")
    user: str | None = None


class RerankDocument(_Body):
    text: str


class RerankRequest(_Body):
    """``POST /v1/rerank``: the Cohere / Jina shape, plus ``instruction``."""

    query: str
    documents: list[str | RerankDocument]
    model: str | None = None
    top_n: int | None = Field(None, ge=0, description="Best documents to return (0 or absent: all).")
    return_documents: bool = True
    instruction: str | None = None


Mode = Literal["dense", "bm25", "hybrid"]


class SearchRequest(_Body):
    """``POST /v1/search``: the arguments of :meth:`Retriever.search_batch <qwen3_rag.Retriever.search_batch>`."""

    index: str = Field(description="A served index's name.")
    query: str | None = None
    queries: list[str] | None = None
    k: int = 10
    filter: dict[str, Any] | None = Field(None, description="A metadata filter, e.g. {\"lang\": \"en\"}.")
    mode: Mode = "dense"
    rerank: bool = Field(False, description="Rerank the first candidates with the server's reranker.")
    candidates: int = 50
    instruction: str | None = None
    highlight: bool = Field(False, description="Add 'highlights' to each hit: the [start, end) character spans of "
                                               "its text that hold the query's BM25 terms.")

    @model_validator(mode="after")
    def _one_of(self) -> SearchRequest:
        if (self.query is None) == (self.queries is None):
            raise ValueError("give either 'query' (one text) or 'queries' (a list of texts)")
        return self

    @property
    def texts(self) -> list[str]:
        return [self.query] if self.query is not None else list(self.queries or [])


class ContextRequest(SearchRequest):
    """``POST /v1/context``: a search, returned as a cited context of at most ``max_tokens`` tokens."""

    k: int = 5
    max_tokens: int | None = Field(None, gt=0, description="Token budget (default: the server's).")


class DocumentIn(_Body):
    id: str | None = Field(None, description="Default: a hash of the text and metadata.")
    text: str
    source: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentsRequest(_Body):
    """``POST /v1/indexes/{name}/documents``: documents to add or update (chunked and embedded server-side)."""

    documents: list[DocumentIn]
    replace: bool = True


class ChatRequest(BaseModel):
    """``POST /v1/chat/completions``: the OpenAI shape, plus where and how to retrieve. Other OpenAI parameters
    (``temperature``, ``max_tokens``, ...) go to the language model as they are."""

    model_config = ConfigDict(strict=True, extra="allow")

    messages: list[dict[str, Any]]
    model: str | None = None
    stream: bool = False
    index: str | None = Field(None, description="The index to retrieve from (default: the only one served).")
    k: int = 5
    filter: dict[str, Any] | None = None
    mode: Mode = "dense"
    rerank: bool = False
    candidates: int = 50
    instruction: str | None = None
    max_context_tokens: int | None = Field(None, gt=0)
