"""The rows and requests of a Milvus index: three collections per index, their schema, and every call to Milvus.

For an index whose location names the collection ``NAME``:

- ``NAME`` holds one row per chunk: ``id`` (INT64 primary key), ``doc_id``, ``span`` (JSON: position, character
  offsets, lines, page, headings), ``text`` (the chunk's text in pieces), ``source``, ``metadata`` (JSON, exactly
  as given), ``fmeta`` (JSON: the filter fields, :func:`~qwen3_rag.indexers.filters.milvus_fields`), ``vector``
  (FLOAT_VECTOR, inner product) and ``terms`` (the chunk's BM25 terms, see below) with ``sparse``, the
  SPARSE_FLOAT_VECTOR Milvus's BM25 function makes of them;
- ``NAME__documents`` one row per document: ``doc_id`` (VARCHAR primary key), ``text``, ``source``, ``metadata``,
  ``fmeta``, ``content_hash``, ``n_chunks``, and ``marker``, a constant 2-d vector (Milvus wants a vector field in
  every collection);
- ``NAME__meta`` the manifest (key ``manifest``) and the write journal (key ``journal``).

Texts are stored as lists of pieces because a Milvus string holds at most 65,535 bytes; a document may hold
4,096 pieces (about 67 million characters).

BM25 terms: Milvus's BM25 function scores, inside the database, whatever its analyzer makes of the ``terms``
field. That field holds the terms of :meth:`~qwen3_rag.indexers.bm25.BM25Index.tokenize` (the local index's
tokenizer: stemming, stop words, CJK n-grams), each written as one plain word of ``[0-9a-z]`` (a term of other
characters as ``x`` + the hex of its UTF-8), which Milvus's ``standard`` analyzer keeps whole on Milvus Lite and on
a server alike. Queries are written the same way. So keyword search matches what the local index matches, with
Milvus's own BM25 scoring (k1 and b as the local index's).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from qwen3_rag._optional import require
from qwen3_rag.indexers.bm25 import BM25Config, BM25Index
from qwen3_rag.indexers.filters import milvus_fields, milvus_string
from qwen3_rag.indexers.vector_index import IndexSpec
from qwen3_rag.protocols import PARTIAL
from qwen3_rag.types import Chunk, Document

logger = logging.getLogger(__name__)

DOCUMENTS_SUFFIX = "__documents"
META_SUFFIX = "__meta"
#: Bytes in one Milvus VARCHAR value (and one piece of a stored text).
MAX_VARCHAR = 65_535
#: Bytes in one Milvus JSON value.
MAX_JSON = 65_536
#: Elements of one Milvus ARRAY value.
MAX_PIECES = 4_096
#: Results of one query or search request (Milvus's limit on offset + limit and on topk).
MAX_WINDOW = 16_384
#: The longest document id: it is a primary key, and the write journal lists ids in one JSON value.
MAX_ID_BYTES = 16_384
_PIECE_CHARS = MAX_VARCHAR // 4  # characters that fit a piece however wide their UTF-8
_REQUEST_BYTES = 16 << 20  # rows per insert request, well under gRPC's message limits
_PLAIN_TERM = re.compile(r"[0-9a-wyz][0-9a-z]*")
_MARKER = [1.0, 0.0]
_CHUNK_FIELDS = ["id", "doc_id", "span", "text", "source", "metadata"]


def vector_index_params(spec: IndexSpec) -> dict[str, Any]:
    """The Milvus index of ``spec`` (inner product)."""
    if spec.kind == "flat":
        return {"index_type": "FLAT", "params": {}}
    if spec.kind == "hnsw":
        return {"index_type": "HNSW", "params": {"M": spec.hnsw_m, "efConstruction": max(40, 2 * spec.hnsw_m)}}
    if spec.pq_m:
        return {"index_type": "IVF_PQ", "params": {"nlist": spec.nlist, "m": spec.pq_m, "nbits": 8}}
    return {"index_type": "IVF_FLAT", "params": {"nlist": spec.nlist}}


def chunk_id(doc_id: str, content_hash: str, chunk: Chunk) -> int:
    """A chunk's primary key: a 63-bit hash of its document, the document's content and its place in it, so a run
    that writes the same chunk again (after an interruption) writes the same row."""
    key = json.dumps([doc_id, content_hash, chunk.index, chunk.start, chunk.end], ensure_ascii=False)
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") >> 1


def pieces(text: str) -> list[str]:
    """``text`` cut into strings Milvus can hold; ``"".join(pieces(text)) == text``."""
    return [text[i:i + _PIECE_CHARS] for i in range(0, len(text), _PIECE_CHARS)]


def id_list(field: str, values: Sequence[str] | Sequence[int]) -> str:
    """``field in [...]`` with every value quoted as a Milvus literal."""
    literals = (milvus_string(v) if isinstance(v, str) else str(int(v)) for v in values)
    return f"{field} in [{', '.join(literals)}]"


def batches(values: Sequence[Any], max_chars: int = 60_000, max_items: int = 1_000) -> Iterator[list[Any]]:
    """``values`` in groups that stay short as a request expression or as a JSON list (the journal): at most
    ``max_chars`` characters of JSON (a value longer than that is a group of its own)."""
    group: list[Any] = []
    size = 0
    for value in values:
        width = len(json.dumps(value)) + 2
        if group and (size + width > max_chars or len(group) >= max_items):
            yield group
            group, size = [], 0
        group.append(value)
        size += width
    if group:
        yield group


class Terms:
    """Texts as the ``terms`` a Milvus BM25 function reads (see the module docstring)."""

    def __init__(self, config: BM25Config) -> None:
        self._bm25 = BM25Index(config)

    @property
    def config(self) -> BM25Config:
        return self._bm25.config

    def __call__(self, text: str, what: str = "") -> str:
        words = [t if _PLAIN_TERM.fullmatch(t) else "x" + t.encode("utf-8").hex() for t in self._bm25.tokenize(text)]
        out = " ".join(words)
        if len(out) > MAX_VARCHAR:  # ASCII only: characters are bytes
            out = out[:MAX_VARCHAR].rsplit(" ", 1)[0]
            logger.warning("%s has more BM25 terms than a Milvus text field holds; keyword search sees its first "
                           "%d terms (use a smaller chunk_size)", what or "a chunk", out.count(" ") + 1)
        return out


def _checked_json(value: Mapping[str, Any], what: str) -> Mapping[str, Any]:
    size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
    if size > MAX_JSON:
        raise ValueError(f"{what} is {size:,} bytes as JSON; a Milvus JSON field holds {MAX_JSON:,}. Keep large "
                         "values in the text, or use the local index")
    return value


def _checked_text(text: str, what: str) -> list[str]:
    parts = pieces(text)
    if len(parts) > MAX_PIECES:
        raise ValueError(f"{what} has {len(text):,} characters; a Milvus index holds at most "
                         f"{MAX_PIECES * _PIECE_CHARS:,} per text. Split it into several documents")
    return parts


def _checked_string(text: str, what: str, limit: int = MAX_VARCHAR) -> str:
    if len(text) * 4 > limit and len(text.encode("utf-8")) > limit:
        raise ValueError(f"{what} is {len(text.encode('utf-8')):,} bytes; a Milvus index holds at most {limit:,}")
    return text


def document_row(doc: Document, n_chunks: int, complete: bool = True) -> dict[str, Any]:
    """The ``NAME__documents`` row of a document with ``n_chunks`` chunks stored; ``complete=False``: partly
    written (its content hash is :data:`~qwen3_rag.protocols.PARTIAL`).

    Raises:
        ValueError: a value Milvus cannot hold (naming the document and the limit).
    """
    what = f"document {doc.id!r}"
    metadata = _checked_json(doc.metadata, f"the metadata of {what}")
    return {"doc_id": _checked_string(doc.id, f"the id of {what}", MAX_ID_BYTES),
            "text": _checked_text(doc.text, what), "source": _checked_string(doc.source, f"the source of {what}"),
            "metadata": metadata, "fmeta": _checked_json(filter_fields(doc), f"the metadata of {what}"),
            "content_hash": doc.content_hash if complete else PARTIAL, "n_chunks": n_chunks, "marker": _MARKER}


def filter_fields(doc: Document) -> dict[str, Any]:
    """What filters see of a document: its metadata, and ``doc_id`` and ``source`` unless the metadata has them."""
    return milvus_fields({"doc_id": doc.id, "source": doc.source, **doc.metadata})


def chunk_rows(doc: Document, chunks: Sequence[Chunk], vectors: np.ndarray, terms: Terms,
               doc_row: Mapping[str, Any]) -> tuple[list[int], list[dict[str, Any]]]:
    """The ids and ``NAME`` rows of a document's chunks (``vectors``: one unit row per chunk)."""
    ids, rows = [], []
    for chunk, vector in zip(chunks, vectors, strict=True):
        cid = chunk_id(doc.id, doc.content_hash, chunk)
        span = {"index": chunk.index, "start": chunk.start, "end": chunk.end, "start_line": chunk.start_line,
                "end_line": chunk.end_line, "page": chunk.page, "headings": list(chunk.headings)}
        ids.append(cid)
        rows.append({"id": cid, "doc_id": doc.id, "span": _checked_json(span, f"chunk {chunk.index} of {doc.id!r}"),
                     "text": pieces(chunk.text), "source": doc.source, "metadata": doc_row["metadata"],
                     "fmeta": doc_row["fmeta"], "vector": vector,
                     "terms": terms(chunk.text, f"chunk {chunk.index} of document {doc.id!r}")})
    return ids, rows


def to_chunk(row: Mapping[str, Any]) -> Chunk:
    span = row["span"]
    return Chunk(doc_id=row["doc_id"], index=int(span["index"]), text="".join(row["text"]), start=int(span["start"]),
                 end=int(span["end"]), page=span.get("page"), headings=tuple(span.get("headings") or ()),
                 metadata=dict(row["metadata"] or {}), start_line=int(span["start_line"]),
                 end_line=int(span["end_line"]), chunk_id=int(row["id"]), source=row["source"])


def to_document(row: Mapping[str, Any]) -> Document:
    return Document(id=row["doc_id"], text="".join(row["text"]), source=row["source"],
                    metadata=dict(row["metadata"] or {}))


class MilvusStore:
    """The three collections of one index on one client; every Milvus request of the backend goes through here.

    Args:
        client: A ``pymilvus.MilvusClient``.
        name: The chunk collection (the others are named after it).
    """

    def __init__(self, client: Any, name: str) -> None:
        self.client = client
        self.chunks = name
        self.documents = name + DOCUMENTS_SUFFIX
        self.meta = name + META_SUFFIX

    @property
    def names(self) -> tuple[str, str, str]:
        return self.chunks, self.documents, self.meta

    # -- collections ------------------------------------------------------------------------------------------

    def existing(self) -> list[str]:
        """Which of the three collections exist."""
        return [n for n in self.names if self.client.has_collection(n)]

    def create(self, dim: int, spec: IndexSpec, bm25: BM25Config) -> None:
        """Create the three collections with their indexes (loaded, strongly consistent)."""
        pymilvus = require("pymilvus", "milvus", "a Milvus index")
        types = pymilvus.DataType
        text = {"datatype": types.ARRAY, "element_type": types.VARCHAR, "max_capacity": MAX_PIECES,
                "max_length": MAX_VARCHAR}
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", types.INT64, is_primary=True)
        schema.add_field("doc_id", types.VARCHAR, max_length=MAX_VARCHAR)
        schema.add_field("span", types.JSON)
        schema.add_field("text", **text)
        schema.add_field("source", types.VARCHAR, max_length=MAX_VARCHAR)
        schema.add_field("metadata", types.JSON)
        schema.add_field("fmeta", types.JSON)
        schema.add_field("vector", types.FLOAT_VECTOR, dim=dim)
        schema.add_field("terms", types.VARCHAR, max_length=MAX_VARCHAR, enable_analyzer=True,
                         analyzer_params={"tokenizer": "standard"})
        schema.add_field("sparse", types.SPARSE_FLOAT_VECTOR)
        schema.add_function(pymilvus.Function(name="bm25", function_type=pymilvus.FunctionType.BM25,
                                              input_field_names=["terms"], output_field_names=["sparse"]))
        indexes = self.client.prepare_index_params()
        indexes.add_index(field_name="vector", metric_type="IP", **vector_index_params(spec))
        indexes.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                          params={"bm25_k1": bm25.k1, "bm25_b": bm25.b})
        indexes.add_index(field_name="doc_id", index_type="INVERTED")
        self._create(self.chunks, schema, indexes)

        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("doc_id", types.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES)
        schema.add_field("text", **text)
        schema.add_field("source", types.VARCHAR, max_length=MAX_VARCHAR)
        schema.add_field("metadata", types.JSON)
        schema.add_field("fmeta", types.JSON)
        schema.add_field("content_hash", types.VARCHAR, max_length=256)
        schema.add_field("n_chunks", types.INT64)
        self._create_keyed(self.documents, schema)

        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", types.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("value", types.JSON)
        self._create_keyed(self.meta, schema)

    def _create_keyed(self, name: str, schema: Any) -> None:
        pymilvus = require("pymilvus", "milvus", "a Milvus index")
        schema.add_field("marker", pymilvus.DataType.FLOAT_VECTOR, dim=len(_MARKER))
        indexes = self.client.prepare_index_params()
        indexes.add_index(field_name="marker", index_type="FLAT", metric_type="IP")
        self._create(name, schema, indexes)

    def _create(self, name: str, schema: Any, indexes: Any) -> None:
        # sync=False: pymilvus would poll the index state with an RPC Milvus Lite lacks (and logs as an error);
        # loading the collection waits for its indexes anyway
        self.client.create_collection(name, schema=schema, consistency_level="Strong")
        self.client.create_index(name, indexes, sync=False)
        self.client.load_collection(name)

    def load(self) -> None:
        for name in self.names:
            self.client.load_collection(name)

    def drop(self) -> None:
        for name in self.existing():
            self.client.drop_collection(name)

    def flush(self) -> None:
        """Seal what was written into indexed segments (Milvus Lite searches its in-memory rows by brute force)."""
        for name in (self.chunks, self.documents):
            self.client.flush(name)

    # -- the manifest and the journal -------------------------------------------------------------------------

    def get_meta(self, key: str) -> Any:
        rows = self.client.query(self.meta, filter=id_list("key", [key]), output_fields=["value"], limit=1)
        return rows[0]["value"] if rows else None

    def set_meta(self, key: str, value: Any) -> None:
        self.client.upsert(self.meta, [{"key": key, "value": value, "marker": _MARKER}])

    def delete_meta(self, key: str) -> None:
        self.client.delete(self.meta, filter=id_list("key", [key]))

    # -- writing ----------------------------------------------------------------------------------------------

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        for part in batches(doc_ids):
            self.client.delete(self.documents, filter=id_list("doc_id", part))

    def delete_chunks_of(self, doc_ids: Sequence[str]) -> None:
        for part in batches(doc_ids):
            self.client.delete(self.chunks, filter=id_list("doc_id", part))

    def upsert(self, collection: str, rows: Sequence[dict[str, Any]]) -> None:
        """Write rows in requests of bounded size."""
        start, size = 0, 0
        for i, row in enumerate(rows):
            size += 64 + sum(len(p) for p in row.get("text", ())) + 4 * len(row.get("vector", ()))
            if size >= _REQUEST_BYTES or i == len(rows) - 1:
                self.client.upsert(collection, list(rows[start:i + 1]))
                start, size = i + 1, 0

    # -- reading ----------------------------------------------------------------------------------------------

    def count(self, collection: str, expr: str = "") -> int:
        """The rows of ``collection`` (matching ``expr``)."""
        rows = self.client.query(collection, filter=expr, output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def query_all(self, collection: str, expr: str, fields: list[str]) -> list[dict[str, Any]]:
        """Every row matching ``expr`` (one request when they fit one, else an iterator)."""
        rows = self.client.query(collection, filter=expr, output_fields=fields, limit=MAX_WINDOW)
        if len(rows) < MAX_WINDOW:
            return list(rows)
        out: list[dict[str, Any]] = []
        iterator = self.client.query_iterator(collection, batch_size=4096, filter=expr, output_fields=fields)
        try:
            while batch := iterator.next():
                out.extend(batch)
        finally:
            iterator.close()
        return out

    def rows_by_id(self, collection: str, key: str, ids: Sequence[Any], fields: list[str]) -> dict[Any, dict[str, Any]]:
        """The rows whose primary key ``key`` is one of ``ids``, by key."""
        out: dict[Any, dict[str, Any]] = {}
        for part in batches(list(dict.fromkeys(ids))):
            for row in self.client.query(collection, filter=id_list(key, part), output_fields=fields,
                                         limit=len(part)):
                out[row[key]] = row
        return out

    def document_states(self, doc_ids: Sequence[str]) -> dict[str, tuple[str, int]]:
        rows = self.rows_by_id(self.documents, "doc_id", doc_ids, ["doc_id", "content_hash", "n_chunks"])
        return {d: (r["content_hash"], int(r["n_chunks"])) for d, r in rows.items()}

    def documents_by_id(self, doc_ids: Sequence[str]) -> dict[str, Document]:
        rows = self.rows_by_id(self.documents, "doc_id", doc_ids, ["doc_id", "text", "source", "metadata"])
        return {d: to_document(r) for d, r in rows.items()}

    def chunks_by_id(self, ids: Sequence[int]) -> dict[int, Chunk]:
        return {int(i): to_chunk(r) for i, r in self.rows_by_id(self.chunks, "id", ids, _CHUNK_FIELDS).items()}

    def chunks_of(self, doc_id: str) -> list[Chunk]:
        rows = self.query_all(self.chunks, id_list("doc_id", [doc_id]), _CHUNK_FIELDS)
        return sorted((to_chunk(r) for r in rows), key=lambda c: c.index)

    def vectors_by_id(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        rows = self.rows_by_id(self.chunks, "id", ids, ["id", "vector"])
        return {int(i): np.asarray(r["vector"], dtype=np.float32) for i, r in rows.items()}

    def query_documents(self, expr: str, fields: list[str]) -> list[dict[str, Any]]:
        """Every document row matching ``expr`` (``""``: all)."""
        return self.query_all(self.documents, expr or "n_chunks >= 0", fields)

    # -- searching --------------------------------------------------------------------------------------------

    def search(self, data: list[Any], k: int, expr: str, field: str,
               params: dict[str, Any]) -> list[list[tuple[int, float]]]:
        """``(id, distance)`` of the best ``k`` rows per query of one ``field`` (``vector`` or ``sparse``)."""
        out: list[list[tuple[int, float]]] = []
        step = 256
        for start in range(0, len(data), step):
            result = self.client.search(self.chunks, data=data[start:start + step], limit=min(k, MAX_WINDOW),
                                        filter=expr, anns_field=field, search_params=params, output_fields=[])
            out.extend([(int(hit["id"]), float(hit["distance"])) for hit in hits] for hits in result)
        return out
