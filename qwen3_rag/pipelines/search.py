"""Search an index: dense, BM25, hybrid (fused) and reranked. The one search path the CLI, the server and the
framework adapters call.

Example:
    >>> from qwen3_rag.pipelines.search import Retriever
    >>> retriever = Retriever("my-index")                                         # doctest: +SKIP
    >>> hits = retriever.search("how do I rotate the logs?", k=5, mode="hybrid")  # doctest: +SKIP
    >>> hits[0].source, hits[0].start_line, hits[0].scores                        # doctest: +SKIP
    ('docs/ops.md', 12, {'dense': 0.71, 'bm25': 12.3, 'fused': 0.62})

Pipeline of one search:

1. first stage: the dense top list (the query embedded with the index's embedder and ``instruction``), the BM25
   top list, or both fused (``fusion="convex"``, the default: ``alpha * cosine + (1 - alpha) * confidence * bm25 /
   max bm25``, the confidence saying how far the best BM25 hit stands out from the tenth, see
   :func:`~qwen3_rag.pipelines.fusion.convex_fusion`, and alpha by default 0.35 on prose and 0.8 where the best
   candidates are code, see :func:`~qwen3_rag.pipelines.fusion.default_alpha`; ``fusion="rrf"``: reciprocal rank
   fusion), each list cut to
   ``max(k, candidates)`` when fusing or reranking, else ``k`` (plus ``k`` spare hits when overlapping chunks are
   merged), all read from one commit of the index;
2. overlapping chunks of one document are merged (or de-duplicated) so a reader never sees a passage twice; when
   that leaves fewer than ``k`` while more exist, the lists are fetched deeper;
3. with ``rerank``, the top ``candidates`` are scored by a reranker (token-budget batched, across queries in
   :meth:`Retriever.search_batch`) and sorted by that score;
4. the best ``k`` come back as :class:`~qwen3_rag.types.Hit` with every score that applied in ``hit.scores``
   (``dense``, ``bm25``, ``fused``, ``rerank``) and ``hit.score`` the one the list is sorted by.
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from qwen3_rag.indexers.index import LARGE_K, cut_k
from qwen3_rag.pipelines.fusion import (
    AUTO,
    RRF_K,
    Alpha,
    FusionMethod,
    OverlapMode,
    best_candidates,
    convex_fusion,
    default_alpha,
    describe_calibration,
    describe_fusion,
    merge_overlapping,
    reciprocal_rank_fusion,
)
from qwen3_rag.protocols import Filter, PairScorer, StorageBackend, TextEmbedder
from qwen3_rag.retrieval.inputs import check_queries
from qwen3_rag.types import Chunk, Hit

logger = logging.getLogger(__name__)

__all__ = ["MODES", "Retriever", "SearchMode", "hits_to_dicts"]

SearchMode = Literal["dense", "bm25", "hybrid"]
MODES: tuple[str, ...] = ("dense", "bm25", "hybrid")
_OVERLAPS = ("merge", "dedup", "none")

Reranking = bool | str | os.PathLike[str] | PairScorer | None


class Retriever:
    """Search one index with dense, BM25, hybrid and reranked retrieval.

    Args:
        index: An index location (a directory or a backend URI; opened read-only, with the embedder its model
            record names) or an open index.
        model: Embedding model to use instead of the one the index records (the index refuses another model).
        embedder: An embedder to use (takes precedence over ``model``).
        reranker: Default reranker for ``rerank=True``: a reranker object or a model id / directory (loaded on
            first use).
        fusion: How hybrid search combines the lists: ``"convex"`` (scores, the default: the cosine plus the
            BM25 score weighted by how clearly its best hit stands out, so that hybrid stays close to the
            better of dense and BM25 when one of them is noise, e.g. an embedding model that does not know
            the language, or questions against code) or ``"rrf"`` (reciprocal rank fusion). BENCHMARKS.md,
            "Hybrid fusion", compares them. None: the fusion calibrated for the index
            (:attr:`~qwen3_rag.protocols.StorageBackend.hybrid_settings`, ``qwen3-rag eval --calibrate``), else
            ``"convex"``.
        alpha: Dense weight of the convex fusion, in [0, 1], or ``"auto"``: per query, 0.8 when most of the best
            candidates are code, else 0.35 (:func:`~qwen3_rag.pipelines.fusion.default_alpha`; questions in
            words share few words with code). None: the index's calibrated alpha (when its fusion is the one
            used), else ``"auto"``.
        weights: RRF weights of the (dense, BM25) lists.
        rrf_k: The RRF constant.
        overlap: What to do with overlapping chunks of one document in a result list: ``"merge"``, ``"dedup"`` or
            ``"none"``.
        instruction: Default query instruction (None: the embedder's / index's default).
        device: Device for models this retriever loads itself.
        query_cache_size: Query vectors kept (per query text and instruction), so a repeated query is not embedded
            again; 0 turns the cache off. The oldest entries go first.

    Raises:
        FileNotFoundError: ``index`` is a location without an index.
        ValueError: An argument is invalid (the message says which and what is allowed).
    """

    def __init__(self, index: str | os.PathLike[str] | StorageBackend, *, model: str | None = None,
                 embedder: TextEmbedder | None = None, reranker: Reranking = None, fusion: FusionMethod | None = None,
                 alpha: Alpha | None = None, weights: Sequence[float] = (1.0, 1.0), rrf_k: int = RRF_K,
                 overlap: OverlapMode = "merge", instruction: str | None = None, device: str = "auto",
                 query_cache_size: int = 1024) -> None:
        _check_options(overlap=overlap, weights=weights, rrf_k=rrf_k)
        _check_fusion(fusion, alpha)
        self._owns_index = isinstance(index, (str, os.PathLike))
        self.index = _open(index, model, embedder, device) if isinstance(index, (str, os.PathLike)) else index
        try:
            self._embedder = _embedder_for(self.index, model, embedder, device)
            self.fusion, self.alpha, self.calibration = _fusion_for(self.index, fusion, alpha)
        except BaseException:
            if self._owns_index:
                self.index.close()
            raise
        self.device = device
        self.reranker = reranker
        self.weights = (float(weights[0]), float(weights[1]))
        self.rrf_k = int(rrf_k)
        self.overlap: OverlapMode = overlap
        self.instruction = instruction
        self._rerankers: dict[str, PairScorer] = {}
        self._query_vectors: dict[tuple[str, str | None], np.ndarray] = {}
        self.query_cache_size = query_cache_size

    @property
    def query_cache_size(self) -> int:
        """How many query vectors are kept; lowering it drops the oldest at once."""
        return self._query_cache_size

    @query_cache_size.setter
    def query_cache_size(self, size: int) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"query_cache_size must be an int >= 0, got {size!r}")
        self._query_cache_size = size
        while len(self._query_vectors) > size:
            del self._query_vectors[next(iter(self._query_vectors))]

    @property
    def embedder(self) -> TextEmbedder:
        """The embedder queries are embedded with (the index's model)."""
        return self._embedder

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the index if this retriever opened it."""
        if self._owns_index:
            self.index.close()

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Retriever(index={self.index.location!r}, fusion={self.fusion_description!r}, overlap={self.overlap!r})"

    @property
    def fusion_description(self) -> str:
        """The fusion of hybrid search in words, e.g. ``"convex, BM25 confidence-weighted, alpha 0.35"``, and
        where its weight came from when the index's calibration chose it."""
        text = describe_fusion(self.fusion, self.alpha, self.rrf_k, self.weights)
        return text if self.calibration is None else f"{text} ({describe_calibration(self.calibration)})"

    # -- reranking -----------------------------------------------------------------------------------------------
    def _resolve_reranker(self, rerank: Reranking) -> PairScorer | None:
        if rerank is None or rerank is False:
            return None
        if rerank is True:
            if self.reranker is None or self.reranker is True:
                raise ValueError("rerank=True needs a reranker: pass Retriever(..., reranker=...) (a Reranker or a "
                                 "model id), or rerank='Qwen/Qwen3-Reranker-0.6B'")
            resolved = self._resolve_reranker(self.reranker)
            self.reranker = resolved
            return resolved
        if isinstance(rerank, (str, os.PathLike)):
            key = os.fspath(rerank)
            if key not in self._rerankers:
                from qwen3_rag.retrieval.models import load_reranker

                self._rerankers[key] = load_reranker(key, device=self.device)
            return self._rerankers[key]
        if isinstance(rerank, PairScorer):
            return rerank
        raise TypeError(f"rerank must be None, a bool, a model id or a reranker, got {type(rerank).__name__}")

    # -- search --------------------------------------------------------------------------------------------------
    def search(self, query: str, k: int = 10, *, filter: Filter | None = None, mode: SearchMode = "dense",
               rerank: Reranking = None, candidates: int = 50, instruction: str | None = None,
               overlap: OverlapMode | None = None) -> list[Hit]:
        """The ``k`` best passages for ``query``.

        Args:
            query: The question or keywords.
            k: How many hits to return.
            filter: A metadata filter (see :mod:`qwen3_rag.indexers.filters`), e.g.
                ``{"lang": "en", "year": {"$gte": 2020}}``.
            mode: ``"dense"`` (default), ``"bm25"`` or ``"hybrid"``.
            rerank: None/False for no reranking, True for the retriever's reranker, a model id or a reranker.
            candidates: How many first-stage hits are fused and reranked.
            instruction: Query instruction for the embedder (None: the default).
            overlap: Override the retriever's handling of overlapping chunks for this call.

        Returns:
            Hits, best first.

        Raises:
            ValueError: An argument is invalid or the query is empty; FilterError for a bad filter.
        """
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}; use search_batch for many queries")
        return self.search_batch([query], k, filter=filter, mode=mode, rerank=rerank, candidates=candidates,
                                 instruction=instruction, overlap=overlap)[0]

    def search_batch(self, queries: Sequence[str], k: int = 10, *, filter: Filter | None = None,
                     mode: SearchMode = "dense", rerank: Reranking = None, candidates: int = 50,
                     instruction: str | None = None, overlap: OverlapMode | None = None) -> list[list[Hit]]:
        """:meth:`search` for many queries at once: queries are embedded together and pairs reranked together.

        Returns:
            One list of hits per query, in input order.
        """
        if isinstance(queries, str):
            raise TypeError("search_batch takes a list of queries; use search() for one query")
        overlap = overlap or self.overlap
        _check_search(k=k, candidates=candidates, mode=mode, overlap=overlap)
        queries = check_queries(queries)
        reranker = self._resolve_reranker(rerank)
        if not queries:
            return []
        if k > LARGE_K:
            k = cut_k(k, self.index.count().chunks)
        depth = max(k, candidates) if (reranker is not None or mode == "hybrid") else k
        vectors = self._embed_queries(queries, instruction or self.instruction) if mode != "bm25" else None
        first_stage = self._first_stage(queries, vectors, mode, filter, depth, k, overlap)
        if reranker is not None:
            first_stage = self._rerank(reranker, queries, [hits[:candidates] for hits in first_stage])
        return [hits[:k] for hits in first_stage]

    def rerank(self, queries: Sequence[str], hit_lists: Sequence[Sequence[Hit]],
               reranker: Reranking = True) -> list[list[Hit]]:
        """Rerank given hit lists (one per query) and sort each by the reranker's score.

        Args:
            queries: The queries.
            hit_lists: Hits for each query (e.g. from :meth:`search_batch`).
            reranker: True for the retriever's reranker, a model id or a reranker.

        Returns:
            The same hits with ``score`` and ``scores["rerank"]`` set, best first per query.
        """
        if len(queries) != len(hit_lists):
            raise ValueError(f"got {len(queries)} queries but {len(hit_lists)} hit lists; pass one list per query")
        resolved = self._resolve_reranker(reranker)
        if resolved is None:
            raise ValueError("rerank() needs a reranker: pass True (the retriever's), a model id or a reranker")
        return self._rerank(resolved, list(queries), [list(h) for h in hit_lists])

    # -- stages --------------------------------------------------------------------------------------------------
    def _first_stage(self, queries: list[str], vectors: np.ndarray | None, mode: str, filter: Filter | None,
                     depth: int, k: int, overlap: OverlapMode) -> list[list[Hit]]:
        """Fused or single lists, merged, at least ``k`` hits long where the index has that many: a list that
        merging shortened is fetched again twice as deep."""
        out: list[list[Hit]] = [[] for _ in queries]
        todo = list(range(len(queries)))
        fetch = depth + (k if overlap != "none" else 0)
        while todo:
            with self.index.reading():  # every list and chunk of one round from one commit
                dense = (self._dense(vectors[todo], fetch, filter) if vectors is not None
                         else [[] for _ in todo])
                keyword = (self.index.keyword_search([queries[i] for i in todo], fetch, filter) if mode != "dense"
                           else [[] for _ in todo])
                lists = [self._fused(mode, d, kw, fetch, overlap) for d, kw in zip(dense, keyword, strict=True)]
            again = []
            for i, hits, d, kw in zip(todo, lists, dense, keyword, strict=True):
                out[i] = hits
                if len(hits) < k and max(len(d), len(kw)) >= fetch:  # merging shortened a list that was full
                    again.append(i)
            todo, fetch = again, fetch * 2
        return out

    def _dense(self, vectors: np.ndarray, n: int, filter: Filter | None) -> list[list[tuple[int, float]]]:
        ids, scores = self.index.search_vectors(vectors, n, filter)
        out = []
        for row_ids, row_scores in zip(ids, scores, strict=True):
            keep = row_ids >= 0
            out.append([(int(i), float(s)) for i, s in zip(row_ids[keep], row_scores[keep], strict=True)])
        return out

    def _embed_queries(self, queries: list[str], instruction: str | None) -> np.ndarray:
        """Query vectors, from the cache where the same query was embedded before (same instruction)."""
        cache = self._query_vectors
        missing = list(dict.fromkeys(q for q in queries if (q, instruction) not in cache))
        fresh: dict[str, np.ndarray] = {}
        if missing:
            vectors = np.asarray(self.embedder.embed_queries(missing, instruction=instruction), dtype=np.float32)
            fresh = dict(zip(missing, vectors, strict=True))
        rows = [fresh[q] if q in fresh else cache[(q, instruction)] for q in queries]
        if self.query_cache_size:
            for q, v in fresh.items():
                cache[(q, instruction)] = v
            self.query_cache_size = self.query_cache_size  # trims the oldest
        return np.stack(rows)

    def _fused(self, mode: str, dense: list[tuple[int, float]], keyword: list[tuple[int, float]], n: int,
               overlap: OverlapMode) -> list[Hit]:
        dense_scores, keyword_scores = dict(dense), dict(keyword)
        chunks: dict[int | None, Chunk] = {}
        if mode == "dense":
            ranked = dense
        elif mode == "bm25":
            ranked = keyword
        elif self.fusion == "convex":
            alpha = self.alpha
            if alpha == AUTO:
                chunks = {c.chunk_id: c for c in self.index.get_chunks(best_candidates(dense, keyword))}
                alpha = default_alpha(chunk.text for chunk in chunks.values())
            ranked = convex_fusion(dense, keyword, alpha, keyword_truncated=len(keyword) >= n)[:n]
        else:
            ranked = reciprocal_rank_fusion([[i for i, _ in dense], [i for i, _ in keyword]], k=self.rrf_k,
                                            weights=self.weights)[:n]
        chunks.update((c.chunk_id, c) for c in self.index.get_chunks([i for i, _ in ranked if i not in chunks]))
        out = []
        for chunk_id, final in ranked:
            chunk = chunks.get(chunk_id)
            if chunk is None:  # gone since it was found (a backend without snapshots): it cannot be cited
                continue
            scores: dict[str, float] = {}
            if chunk_id in dense_scores:
                scores["dense"] = dense_scores[chunk_id]
            if chunk_id in keyword_scores:
                scores["bm25"] = keyword_scores[chunk_id]
            if mode == "hybrid":
                scores["fused"] = final
            out.append(chunk.to_hit(final, scores))
        return merge_overlapping(out, overlap)

    def _rerank(self, reranker: PairScorer, queries: list[str], lists: list[list[Hit]]) -> list[list[Hit]]:
        pairs = [(q, hit.text) for q, hits in zip(queries, lists, strict=True) for hit in hits]
        if not pairs:
            return lists
        scores = iter(reranker.score_pairs(pairs))
        out = []
        for hits in lists:
            rescored = []
            for hit in hits:
                s = float(next(scores))
                rescored.append(dataclasses.replace(hit, score=s, scores={**hit.scores, "rerank": s}))
            out.append(sorted(rescored, key=lambda h: -h.score))  # stable: ties keep the first-stage order
        return out


def _open(location: str | os.PathLike[str], model: str | None, embedder: TextEmbedder | None,
          device: str) -> StorageBackend:
    """Open an index read-only with the embedder its record names (or the one given), built once."""
    from qwen3_rag.indexers.index import Index, redact_location
    from qwen3_rag.retrieval.models import load_embedder

    if not Index.exists(location):
        raise FileNotFoundError(f"no index at {redact_location(location)!r}; build one first, e.g. "
                                f"ingest(['docs/'], {redact_location(location)!r})")
    if embedder is None:
        embedder = load_embedder(model, record=Index.read_manifest(location)["model"], device=device)
    return Index.open(location, embedder, read_only=True)


def _embedder_for(index: StorageBackend, model: str | None, embedder: TextEmbedder | None,
                  device: str) -> TextEmbedder:
    """The embedder for queries: the one given (checked against the index's record), the index's own, or one built
    from the record."""
    from qwen3_rag.indexers.manifest import check_embedder

    if embedder is None and index.embedder is not None:
        return index.embedder
    if embedder is None:
        from qwen3_rag.retrieval.models import load_embedder

        embedder = load_embedder(model, record=index.model_info, device=device)
    check_embedder(index.model_info, embedder, index.location)
    return embedder


def _fusion_for(index: StorageBackend, fusion: FusionMethod | None,
                alpha: Alpha | None) -> tuple[FusionMethod, Alpha, dict[str, Any] | None]:
    """The fusion, its alpha and, where the index's stored settings supplied them, their calibration record."""
    explicit: tuple[FusionMethod, Alpha, None] = (fusion or "convex", AUTO if alpha is None else _alpha(alpha), None)
    stored = None if alpha is not None or fusion == "rrf" else index.hybrid_settings
    if stored is None:
        return explicit
    try:
        missing = [key for key in ("fusion", "alpha") if stored.get(key) is None]
        if missing:
            raise ValueError(f"{' and '.join(missing)} missing")
        stored_fusion, stored_alpha = stored["fusion"], _alpha(stored["alpha"])
        _check_fusion(stored_fusion, None)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"the index at {index.location!r} has unusable hybrid settings {stored!r} ({exc}); "
                         "calibrate again with qwen3-rag eval --calibrate, or remove them with "
                         "index.set_hybrid_settings(None)") from None
    if fusion not in (None, stored_fusion):
        return explicit
    return stored_fusion, stored_alpha, dict(stored.get("calibration") or {})


def _check_options(*, overlap: str, weights: Sequence[float], rrf_k: int) -> None:
    if overlap not in _OVERLAPS:
        raise ValueError(f"overlap must be 'merge', 'dedup' or 'none', got {overlap!r}")
    if len(weights) != 2:
        raise ValueError(f"weights must be two numbers (dense, bm25), got {tuple(weights)!r}")
    if rrf_k < 0:
        raise ValueError(f"rrf_k must be >= 0, got {rrf_k}")


def _check_fusion(fusion: str | None, alpha: object) -> None:
    """Given or stored fusion settings (None: not given)."""
    if fusion is not None and fusion not in ("convex", "rrf"):
        raise ValueError(f"fusion must be 'convex' or 'rrf', got {fusion!r}")
    if alpha is not None:
        _alpha(alpha)


def _alpha(value: object) -> Alpha:
    """A dense weight in [0, 1] as a float, or ``"auto"``."""
    if value == AUTO:
        return AUTO
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1] or 'auto', got {value!r}")
    return float(value)


def _check_search(*, k: int, candidates: int, mode: str, overlap: str) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if not isinstance(candidates, int) or isinstance(candidates, bool) or candidates < 1:
        raise ValueError(f"candidates must be a positive int, got {candidates!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if overlap not in _OVERLAPS:
        raise ValueError(f"overlap must be 'merge', 'dedup' or 'none', got {overlap!r}")


def hits_to_dicts(hits: Sequence[Hit]) -> list[dict[str, Any]]:
    """JSON-ready dicts of hits (the shape ``qwen3-rag query --json`` prints)."""
    out = []
    for hit in hits:
        d = dataclasses.asdict(hit)
        d["headings"] = list(hit.headings)
        d["metadata"] = dict(hit.metadata) if isinstance(hit.metadata, Mapping) else hit.metadata
        d["scores"] = dict(hit.scores)
        out.append(d)
    return out
