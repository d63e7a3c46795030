"""Rank fusion and the merging of overlapping chunks in one result list.

:func:`reciprocal_rank_fusion` combines ranked lists (dense and BM25) by reciprocal rank fusion
(Cormack, Clarke and Büttcher, 2009): ``score(d) = sum_i w_i / (k + rank_i(d))`` with 1-based ranks and
k = 60.

:func:`convex_fusion` (the default of hybrid search) combines the scores instead:
``alpha * cosine + (1 - alpha) * bm25 / max bm25``; see its docstring for why.

:func:`merge_overlapping` makes sure a reader does not see the same passage twice: hits of the same document
whose character spans overlap are merged into one hit (``"merge"``: the union of the spans, text rebuilt
exactly from the two chunk texts) or the lower-ranked one is dropped (``"dedup"``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping, Sequence
from typing import Literal, TypeVar

from qwen3_rag.types import Hit

__all__ = ["CONVEX_ALPHA", "FusionMethod", "OverlapMode", "RRF_K", "convex_fusion", "merge_overlapping",
           "reciprocal_rank_fusion"]

K = TypeVar("K", bound=Hashable)

#: The RRF constant from the original paper, also the default of Elasticsearch, Vespa and LangChain.
RRF_K = 60

#: Dense weight of :func:`convex_fusion`, tuned with all-MiniLM-L6-v2 on SciFact and XQuAD en/zh/de/es
#: (benchmarks/fusion_weights.py; see BENCHMARKS.md, 5. Retrieval quality, "Fusion weights").
CONVEX_ALPHA = 0.45

OverlapMode = Literal["merge", "dedup", "none"]
FusionMethod = Literal["convex", "rrf"]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[K]], k: int = RRF_K,
                           weights: Sequence[float] | None = None) -> list[tuple[K, float]]:
    """Fuse ranked lists by (weighted) reciprocal rank fusion.

    Args:
        rankings: Lists of keys, best first. A key may be missing from some lists; duplicates within one list
            count at their first position.
        k: The RRF constant (larger flattens the contribution of the top ranks).
        weights: One weight per list (default all 1.0).

    Returns:
        ``(key, fused score)`` pairs, best first; ties keep the order of first appearance (list 0 first).

    Raises:
        ValueError: ``k`` is negative or ``weights`` does not have one entry per list.

    Example:
        >>> reciprocal_rank_fusion([["a", "b"], ["b", "c"]], k=60)[0][0]
        'b'
    """
    if k < 0:
        raise ValueError(f"the RRF constant k must be >= 0, got {k}")
    if weights is None:
        weights = [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError(f"got {len(weights)} weights for {len(rankings)} ranked lists; "
                         "pass one weight per list")
    fused: dict[K, float] = {}
    first_seen: dict[K, tuple[int, int]] = {}
    for list_no, (ranking, weight) in enumerate(zip(rankings, weights, strict=True)):
        seen: set[K] = set()
        for rank, key in enumerate(ranking, start=1):
            if key in seen:
                continue
            seen.add(key)
            fused[key] = fused.get(key, 0.0) + weight / (k + rank)
            first_seen.setdefault(key, (rank, list_no))
    return sorted(fused.items(), key=lambda item: (-item[1], first_seen[item[0]]))


def convex_fusion(dense: Sequence[tuple[K, float]], keyword: Sequence[tuple[K, float]],
                  alpha: float = CONVEX_ALPHA, *, keyword_truncated: bool = False) -> list[tuple[K, float]]:
    """Fuse a dense list (cosine scores) and a BM25 list by a convex combination of their scores.

    ``score(d) = alpha * cosine(d) + (1 - alpha) * bm25(d) / max bm25``. Cosines are used as they are: they
    are comparable across queries, so a dense list whose scores are nearly flat (a model that does not know
    the language) moves the BM25 order little, while BM25 scores, which have no fixed scale, are divided by
    the query's best. A document missing from a list that was cut at some depth scored at most the list's
    lowest score, and gets that score (the dense list is always taken as cut); one missing from a BM25 list
    that holds every matching document gets 0. Unlike reciprocal rank fusion, this keeps hybrid search as good
    as BM25 alone on XQuAD zh with an English-only embedding model (see BENCHMARKS.md, 5. Retrieval quality).

    Args:
        dense: ``(key, cosine)`` best first.
        keyword: ``(key, bm25 score)`` best first.
        alpha: Weight of the dense score, in [0, 1].
        keyword_truncated: True when ``keyword`` was cut at a depth (more documents match the query).

    Returns:
        ``(key, fused score)`` best first; ties keep the order of first appearance (dense list first).

    Raises:
        ValueError: ``alpha`` is outside [0, 1].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    dense_scores = dict(dense)
    keyword_scores = dict(keyword)
    floor = min(dense_scores.values()) if dense_scores else 0.0
    top = max(keyword_scores.values()) if keyword_scores else 0.0
    keyword_floor = min(keyword_scores.values()) if keyword_scores and keyword_truncated else 0.0
    order: dict[K, int] = {}
    for key, _ in list(dense) + list(keyword):
        order.setdefault(key, len(order))
    fused = {
        key: alpha * dense_scores.get(key, floor)
        + (1.0 - alpha) * (keyword_scores.get(key, keyword_floor) / top if top > 0 else 0.0)
        for key in order
    }
    return sorted(fused.items(), key=lambda item: (-item[1], order[item[0]]))


def _union_text(a: Hit, b: Hit) -> tuple[str, int, int]:
    """Text and span of the union of two overlapping spans of one document."""
    first, second = (a, b) if a.start <= b.start else (b, a)
    if second.end <= first.end:
        return first.text, first.start, first.end
    return first.text + second.text[first.end - second.start:], first.start, second.end


def _merge(keep: Hit, other: Hit) -> Hit:
    text, start, end = _union_text(keep, other)
    merged_ids = list(keep.metadata.get("merged_chunk_ids", [keep.chunk_id]))
    merged_ids.append(other.chunk_id)
    pages = [p for p in (keep.page, other.page) if p is not None]
    metadata: Mapping = {**keep.metadata, "merged_chunk_ids": merged_ids}
    return dataclasses.replace(keep, text=text, start=start, end=end, page=min(pages) if pages else None,
                               metadata=metadata)


def _overlaps(a: Hit, b: Hit) -> bool:
    return a.doc_id == b.doc_id and a.start < b.end and b.start < a.end


def merge_overlapping(hits: Sequence[Hit], mode: OverlapMode = "merge") -> list[Hit]:
    """Merge or drop hits that overlap a better-ranked hit of the same document.

    Args:
        hits: Best first.
        mode: ``"merge"`` joins overlapping hits into the better-ranked one (its score, scores and position;
            text and span become the union; ``metadata["merged_chunk_ids"]`` lists the chunk ids joined);
            ``"dedup"`` drops the lower-ranked one; ``"none"`` returns the list unchanged.

    Returns:
        The new list, best first. Hits that only touch (one ends where the next starts) are kept apart.
    """
    if mode == "none":
        return list(hits)
    if mode not in ("merge", "dedup"):
        raise ValueError(f"overlap mode must be 'merge', 'dedup' or 'none', got {mode!r}")
    kept: list[Hit] = []
    for hit in hits:
        partner = next((i for i, k in enumerate(kept) if _overlaps(k, hit)), None)
        if partner is None:
            kept.append(hit)
            continue
        if mode == "dedup":
            continue
        kept[partner] = _merge(kept[partner], hit)
        # the union may now overlap another kept hit of the document: fold those in too (they rank lower)
        i = partner + 1
        while i < len(kept):
            if _overlaps(kept[partner], kept[i]):
                kept[partner] = _merge(kept[partner], kept.pop(i))
            else:
                i += 1
    return kept
