"""Search an index directory: dense, BM25, hybrid (reciprocal rank fusion) and reranked.

Example:
    >>> from qwen3_rag.pipelines.search import Retriever
    >>> retriever = Retriever("my-index")                                       # doctest: +SKIP
    >>> hits = retriever.search("how do I rotate the logs?", k=5, hybrid=True)  # doctest: +SKIP
    >>> hits[0].source, hits[0].scores                                          # doctest: +SKIP
    ('docs/ops.md', {'dense': 0.71, 'bm25': 12.3, 'fused': 0.0325})

Pipeline of one search:

1. first stage: the dense top list (the query embedded with the index's embedder and ``instruction``), the
   BM25 top list, or both fused (``fusion="convex"``: ``alpha * cosine + (1 - alpha) * bm25 / max bm25``, the
   default; ``fusion="rrf"``: reciprocal rank fusion, k = 60, optional weights), each list cut to
   ``max(k, candidates)`` when fusing or reranking, else ``k`` (plus ``k`` spare hits when overlapping chunks
   are merged);
2. overlapping chunks of one document are merged (or de-duplicated) so a reader never sees a passage twice;
3. with ``rerank``, the top ``candidates`` are scored by a :class:`~qwen3_rag.Reranker` (token-budget batched,
   across queries in :meth:`Retriever.search_batch`) and sorted by that score;
4. the best ``k`` are returned as :class:`~qwen3_rag.types.Hit` with every score that applied in
   ``hit.scores`` (``dense``, ``bm25``, ``fused``, ``rerank``) and ``hit.score`` the one the list is
   sorted by.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from qwen3_rag.pipelines.fusion import (
    CONVEX_ALPHA,
    RRF_K,
    FusionMethod,
    OverlapMode,
    convex_fusion,
    merge_overlapping,
    reciprocal_rank_fusion,
)
from qwen3_rag.types import Hit

if TYPE_CHECKING:
    from qwen3_rag.indexers.bm25 import BM25Config, BM25Index, BM25Sidecar

logger = logging.getLogger(__name__)

__all__ = ["Retriever", "SearchMode", "embedder_from_manifest", "hits_to_dicts"]

SearchMode = Literal["dense", "bm25", "hybrid"]
_MODES = ("dense", "bm25", "hybrid")


class Retriever:
    """Search one index directory with dense, BM25, hybrid and reranked retrieval.

    Args:
        index: An index directory, or an open :class:`~qwen3_rag.indexers.index.Index` (then BM25 is
            registered with it and follows its upserts and deletes).
        model: Embedding model to use instead of the one named in the index manifest (an id or directory; the
            index refuses a model that does not match the one it was built with).
        embedder: An :class:`~qwen3_rag.Embedder` to use (takes precedence over ``model``).
        reranker: Default reranker for ``rerank=True``: a :class:`~qwen3_rag.Reranker` or a model id /
            directory (loaded on first use).
        bm25: BM25 settings for a BM25 index that has to be built (an existing one keeps its own).
        fusion: How hybrid search combines the lists: ``"convex"`` (scores, the default: better than RRF on
            every tuning set, and the only one that keeps hybrid at least as good as BM25 when the embedding
            model does not know the language; see BENCHMARKS.md, 5. Retrieval quality) or ``"rrf"``
            (reciprocal rank fusion).
        alpha: Dense weight of the convex fusion.
        weights: RRF weights of the (dense, BM25) lists.
        rrf_k: The RRF constant.
        overlap: What to do with overlapping chunks of one document in a result list: ``"merge"``, ``"dedup"``
            or ``"none"``.
        instruction: Default query instruction for the embedder (None: the embedder's / index's default).
        device: Device for models this retriever loads itself.
        query_cache_size: Query vectors kept (per query text and instruction), so a repeated query is not
            embedded again; 0 turns the cache off. The oldest entries go first.

    Raises:
        FileNotFoundError: ``index`` is a path without an index.
        ValueError: An argument is invalid (the message says which and what is allowed).
    """

    def __init__(
        self,
        index: str | os.PathLike[str] | Any,
        *,
        model: str | None = None,
        embedder: Any = None,
        reranker: Any = None,
        bm25: BM25Config | None = None,
        fusion: FusionMethod = "convex",
        alpha: float = CONVEX_ALPHA,
        weights: Sequence[float] = (1.0, 1.0),
        rrf_k: int = RRF_K,
        overlap: OverlapMode = "merge",
        instruction: str | None = None,
        device: str = "auto",
        query_cache_size: int = 1024,
    ) -> None:
        if overlap not in ("merge", "dedup", "none"):
            raise ValueError(f"overlap must be 'merge', 'dedup' or 'none', got {overlap!r}")
        if len(weights) != 2:
            raise ValueError(f"weights must be two numbers (dense, bm25), got {tuple(weights)!r}")
        if rrf_k < 0:
            raise ValueError(f"rrf_k must be >= 0, got {rrf_k}")
        if fusion not in ("convex", "rrf"):
            raise ValueError(f"fusion must be 'convex' or 'rrf', got {fusion!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.index: Any
        self._owns_index = isinstance(index, (str, os.PathLike))
        if self._owns_index:
            from qwen3_rag.indexers.index import Index

            path = Path(index)  # type: ignore[arg-type]
            if not path.exists():
                raise FileNotFoundError(f"index directory {str(path)!r} does not exist; build it first with "
                                        f"`qwen3-rag index {path} FILES...`")
            if embedder is None and model is not None:
                from qwen3_rag.retrieval.embedding import Embedder

                embedder = Embedder(model, device=device)
            self.index = Index.open(path, embedder=embedder, read_only=True)
        else:
            self.index = index
            if self.index.embedder is None and embedder is not None:
                self.index.embedder = embedder
            elif self.index.embedder is None and model is not None:
                from qwen3_rag.retrieval.embedding import Embedder

                self.index.embedder = Embedder(model, device=device)
        if self.index.embedder is None:
            self.index.embedder = embedder_from_manifest(self.index.model_info, device=device)
        self.device = device
        self.reranker = reranker
        self.bm25_config = bm25
        self.fusion: FusionMethod = fusion
        self.alpha = float(alpha)
        self.weights = (float(weights[0]), float(weights[1]))
        self.rrf_k = int(rrf_k)
        self.overlap: OverlapMode = overlap
        self.instruction = instruction
        self._sidecar: BM25Sidecar | None = None
        self._rerankers: dict[str, Any] = {}
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
        self._trim_query_cache()

    def _trim_query_cache(self) -> None:
        cache = self._query_vectors
        while len(cache) > self._query_cache_size:
            del cache[next(iter(cache))]

    # -- lifecycle
    # -----------------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the index if this retriever opened it."""
        if self._owns_index:
            self.index.close()

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Retriever(index={str(self.index.path)!r}, fusion={self.fusion!r}, alpha={self.alpha}, "
                f"weights={self.weights}, overlap={self.overlap!r})")

    @property
    def embedder(self) -> Any:
        """The index's embedder."""
        return self.index.embedder

    # -- BM25
    # ----------------------------------------------------------------------------------------------------
    @property
    def bm25(self) -> BM25Index:
        """The BM25 index of the index directory, loaded (or built) on first use and kept in step with it."""
        from qwen3_rag.indexers.bm25 import BM25Sidecar

        generation = self.index.generation
        sidecar = self._sidecar
        if sidecar is None or sidecar.bm25.generation != generation:
            # first use, or another process (or an index we did not register with) committed since
            writable = not getattr(self.index, "read_only", True)
            persist = os.access(self.index.path, os.W_OK)
            register = writable and sidecar is None
            self._sidecar = BM25Sidecar.attach(self.index, self.bm25_config, register=register,
                                               persist=persist)
        assert self._sidecar is not None
        return self._sidecar.bm25

    # -- reranking
    # -----------------------------------------------------------------------------------------------
    def _resolve_reranker(self, rerank: Any) -> Any:
        if rerank is None or rerank is False:
            return None
        if rerank is True:
            if self.reranker is None:
                raise ValueError("rerank=True needs a reranker: pass Retriever(..., reranker=Reranker(...)) "
                                 "or a "
                                 "model id, e.g. rerank='Qwen/Qwen3-Reranker-0.6B'")
            rerank = self.reranker
        if isinstance(rerank, (str, os.PathLike)):
            key = os.fspath(rerank)
            if key not in self._rerankers:
                from qwen3_rag.retrieval.reranking import Reranker

                self._rerankers[key] = Reranker(key, device=self.device)
            if self.reranker is None or isinstance(self.reranker, (str, os.PathLike)):
                self.reranker = self._rerankers[key]
            return self._rerankers[key]
        if not hasattr(rerank, "score_pairs") and not hasattr(rerank, "score"):
            raise TypeError(f"rerank must be None, a bool, a model id or a Reranker, "
                            f"got {type(rerank).__name__}")
        return rerank

    # -- search
    # --------------------------------------------------------------------------------------------------
    def search(
        self,
        query: str,
        k: int = 10,
        filter: Any = None,
        instruction: str | None = None,
        hybrid: bool = False,
        rerank: Any = None,
        candidates: int = 50,
        *,
        mode: SearchMode | None = None,
        overlap: OverlapMode | None = None,
    ) -> list[Hit]:
        """The ``k`` best passages for ``query``.

        Args:
            query: The question or keywords.
            k: How many hits to return.
            filter: A metadata filter (see :mod:`qwen3_rag.indexers.filters`): a Mongo-style dict such as
                ``{"lang": "en", "year": {"$gte": 2020}}``, or a callable ``metadata -> bool``.
            instruction: Query instruction for the embedder (None: the default).
            hybrid: Fuse dense and BM25 results (same as ``mode="hybrid"``).
            rerank: None/False for no reranking, True for the retriever's reranker, a model id or a Reranker.
            candidates: How many first-stage hits are fused and reranked.
            mode: ``"dense"`` (default), ``"bm25"`` or ``"hybrid"``.
            overlap: Override the retriever's handling of overlapping chunks for this call.

        Returns:
            Hits, best first.

        Raises:
            ValueError: An argument is invalid; :class:`~qwen3_rag.indexers.filters.FilterError` for a
                bad filter.
        """
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}; "
                            "use search_batch for many queries")
        return self.search_batch([query], k, filter, instruction, hybrid, rerank, candidates, mode=mode,
                                 overlap=overlap)[0]

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        filter: Any = None,
        instruction: str | None = None,
        hybrid: bool = False,
        rerank: Any = None,
        candidates: int = 50,
        *,
        mode: SearchMode | None = None,
        overlap: OverlapMode | None = None,
    ) -> list[list[Hit]]:
        """:meth:`search` for many queries at once: queries are embedded together and pairs reranked together.

        Returns:
            One list of hits per query, in input order.
        """
        if isinstance(queries, str):
            raise TypeError("search_batch takes a list of queries; use search() for one query")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        if not isinstance(candidates, int) or candidates < 1:
            raise ValueError(f"candidates must be a positive int, got {candidates!r}")
        mode = mode or ("hybrid" if hybrid else "dense")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}")
        if hybrid and mode != "hybrid":
            raise ValueError(f"hybrid=True contradicts mode={mode!r}; pass one of them")
        overlap = overlap or self.overlap
        if overlap not in ("merge", "dedup", "none"):
            raise ValueError(f"overlap must be 'merge', 'dedup' or 'none', got {overlap!r}")
        reranker = self._resolve_reranker(rerank)
        queries = list(queries)
        if not queries:
            return []

        depth = max(k, candidates) if (reranker is not None or mode == "hybrid") else k
        fetch = depth + (k if overlap != "none" else 0)

        dense: list[list[tuple[int, float]]] = [[] for _ in queries]
        keyword: list[list[tuple[int, float]]] = [[] for _ in queries]
        allowed = None if filter is None else self.index.matching_ids(filter)  # once, for both lists
        if mode in ("dense", "hybrid"):
            dense = self._dense(queries, fetch, allowed, instruction)
        if mode in ("bm25", "hybrid"):
            keyword = self.bm25.search_batch(queries, fetch, allowed)

        first_stage: list[list[Hit]] = []
        for dense_q, keyword_q in zip(dense, keyword, strict=True):
            first_stage.append(self._first_stage(mode, dense_q, keyword_q, fetch, overlap))

        if reranker is not None:
            first_stage = self._rerank(reranker, queries, [hits[:candidates] for hits in first_stage])
        return [hits[:k] for hits in first_stage]

    def rerank(self, queries: Sequence[str], hit_lists: Sequence[Sequence[Hit]],
               reranker: Any = True) -> list[list[Hit]]:
        """Rerank given hit lists (one per query) and sort each by the reranker's score.

        Args:
            queries: The queries.
            hit_lists: Hits for each query (e.g. from :meth:`search_batch`).
            reranker: True for the retriever's reranker, a model id or a Reranker.

        Returns:
            The same hits with ``score`` and ``scores["rerank"]`` set, best first per query.
        """
        if len(queries) != len(hit_lists):
            raise ValueError(f"got {len(queries)} queries but {len(hit_lists)} hit lists; "
                             "pass one list per query")
        resolved = self._resolve_reranker(reranker)
        if resolved is None:
            raise ValueError("rerank() needs a reranker: pass True (the retriever's), a model id "
                             "or a Reranker")
        return self._rerank(resolved, list(queries), [list(h) for h in hit_lists])

    # -- stages
    # --------------------------------------------------------------------------------------------------
    def _dense(self, queries: list[str], n: int, allowed: np.ndarray | None,
               instruction: str | None) -> list[list[tuple[int, float]]]:
        vectors = self._embed_queries(queries, instruction or self.instruction)
        ids, scores = self.index.search_vectors(vectors, n, allowed=allowed)
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
            vectors = np.asarray(self.index.embedder.embed_queries(missing, instruction=instruction),
                                 dtype=np.float32)
            fresh = dict(zip(missing, vectors, strict=True))
        rows = [fresh[q] if q in fresh else cache[(q, instruction)] for q in queries]
        if self.query_cache_size:
            for q, v in fresh.items():
                cache[(q, instruction)] = v
            self._trim_query_cache()
        return np.stack(rows) if rows else np.zeros((0, self.index.dim), np.float32)

    def _first_stage(self, mode: str, dense: list[tuple[int, float]], keyword: list[tuple[int, float]],
                     n: int, overlap: OverlapMode) -> list[Hit]:
        dense_scores = dict(dense)
        keyword_scores = dict(keyword)
        if mode == "dense":
            ranked = dense
        elif mode == "bm25":
            ranked = keyword
        elif self.fusion == "convex":
            ranked = convex_fusion(dense, keyword, self.alpha, keyword_truncated=len(keyword) >= n)[:n]
        else:
            ranked = reciprocal_rank_fusion([[i for i, _ in dense], [i for i, _ in keyword]], k=self.rrf_k,
                                            weights=self.weights)[:n]
        chunks = self._chunks([i for i, _ in ranked])
        out = []
        for chunk, (chunk_id, final) in zip(chunks, ranked, strict=True):
            scores: dict[str, float] = {}
            if chunk_id in dense_scores:
                scores["dense"] = dense_scores[chunk_id]
            if chunk_id in keyword_scores:
                scores["bm25"] = keyword_scores[chunk_id]
            if mode == "hybrid":
                scores["fused"] = final
            out.append(chunk.to_hit(final, scores))
        return merge_overlapping(out, overlap)

    def _chunks(self, ids: list[int]) -> list[Any]:
        """The stored chunks of ``ids``, in order (text, source, span, page and metadata)."""
        if not ids:
            return []
        chunks = self.index.get_chunks(ids)
        if len(chunks) != len(ids):
            found = {c.chunk_id for c in chunks}
            missing = [i for i in ids if i not in found]
            raise RuntimeError(f"chunks {missing[:5]} are in the search index but not in the store; "
                               "the index "
                               "directory is inconsistent: re-run `qwen3-rag index` on it")
        return chunks

    def _rerank(self, reranker: Any, queries: list[str], lists: list[list[Hit]]) -> list[list[Hit]]:
        pairs = [(q, hit.text) for q, hits in zip(queries, lists, strict=True) for hit in hits]
        if not pairs:
            return lists
        if hasattr(reranker, "score_pairs"):
            scores = list(reranker.score_pairs(pairs))
        else:
            scores = [s for q, hits in zip(queries, lists, strict=True)
                      for s in reranker.score(q, [h.text for h in hits])]
        out = []
        pos = 0
        for hits in lists:
            rescored = []
            for hit in hits:
                s = float(scores[pos])
                pos += 1
                rescored.append(dataclasses.replace(hit, score=s, scores={**hit.scores, "rerank": s}))
            # stable sort: ties keep the first-stage order
            out.append(sorted(rescored, key=lambda h: -h.score))
        return out


def embedder_from_manifest(model: Mapping[str, Any], device: str = "auto") -> Any:
    """Load the embedder an index was built with, from the ``model`` entry of its manifest.

    Raises:
        ValueError: The manifest names no model (the index was built from pre-computed vectors); pass
            ``embedder=`` or ``model=`` to the :class:`Retriever`.
    """
    name = model.get("model")
    if not name:
        raise ValueError("the index manifest names no embedding model (it was built from pre-computed "
                         "vectors); "
                         "pass Retriever(..., embedder=...) or model=...")
    from qwen3_rag.retrieval.embedding import Embedder

    kwargs: dict[str, Any] = {}
    for key in ("dim", "max_length", "instruction", "pooling", "normalize", "revision"):
        if model.get(key) is not None:
            kwargs[key] = model[key]
    logger.info("loading the embedding model %s from the index manifest", name)
    return Embedder(name, device=device, **kwargs)


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
