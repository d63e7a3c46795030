"""The index routes: search and RAG context (through :meth:`Retriever.search_batch
<qwen3_rag.Retriever.search_batch>` and :func:`~qwen3_rag.pipelines.rag.build_context`), the served indexes, and
document writes (through the write loop, :class:`~qwen3_rag.pipelines.writing.DocumentWriter`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

from fastapi import APIRouter

from qwen3_rag.indexers.bm25 import BM25Config, matching_spans
from qwen3_rag.pipelines.documents import as_document
from qwen3_rag.pipelines.rag import Context, build_context, cite
from qwen3_rag.pipelines.search import hits_to_dicts
from qwen3_rag.pipelines.writing import DocumentWriter, IngestReport
from qwen3_rag.protocols import Filter, TokenCounter
from qwen3_rag.server.errors import APIError
from qwen3_rag.server.model_routes import RuntimeDep, checked_texts
from qwen3_rag.server.schemas import ContextRequest, DocumentsRequest, SearchRequest
from qwen3_rag.server.state import Runtime, ServedIndex
from qwen3_rag.types import Document, Hit

__all__ = ["citations", "router", "run_context", "run_search"]

router = APIRouter()


class SearchArguments(Protocol):
    """What a search request says besides its queries (a search, a context or a chat request)."""

    k: int
    filter: dict[str, Any] | None
    mode: Any
    rerank: bool
    candidates: int
    instruction: str | None


async def run_search(runtime: Runtime, served: ServedIndex, queries: list[str],
                     args: SearchArguments) -> list[list[Hit]]:
    """``Retriever.search_batch`` on a worker thread: embedding and reranking join the models' batches."""
    queries = checked_texts(queries, "queries", runtime.config.max_inputs)
    limit = runtime.config.max_k
    for name in ("k", "candidates"):
        if getattr(args, name) > limit:
            raise APIError(400, f"{name}={getattr(args, name)} is more than this server's limit of {limit}",
                           "invalid_value")
    reranker = None
    if args.rerank:
        reranker = runtime.reranker_proxy
        if reranker is None:
            raise APIError(400, "rerank needs a reranker, and this server has none; start it with --reranker MODEL",
                           "no_reranker")
    flt: Filter | None = args.filter
    return await runtime.run(served.retriever.search_batch, queries, args.k, filter=flt, mode=args.mode,
                             rerank=reranker, candidates=args.candidates, instruction=args.instruction)


async def run_context(runtime: Runtime, served: ServedIndex, query: str, args: SearchArguments,
                      max_tokens: int | None) -> Context:
    """The search's hits as a numbered, cited context within ``max_tokens`` (counted with the index's model's
    tokenizer, on the model's thread, when it has one)."""
    hits = (await run_search(runtime, served, [query], args))[0]
    model = served.slot.model
    counter = model if isinstance(model, TokenCounter) else None
    return await served.slot.call(build_context, hits, max_tokens or runtime.config.context_tokens, counter)


def citations(context: Context, highlight: str | None = None,
              keyword_config: BM25Config | None = None) -> list[dict[str, Any]]:
    """The passages of a context as JSON: ``n`` (the number the context cites it by), ``citation`` and the hit
    (with its ``highlights`` for the query ``highlight``, when given, as the index's BM25 ``keyword_config``
    matches it)."""
    dicts = _hit_dicts(context.hits, highlight, keyword_config)
    return [{"n": n, "citation": cite(hit), **hit_dict}
            for n, (hit, hit_dict) in enumerate(zip(context.hits, dicts, strict=True), 1)]


def _hit_dicts(hits: list[Hit], highlight: str | None,
               keyword_config: BM25Config | None = None) -> list[dict[str, Any]]:
    """The hits as JSON; with a query to ``highlight``, each with ``highlights``: where its text holds the query's
    terms, as ``[start, end]`` character offsets into the hit's text."""
    dicts = hits_to_dicts(hits)
    if highlight is not None:
        for hit_dict in dicts:
            hit_dict["highlights"] = [list(span)
                                      for span in matching_spans(hit_dict["text"], highlight, keyword_config)]
    return dicts


def _results(texts: list[str], results: list[list[Hit]], highlight: bool,
             keyword_config: BM25Config) -> list[list[dict[str, Any]]]:
    return [_hit_dicts(hits, query if highlight else None, keyword_config)
            for query, hits in zip(texts, results, strict=True)]


@router.post("/v1/search")
async def search(body: SearchRequest, runtime: RuntimeDep) -> dict[str, Any]:
    """The best passages for ``query`` (or each of ``queries``), with every score, as ``Retriever.search``."""
    served = runtime.index(body.index)
    results = await run_search(runtime, served, body.texts, body)
    hits = await runtime.run(_results, body.texts, results, body.highlight, served.keyword_config)
    if body.query is not None:
        return {"index": served.name, "hits": hits[0]}
    return {"index": served.name,
            "results": [{"query": q, "hits": h} for q, h in zip(body.texts, hits, strict=True)]}


@router.post("/v1/context")
async def context(body: ContextRequest, runtime: RuntimeDep) -> dict[str, Any]:
    """The search, returned as a RAG context with numbered citations within a token budget."""
    if body.query is None:
        raise APIError(400, "a context is built for one query: send 'query', not 'queries'", "invalid_value")
    served = runtime.index(body.index)
    built = await run_context(runtime, served, body.query, body, body.max_tokens)
    cited = await runtime.run(citations, built, body.query if body.highlight else None, served.keyword_config)
    return {"index": served.name, "context": built.text, "tokens": built.tokens, "truncated": built.truncated,
            "citations": cited}


def _describe(served: ServedIndex) -> dict[str, Any]:
    index = served.index
    manifest = index.manifest
    return {"name": served.name, "object": "index", "writable": served.writable,
            "read_only_reason": served.opened.read_only_reason, "counts": dataclasses.asdict(index.count()),
            "model": index.model_info, "chunking": dict(manifest.get("chunking", {})),
            "index_type": manifest.get("index", {}).get("spec"), "hybrid": served.retriever.fusion_description}


@router.get("/v1/indexes")
async def indexes(runtime: RuntimeDep) -> dict[str, Any]:
    """The served indexes with their counts and model records."""
    return {"object": "list", "data": [await runtime.run(_describe, s) for s in runtime.indexes.values()]}


@router.get("/v1/indexes/{name}")
async def index_info(name: str, runtime: RuntimeDep) -> dict[str, Any]:
    """One served index: counts, model record, chunking, index type, hybrid fusion, whether it takes writes."""
    return await runtime.run(_describe, runtime.index(name))


def _document(served: ServedIndex, doc_id: str) -> dict[str, Any]:
    found = served.index.get_documents([doc_id])
    if not found:
        raise APIError(404, f"the index {served.name!r} holds no document {doc_id!r}", "not_found")
    document = found[0]
    return {"index": served.name, "id": document.id, "source": document.source, "text": document.text,
            "metadata": dict(document.metadata)}


@router.get("/v1/indexes/{name}/documents/{doc_id:path}")
async def get_document(name: str, doc_id: str, runtime: RuntimeDep) -> dict[str, Any]:
    """One whole document: its text (which a hit's ``start`` and ``end`` index into), source and metadata."""
    return await runtime.run(_document, runtime.index(name), doc_id)


def _writable(runtime: Runtime, name: str) -> ServedIndex:
    served = runtime.index(name)
    if not served.writable:
        raise APIError(409, f"the index {name!r} is served read-only: {served.opened.read_only_reason}; documents "
                            "cannot be written through this server", "read_only")
    return served


def _write(served: ServedIndex, documents: list[Document], replace: bool) -> IngestReport:
    with served.write_lock, DocumentWriter(served.index, served.retriever.embedder, chunker=served.chunker,
                                           replace=replace) as writer:
        writer.add_all(documents)
    return writer.report


@router.post("/v1/indexes/{name}/documents")
async def add_documents(name: str, body: DocumentsRequest, runtime: RuntimeDep) -> dict[str, Any]:
    """Add or update documents (text and metadata): chunked and embedded here, written by the write loop."""
    served = _writable(runtime, name)
    if not body.documents:
        raise APIError(400, "documents is empty: send at least one", "empty_input")
    if len(body.documents) > runtime.config.max_inputs:
        raise APIError(400, f"{len(body.documents)} documents; at most {runtime.config.max_inputs} per request",
                       "too_many_inputs")
    documents = [as_document(d.model_dump(exclude_none=True)) for d in body.documents]
    report = await runtime.run(_write, served, documents, body.replace)
    return {"index": served.name, **report.to_dict()}


def _delete(served: ServedIndex, doc_id: str) -> int:
    with served.write_lock, served.index.transaction(publish=False):  # published when the server closes it
        return served.index.delete([doc_id])


@router.delete("/v1/indexes/{name}/documents/{doc_id:path}")
async def delete_document(name: str, doc_id: str, runtime: RuntimeDep) -> dict[str, Any]:
    """Delete one document and its chunks."""
    served = _writable(runtime, name)
    if not await runtime.run(_delete, served, doc_id):
        raise APIError(404, f"the index {name!r} holds no document {doc_id!r}", "not_found")
    return {"index": served.name, "id": doc_id, "deleted": True}
