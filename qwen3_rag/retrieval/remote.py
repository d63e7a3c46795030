"""Models served over HTTP: an embedder and a reranker that call a server instead of running a model.

:class:`RemoteEmbedder` speaks the OpenAI ``POST /v1/embeddings`` API and :class:`RemoteReranker` the Cohere / Jina
``POST /v1/rerank`` API, as ``qwen3-rag serve`` and ``vllm serve`` answer them. They implement the same contracts as
the local models (:class:`~qwen3_rag.protocols.TextEmbedder`, :class:`~qwen3_rag.protocols.PairScorer`), so they
work wherever an :class:`~qwen3_rag.Embedder` or :class:`~qwen3_rag.Reranker` does: ingestion, the
:class:`~qwen3_rag.Retriever`, the framework adapters, and ``--model http://...`` on the command line
(:func:`~qwen3_rag.retrieval.models.load_embedder` makes them from a URL).

The Qwen3 query format is applied here, on the client: a query is sent as ``Instruct: {instruction}\\nQuery:{query}``
like a document, so any OpenAI-compatible server that runs Qwen3-Embedding gives the vectors of
:meth:`Embedder.embed_queries <qwen3_rag.Embedder.embed_queries>`. docs/server.md has the ``vllm serve`` command lines.

Example:
    >>> emb = RemoteEmbedder("http://localhost:8000", model="Qwen/Qwen3-Embedding-0.6B")  # doctest: +SKIP
    >>> emb.embed_queries(["what is faiss?"]).shape                                      # doctest: +SKIP
    (1, 1024)
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from qwen3_rag.retrieval.inputs import check_texts, check_unicode
from qwen3_rag.retrieval.prompts import (
    QUERY_TEMPLATE,
    RERANKER_PREFIX,
    RERANKER_SUFFIX,
    format_query,
    resolve_instruction,
)
from qwen3_rag.types import RerankResult

logger = logging.getLogger(__name__)

__all__ = ["API_KEY_ENV", "RemoteEmbedder", "RemoteReranker", "is_remote", "rank_documents"]

#: Where the remote classes read an API key when none is passed (sent as ``Authorization: Bearer KEY``).
API_KEY_ENV = "QWEN3_RAG_REMOTE_API_KEY"
#: Statuses worth a retry: the server is busy or restarting.
_RETRY_STATUSES = (429, 502, 503, 504)
_MAX_RETRY_WAIT = 30.0


def is_remote(model: object) -> bool:
    """True when ``model`` names a model served over HTTP (an ``http://`` or ``https://`` URL)."""
    return isinstance(model, str) and model.lower().startswith(("http://", "https://"))


class _JsonClient:
    """JSON over HTTP/1.1 to one server: one kept-alive connection per thread, retries when the server is busy or
    unreachable (the requests are idempotent), errors as Python exceptions that say what the server answered."""

    def __init__(self, url: str, api_key: str | None, timeout: float, retries: int) -> None:
        if not is_remote(url):
            raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
        parts = urlsplit(url)
        if not parts.hostname:
            raise ValueError(f"the URL {url!r} names no host; e.g. http://localhost:8000")
        self._https = parts.scheme.lower() == "https"
        self._host = parts.hostname
        self._port = parts.port
        path = parts.path.rstrip("/")
        self._base = path[:-3] if path.endswith("/v1") else path  # both http://host:8000 and .../v1 work
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        #: The URL without credentials, path or query: what a model record may store.
        self.endpoint = urlunsplit((parts.scheme.lower(), netloc, self._base, "", ""))
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self.timeout = float(timeout)
        self.retries = int(retries)
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send one request and return the decoded JSON answer.

        Raises:
            ConnectionError: the server could not be reached, or kept answering busy, after the retries.
            PermissionError: the server refused the API key (401 / 403).
            LookupError: the path or model does not exist there (404).
            ValueError: the server refused the request as invalid (another 4xx), with its message.
            RuntimeError: the server failed (5xx) or answered something that is not JSON.
        """
        data = json.dumps(body).encode("utf-8") if body is not None else None
        for attempt in range(self.retries + 1):
            try:
                conn = self._connection()
                conn.request(method, self._base + path, body=data, headers=self._headers)
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                if attempt < self.retries:
                    time.sleep(min(0.5 * 2**attempt, _MAX_RETRY_WAIT))
                    continue
                raise ConnectionError(f"cannot reach {self.endpoint}{path}: {exc}; is the server running?") from None
            if response.status in _RETRY_STATUSES and attempt < self.retries:
                time.sleep(_retry_wait(response.getheader("Retry-After"), attempt))
                continue
            if response.status >= 400:
                raise _http_error(response.status, payload, f"{method} {self.endpoint}{path}")
            try:
                return json.loads(payload)
            except ValueError:
                raise RuntimeError(f"{method} {self.endpoint}{path} answered {payload[:200]!r}, not JSON") from None
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _retry_wait(header: str | None, attempt: int) -> float:
    try:
        return min(max(float(header), 0.0), _MAX_RETRY_WAIT) if header else min(0.5 * 2**attempt, _MAX_RETRY_WAIT)
    except ValueError:
        return min(0.5 * 2**attempt, _MAX_RETRY_WAIT)


def _http_error(status: int, payload: bytes, what: str) -> Exception:
    """The exception for an error answer; the message is the server's own (OpenAI / vLLM error JSON)."""
    try:
        body = json.loads(payload)
        error = body.get("error", body) if isinstance(body, dict) else body
        message = error.get("message") if isinstance(error, dict) else None
        message = message or (body.get("detail") if isinstance(body, dict) else None) or str(body)
    except ValueError:
        message = payload[:300].decode("utf-8", "replace")
    text = f"{what} answered {status}: {message}"
    if status in (401, 403):
        return PermissionError(f"{text}; pass api_key= or set {API_KEY_ENV}")
    if status == 404:
        return LookupError(text)
    if 400 <= status < 500:
        return ValueError(text)
    return RuntimeError(text)


def _served_models(client: _JsonClient) -> list[dict[str, Any]]:
    """The entries of the server's ``GET /v1/models`` (empty when it has no such route)."""
    try:
        answer = client.request("GET", "/v1/models")
    except LookupError:
        return []
    data = answer.get("data") if isinstance(answer, dict) else None
    return [entry for entry in data or [] if isinstance(entry, dict) and isinstance(entry.get("id"), str)]


def _pick_model(client: _JsonClient, model: str | None, task: str) -> tuple[str, dict[str, Any]]:
    """The served model's name and its model record (qwen3-rag servers publish one; others give ``{}``).

    Raises:
        ValueError: ``model`` is not served there, or it is None and the server serves several models of ``task``.
    """
    entries = _served_models(client)
    if model is not None:
        for entry in entries:
            if entry["id"] == model:
                return model, dict(entry.get("record") or {})
        if entries:
            names = ", ".join(repr(e["id"]) for e in entries)
            raise ValueError(f"{client.endpoint} serves {names}, not {model!r}; pass one of those as model=")
        return model, {}
    fitting = [e for e in entries if e.get("task", task) == task] or entries
    if len(fitting) != 1:
        names = ", ".join(repr(e["id"]) for e in fitting) or "no model list"
        raise ValueError(f"{client.endpoint} has {names}; say which model to use with model=")
    return fitting[0]["id"], dict(fitting[0].get("record") or {})


def _decode_rows(data: Any, n: int, where: str) -> np.ndarray:
    """The vectors of an embeddings answer, in input order (``data[i].index``), floats or base64 float32."""
    if not isinstance(data, list) or len(data) != n:
        raise RuntimeError(f"{where} returned {len(data) if isinstance(data, list) else data!r} embeddings "
                           f"for {n} inputs")
    rows: list[np.ndarray | None] = [None] * n
    for item in data:
        index, vector = item.get("index"), item.get("embedding")
        if not isinstance(index, int) or not 0 <= index < n or rows[index] is not None:
            raise RuntimeError(f"{where} returned an embedding with index {index!r} for {n} inputs")
        if isinstance(vector, str):
            rows[index] = np.frombuffer(base64.b64decode(vector), dtype="<f4")
        else:
            rows[index] = np.asarray(vector, dtype=np.float32)
    return np.stack([np.asarray(r, dtype=np.float32) for r in rows])


class RemoteEmbedder:
    """An embedder served over HTTP (``POST /v1/embeddings``, the OpenAI API): ``qwen3-rag serve``, ``vllm serve``
    or any OpenAI-compatible server.

    Queries are formatted here with the Qwen3 query template (or the template the qwen3-rag server reports for its
    model), documents are sent as they are; the vectors come back L2-normalised. Nothing is sent until the first
    use: then the server's model list (``GET /v1/models``) is read once for the model's name and record.

    Args:
        url: The server, e.g. ``"http://localhost:8000"`` (a trailing ``/v1`` is accepted).
        model: The served model's name; None: the one model the server serves.
        api_key: Sent as ``Authorization: Bearer KEY``; None: the environment variable
            ``QWEN3_RAG_REMOTE_API_KEY`` if set.
        dim: Output dimension (Matryoshka: sent as ``dimensions`` when it differs from the model's own; a vLLM server
            needs ``--hf-overrides '{"is_matryoshka": true}'`` for that); None: the model's own.
        instruction: Default query instruction (text or a name from :data:`qwen3_rag.TASKS`).
        query_template: How queries are formatted: the Qwen3 template
            (:data:`~qwen3_rag.retrieval.prompts.QUERY_TEMPLATE`), a prefix such as ``"query: "``, or ``""`` for
            none. None: what a qwen3-rag server reports for its model, else the Qwen3 template.
        batch_size: Texts per request.
        tokenizer: A tokenizer (object, hub id or directory) for counting tokens and chunking; None: words are
            counted.
        timeout: Seconds to wait for one answer.
        retries: Further tries when the server is unreachable or busy (429, 503).

    Raises:
        ValueError: ``url`` is not an http(s) URL, or ``dim`` / ``batch_size`` is invalid.
    """

    def __init__(self, url: str, *, model: str | None = None, api_key: str | None = None, dim: int | None = None,
                 instruction: str | None = None, query_template: str | None = None, batch_size: int = 256,
                 tokenizer: Any = None, timeout: float = 120.0, retries: int = 3) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 1):
            raise ValueError(f"dim must be a positive int or None, got {dim!r}")
        self._client = _JsonClient(url, api_key, timeout, retries)
        self._model = model
        self._requested_dim = dim
        self.instruction = resolve_instruction(instruction)
        self._query_template = query_template
        self.batch_size = batch_size
        self._tokenizer_source = tokenizer
        self._tokenizer: Any = None if isinstance(tokenizer, (str, os.PathLike)) else tokenizer
        self._record: dict[str, Any] | None = None
        self._native_dim: int | None = None
        self._lock = threading.Lock()

    # -- what the server serves (read once, on first use) ----------------------------------------------------
    def _resolve(self) -> dict[str, Any]:
        if self._record is None:
            with self._lock:
                if self._record is None:
                    name, record = _pick_model(self._client, self._model, "embed")
                    self._model = name
                    native = record.get("dim")
                    self._native_dim = int(native) if isinstance(native, int) else None
                    self._record = record
        return self._record

    @property
    def endpoint(self) -> str:
        """The server URL (without credentials)."""
        return self._client.endpoint

    @property
    def model_id(self) -> str:
        """The served model's name."""
        self._resolve()
        return str(self._model)

    @property
    def native_dim(self) -> int:
        """The model's own output dimension (one probe text is embedded when the server does not report it)."""
        self._resolve()
        if self._native_dim is None:
            self._native_dim = int(self._request(["dimension probe"], None).shape[1])
        return self._native_dim

    @property
    def dim(self) -> int:
        """The output dimension: ``dim`` as given, else the model's own."""
        if self._requested_dim is None:
            return self.native_dim
        if self._requested_dim > self.native_dim:
            raise ValueError(f"dim={self._requested_dim} is more than the {self.native_dim} dimensions of "
                             f"{self.model_id!r} at {self.endpoint}; pass dim <= {self.native_dim} or None")
        return self._requested_dim

    @property
    def query_template(self) -> str:
        """The query format in use (see ``query_template`` above)."""
        if self._query_template is not None:
            return self._query_template
        reported = self._resolve().get("query_template")
        return reported if isinstance(reported, str) else QUERY_TEMPLATE

    @property
    def tokenizer(self) -> Any:
        """The tokenizer given as ``tokenizer`` (loaded on first access), or None."""
        if self._tokenizer is None and self._tokenizer_source is not None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(os.fspath(self._tokenizer_source))
        return self._tokenizer

    def describe(self) -> dict[str, Any]:
        """The model record an index stores: the served model's name and the endpoint, with the identity a
        qwen3-rag server reports (fingerprint, pooling, max length), so an index built through the server refuses
        another model, local or remote."""
        reported = self._resolve()
        record = {key: reported.get(key) for key in ("fingerprint", "revision", "pooling", "max_length")}
        record.update({"model": self.model_id, "model_type": "remote", "endpoint": self.endpoint, "dim": self.dim,
                       "normalize": True, "instruction": self.instruction, "query_template": self.query_template})
        return record

    def __repr__(self) -> str:
        return f"RemoteEmbedder({self.endpoint!r}, model={self._model!r})"

    # -- embedding ---------------------------------------------------------------------------------------------
    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed documents as they are. Returns float32 ``(len(texts), dim)``, unit rows, input order."""
        return self._embed(check_texts(texts))

    def embed_queries(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        """Embed queries, formatted here (Qwen3: ``Instruct: {instruction}\\nQuery:{query}``)."""
        queries = check_texts(texts)
        template = self.query_template
        if template == QUERY_TEMPLATE:
            task = resolve_instruction(instruction, self.instruction)
            queries = [format_query(q, task) for q in queries]
        elif template:
            queries = [template + q for q in queries]
        return self._embed(queries)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Content tokens of each text with ``tokenizer``, else words and punctuation marks."""
        items = check_texts(texts)
        if self.tokenizer is None:
            from qwen3_rag.indexers.chunking import regex_token_spans

            return [len(regex_token_spans(t)) for t in items]
        return [len(ids) for ids in self.tokenizer(items, add_special_tokens=False)["input_ids"]]

    def _embed(self, texts: list[str]) -> np.ndarray:
        dim = self.dim
        dimensions = dim if dim != self.native_dim else None
        out = np.empty((len(texts), dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            out[start:start + self.batch_size] = self._request(texts[start:start + self.batch_size], dimensions)
        return out

    def _request(self, texts: list[str], dimensions: int | None) -> np.ndarray:
        body: dict[str, Any] = {"model": self._model, "input": texts, "encoding_format": "base64"}
        if dimensions is not None:
            body["dimensions"] = dimensions
        where = f"{self.endpoint}/v1/embeddings"
        try:
            answer = self._client.request("POST", "/v1/embeddings", body)
        except ValueError as exc:
            if dimensions is not None and "matryoshka" in str(exc).lower():
                raise ValueError(f"{exc}. Start vLLM with --hf-overrides '{{\"is_matryoshka\": true}}' to serve "
                                 f"dim={dimensions}, or pass dim=None") from None
            raise
        vectors = _decode_rows(answer.get("data") if isinstance(answer, dict) else None, len(texts), where)
        if dimensions is not None and vectors.shape[1] != dimensions:
            raise RuntimeError(f"{where} returned {vectors.shape[1]} dimensions, {dimensions} were asked for")
        if not np.isfinite(vectors).all():
            raise RuntimeError(f"{where} returned vectors with NaN or infinite values")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not np.allclose(norms, 1.0, atol=1e-4):  # a server that does not normalise (normalising twice changes bits)
            vectors = vectors / np.maximum(norms, 1e-12)
        return vectors


PromptSide = Literal["server", "client"]


class RemoteReranker:
    """A reranker served over HTTP (``POST /v1/rerank``, the Cohere / Jina API): ``qwen3-rag serve`` or
    ``vllm serve`` of Qwen3-Reranker (docs/server.md has the command line).

    Args:
        url: The server, e.g. ``"http://localhost:8001"``.
        model: The served model's name; None: the one reranker the server serves.
        api_key: As for :class:`RemoteEmbedder`.
        instruction: Default instruction (text or a name from :data:`qwen3_rag.TASKS`).
        prompt: Who builds the Qwen3-Reranker prompt. ``"server"`` (default): the query and documents are sent as
            they are with an ``instruction`` field; a qwen3-rag server, or vLLM started with the Qwen3 reranker
            chat template, formats them. ``"client"``: they are formatted here (the query as the system prefix,
            instruction and query, each document with the assistant suffix, as the Qwen3-Reranker model card
            does), for a vLLM server started without that template.
        batch_size: Documents per request.
        timeout: Seconds to wait for one answer.
        retries: Further tries when the server is unreachable or busy.
    """

    def __init__(self, url: str, *, model: str | None = None, api_key: str | None = None,
                 instruction: str | None = None, prompt: PromptSide = "server", batch_size: int = 256,
                 timeout: float = 120.0, retries: int = 3) -> None:
        if prompt not in ("server", "client"):
            raise ValueError(f"prompt must be 'server' or 'client', got {prompt!r}")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self._client = _JsonClient(url, api_key, timeout, retries)
        self._model = model
        self._resolved = False
        self.instruction = resolve_instruction(instruction)
        self.prompt: PromptSide = prompt
        self.batch_size = batch_size
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return self._client.endpoint

    @property
    def model_id(self) -> str:
        """The served model's name (read from the server on first access when not given)."""
        if not self._resolved:
            with self._lock:
                if not self._resolved:
                    self._model, _ = _pick_model(self._client, self._model, "rerank")
                    self._resolved = True
        return str(self._model)

    def __repr__(self) -> str:
        return f"RemoteReranker({self.endpoint!r}, model={self._model!r}, prompt={self.prompt!r})"

    def score(self, query: str, documents: Sequence[str], instruction: str | None = None) -> list[float]:
        """Relevance scores in [0, 1] of each document for ``query``, in input order."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        check_unicode(query, "query")
        docs = check_texts(documents, "documents")
        task = resolve_instruction(instruction, self.instruction)
        scores: list[float] = []
        for start in range(0, len(docs), self.batch_size):
            scores.extend(self._request(query, docs[start:start + self.batch_size], task))
        return scores

    def score_pairs(self, pairs: Sequence[tuple[str, str]], instruction: str | None = None) -> list[float]:
        """Scores of (query, document) pairs: one request per query (and ``batch_size`` documents)."""
        by_query: dict[str, list[int]] = {}
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise TypeError(f"pairs[{i}] must be a (query, document) tuple of two str, got {pair!r:.80}")
            by_query.setdefault(pair[0], []).append(i)
        out = [0.0] * len(pairs)
        for query, rows in by_query.items():
            for row, score in zip(rows, self.score(query, [pairs[i][1] for i in rows], instruction), strict=True):
                out[row] = score
        return out

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None,
               instruction: str | None = None) -> list[RerankResult]:
        """Documents sorted by relevance (ties keep input order), at most ``top_n``."""
        docs = check_texts(documents, "documents")
        return rank_documents(self.score(query, docs, instruction), docs, top_n)

    def _request(self, query: str, documents: list[str], task: str) -> list[float]:
        body: dict[str, Any] = {"model": self.model_id}
        if self.prompt == "client":
            body["query"] = f"{RERANKER_PREFIX}<Instruct>: {task}\n<Query>: {query}\n"
            body["documents"] = [f"<Document>: {d}{RERANKER_SUFFIX}" for d in documents]
        else:
            body.update(query=query, documents=documents, instruction=task)
        answer = self._client.request("POST", "/v1/rerank", body)
        results = answer.get("results") if isinstance(answer, dict) else None
        where = f"{self.endpoint}/v1/rerank"
        scores: list[float | None] = [None] * len(documents)
        for item in results or []:
            index, score = item.get("index"), item.get("relevance_score")
            if isinstance(index, int) and 0 <= index < len(documents) and isinstance(score, (int, float)):
                scores[index] = float(score)
        if any(s is None for s in scores) or not all(np.isfinite(s) for s in scores if s is not None):
            raise RuntimeError(f"{where} did not return one finite score per document ({len(documents)} sent)")
        return [float(s) for s in scores if s is not None]


def rank_documents(scores: Sequence[float], documents: Sequence[str], top_n: int | None) -> list[RerankResult]:
    """Documents sorted by score, best first (ties keep input order), at most ``top_n``.

    Raises:
        ValueError: ``top_n`` is not None or a non-negative int.
    """
    if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool) or top_n < 0):
        raise ValueError(f"top_n must be a non-negative int or None, got {top_n!r}")
    order = sorted(range(len(documents)), key=lambda i: -scores[i])
    if top_n is not None:
        order = order[:top_n]
    return [RerankResult(index=i, score=float(scores[i]), document=documents[i]) for i in order]
