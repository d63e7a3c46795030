"""Rank fusion and the merging of overlapping chunks in one result list.

:func:`convex_fusion` (the default of hybrid search) combines the scores of a dense list (cosines) and a BM25
list: ``alpha * cosine + (1 - alpha) * confidence * bm25 / max bm25``, where :func:`keyword_confidence`,
``(1 - bm25@10 / max bm25) ** 2``, says how far the best BM25 hit stands out from the tenth; see its docstring
for why. Its dense weight depends on what was found (:func:`default_alpha`): :data:`CODE_ALPHA` when most of the
best candidates of both lists are source code (:func:`looks_like_code`), :data:`CONVEX_ALPHA` otherwise.

:func:`reciprocal_rank_fusion` combines ranked lists by (weighted) reciprocal rank fusion (Cormack, Clarke and
Büttcher, 2009): ``score(d) = sum_i w_i / (k + rank_i(d))`` with 1-based ranks and k = 60.

:func:`describe_fusion` names the fusion in words (plot legends, logs).

:func:`merge_overlapping` makes sure a reader does not see the same passage twice: hits of the same document
whose character spans overlap are merged into one hit (``"merge"``: the union of the spans, text rebuilt
exactly from the two chunk texts) or the lower-ranked one is dropped (``"dedup"``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from qwen3_rag.types import Hit

__all__ = ["AUTO", "CODE_ALPHA", "CODE_DENSITY", "CODE_SHARE", "CONFIDENCE_POWER", "CONFIDENCE_RANK",
           "CONVEX_ALPHA", "Alpha", "FusionMethod", "OverlapMode", "RRF_K", "best_candidates", "code_density",
           "convex_fusion", "default_alpha", "describe_alpha", "describe_calibration", "describe_fusion",
           "keyword_confidence", "looks_like_code", "merge_overlapping", "reciprocal_rank_fusion"]

K = TypeVar("K", bound=Hashable)

#: The RRF constant from the original paper, also the default of Elasticsearch, Vespa and LangChain.
RRF_K = 60

#: Dense weight of :func:`convex_fusion` on prose, tuned with all-MiniLM-L6-v2 on SciFact, XQuAD en/zh/de/es,
#: CoSQA and CoSQA without docstrings only (benchmarks/fusion_weights.py; BENCHMARKS.md, "Hybrid fusion").
CONVEX_ALPHA = 0.35

#: Dense weight of :func:`convex_fusion` when the candidates are code, tuned with :data:`CONVEX_ALPHA`. Questions
#: in words share few words with code, so BM25 finds less there than on prose and gets less weight.
CODE_ALPHA = 0.8

#: Symbols of code per visible character above which a text counts as code: prose has a median of 0 to 0.005,
#: CoSQA's Python functions 0.076 (93% above 0.04).
CODE_DENSITY = 0.04

#: The share of code among the best candidates from which they count as code.
CODE_SHARE = 0.5

_CODE_SYMBOLS = "(){}[]=;_<>"
_SPACES = " \t\n\r"
#: Characters of a text that code_density reads: a prefix tells code from prose as well as the whole.
_DENSITY_PREFIX = 4096

#: The BM25 hit that :func:`keyword_confidence` compares the best one with (1-based rank).
CONFIDENCE_RANK = 10

#: The power of the standout in :func:`keyword_confidence`.
CONFIDENCE_POWER = 2.0

OverlapMode = Literal["merge", "dedup", "none"]
FusionMethod = Literal["convex", "rrf"]
#: A dense weight in [0, 1], or :data:`AUTO`: the default for what a query found (:func:`default_alpha`).
Alpha = float | Literal["auto"]
AUTO: Literal["auto"] = "auto"


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


def keyword_confidence(keyword: Sequence[tuple[K, float]], rank: int = CONFIDENCE_RANK, *,
                       truncated: bool = False, power: float = CONFIDENCE_POWER) -> float:
    """How much a BM25 list can be trusted: ``(1 - score@rank / best score) ** power``, in [0, 1].

    A BM25 list whose best hit stands far above the tenth found a passage that shares the query's rare words;
    a flat list (the best hit barely above the tenth) only matched common words, the usual case when the
    queries and the documents use different words (natural-language questions against code). The confidence
    needs nothing but the scores of the list, so it works on any BM25 engine.

    Args:
        keyword: ``(key, bm25 score)`` best first.
        rank: The hit the best one is compared with (1-based).
        truncated: True when ``keyword`` was cut at a depth (more documents match). A list shorter than
            ``rank`` then takes its last score for the one at ``rank`` (the most it can be); a complete list
            takes 0 (no other document shares a word with the query).
        power: Sharpens (> 1) or softens (< 1) the confidence; 0 turns it off (always 1).

    Returns:
        0.0 for an empty list or one whose best score is not positive.

    Example:
        >>> keyword_confidence([("a", 8.0)] + [(i, 2.0) for i in range(9)])
        0.5625
    """
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if not keyword or keyword[0][1] <= 0:
        return 0.0
    return _confidence(keyword[0][1], _score_at([s for _, s in keyword], rank, truncated), power)


def _score_at(scores: Sequence[float], rank: int, truncated: bool) -> float:
    """The score at a 1-based rank of scores sorted best first; past the end, the last score of a cut list (an
    upper bound of the missing ones) or 0."""
    if len(scores) >= rank:
        return scores[rank - 1]
    return scores[-1] if truncated and scores else 0.0


def _confidence(best: float, reference: float, power: float) -> float:
    return float(min(max(1.0 - reference / best, 0.0), 1.0) ** power) if best > 0 else 0.0


def convex_fusion(dense: Sequence[tuple[K, float]], keyword: Sequence[tuple[K, float]],
                  alpha: float = CONVEX_ALPHA, *, keyword_truncated: bool = False,
                  keyword_weight: float | None = None) -> list[tuple[K, float]]:
    """Fuse a dense list (cosine scores) and a BM25 list by a convex combination of their scores.

    ``score(d) = alpha * cosine(d) + (1 - alpha) * w * bm25(d) / max bm25`` with ``w`` the BM25 list's
    :func:`keyword_confidence`. Cosines are used as they are: they have a fixed range and are comparable
    across queries, so a dense list whose scores are nearly flat (a model that does not know the language)
    moves the BM25 order little. BM25 scores have no fixed scale: they are divided by the query's best, and
    weighted by how far that best stands out, so a BM25 list of weak matches on common words (nothing stands
    out) cannot push a strong dense hit down, while a clear lexical match keeps its full weight.

    Each document's confidence is measured against the other documents (the tenth best of the others: for one
    of the ten best that is the eleventh), so raising one document's BM25 score (or its cosine) never lowers
    its fused score nor lets another document gain on it. A document missing from a list that was cut at some depth
    scored at most the list's lowest score, and gets that score (the dense list is always taken as cut); one
    missing from a BM25 list that holds every matching document gets 0. An empty BM25 list (no query word is
    in the index) leaves the dense order; an empty dense list leaves the BM25 order.

    Args:
        dense: ``(key, cosine)`` best first.
        keyword: ``(key, bm25 score)`` best first.
        alpha: Weight of the dense score, in [0, 1].
        keyword_truncated: True when ``keyword`` was cut at a depth (more documents match the query).
        keyword_weight: A fixed ``w`` for every document instead of the confidence (1.0 gives the plain
            query-max normalisation).

    Returns:
        ``(key, fused score)`` best first; ties keep the order of first appearance (dense list first).

    Raises:
        ValueError: ``alpha`` is outside [0, 1].

    Example:
        >>> noise = [("code", 1.1)] + [(i, 1.0) for i in range(10)]  # nothing stands out
        >>> convex_fusion([("answer", 0.7), ("code", 0.5)], noise, alpha=0.35)[0][0]
        'answer'
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    dense_scores = dict(dense)
    keyword_scores = dict(keyword)
    floor = min(dense_scores.values()) if dense_scores else 0.0
    top = max(keyword_scores.values()) if keyword_scores else 0.0
    keyword_floor = min(keyword_scores.values()) if keyword_scores and keyword_truncated else 0.0
    # w of the CONFIDENCE_RANK best documents (each compared with the next one) and of the rest
    by_score = sorted(keyword_scores.items(), key=lambda item: -item[1])
    head = {key for key, _ in by_score[:CONFIDENCE_RANK]}
    if keyword_weight is not None:
        head_weight = tail_weight = keyword_weight
    else:
        scores = [s for _, s in by_score]
        head_weight = _confidence(top, _score_at(scores, CONFIDENCE_RANK + 1, keyword_truncated),
                                  CONFIDENCE_POWER)
        tail_weight = _confidence(top, _score_at(scores, CONFIDENCE_RANK, keyword_truncated), CONFIDENCE_POWER)
    scale = (1.0 - alpha) / top if top > 0 else 0.0
    order: dict[K, int] = {}
    for key, _ in list(dense) + list(keyword):
        order.setdefault(key, len(order))
    fused = {key: alpha * dense_scores.get(key, floor)
             + scale * (head_weight if key in head else tail_weight) * keyword_scores.get(key, keyword_floor)
             for key in order}
    return sorted(fused.items(), key=lambda item: (-item[1], order[item[0]]))


def code_density(text: str) -> float:
    """Symbols of code (``(){}[]=;_<>``) per visible character (not a space, tab or line break) of the first
    4,096 characters of ``text``; 0.0 for a blank text.

    Example:
        >>> round(code_density("if x[i] == 0: return f(y)"), 3)
        0.3
    """
    text = text[:_DENSITY_PREFIX]
    visible = len(text) - sum(map(text.count, _SPACES))
    return sum(map(text.count, _CODE_SYMBOLS)) / visible if visible else 0.0


def looks_like_code(texts: Iterable[str]) -> bool:
    """Whether at least :data:`CODE_SHARE` of ``texts`` have a :func:`code_density` above :data:`CODE_DENSITY`
    (False for no texts).

    Example:
        >>> looks_like_code(["def add(a, b):\\n    return a + b", "x = [i ** 2 for i in range(9)]", "A sentence."])
        True
    """
    texts = list(texts)
    needed = math.ceil(CODE_SHARE * len(texts))
    code = prose = 0
    for text in texts:  # stops once the rest cannot change the answer (a query reads up to 20 texts)
        if code_density(text) > CODE_DENSITY:
            code += 1
        else:
            prose += 1
        if code >= needed or prose > len(texts) - needed:
            break
    return bool(texts) and code >= needed


def best_candidates(dense: Sequence[tuple[K, float]], keyword: Sequence[tuple[K, float]],
                    n: int = CONFIDENCE_RANK) -> list[K]:
    """The keys whose texts :func:`default_alpha` reads: the ``n`` best of each list, dense first, each once."""
    return list(dict.fromkeys([key for key, _ in dense[:n]] + [key for key, _ in keyword[:n]]))


def default_alpha(texts: Iterable[str]) -> float:
    """The default dense weight for candidates with these texts (:func:`best_candidates`): :data:`CODE_ALPHA`
    when they :func:`look like code <looks_like_code>`, else :data:`CONVEX_ALPHA`.

    Example:
        >>> default_alpha(["Tea is grown in Assam.", "Assam tea is malty."])
        0.35
    """
    return CODE_ALPHA if looks_like_code(texts) else CONVEX_ALPHA


def describe_fusion(method: FusionMethod, alpha: Alpha = AUTO, rrf_k: int = RRF_K,
                    weights: Sequence[float] = (1.0, 1.0)) -> str:
    """The fusion in a few words, e.g. ``"convex, BM25 confidence-weighted, alpha 0.35 (0.75 on code)"``.

    Example:
        >>> describe_fusion("rrf", weights=(1.0, 0.5))
        'rrf, k 60, weights 1/0.5'
    """
    if method == "convex":
        return f"convex, BM25 confidence-weighted, {describe_alpha(alpha)}"
    if method == "rrf":
        return f"rrf, k {rrf_k}, weights {weights[0]:g}/{weights[1]:g}"
    raise ValueError(f"fusion must be 'convex' or 'rrf', got {method!r}")


def describe_alpha(alpha: Alpha) -> str:
    """A dense weight in words: ``"alpha 0.5"``, or for ``"auto"`` ``"alpha 0.35 (0.8 on code)"``."""
    return f"alpha {CONVEX_ALPHA:g} ({CODE_ALPHA:g} on code)" if alpha == AUTO else f"alpha {alpha:g}"


def describe_calibration(calibration: Mapping[str, Any]) -> str:
    """Where an index's stored fusion settings came from, e.g. ``"calibrated on 974 queries of mbpp"``.

    Example:
        >>> describe_calibration({})
        "the index's hybrid settings"
    """
    if "queries" not in calibration:
        return "the index's hybrid settings"
    return f"calibrated on {calibration['queries']} queries of {calibration.get('dataset', '?')}"


def _union(a: Hit, b: Hit) -> tuple[str, int, int, int, int]:
    """Text, span and lines of the union of two overlapping spans of one document."""
    first, second = (a, b) if a.start <= b.start else (b, a)
    if second.end <= first.end:
        return first.text, first.start, first.end, first.start_line, first.end_line
    return (first.text + second.text[first.end - second.start:], first.start, second.end, first.start_line,
            second.end_line)


def _merge(keep: Hit, other: Hit) -> Hit:
    text, start, end, start_line, end_line = _union(keep, other)
    merged_ids = list(keep.metadata.get("merged_chunk_ids", [keep.chunk_id]))
    merged_ids.append(other.chunk_id)
    pages = [p for p in (keep.page, other.page) if p is not None]
    metadata: Mapping = {**keep.metadata, "merged_chunk_ids": merged_ids}
    return dataclasses.replace(keep, text=text, start=start, end=end, page=min(pages) if pages else None,
                               metadata=metadata, start_line=start_line, end_line=end_line)


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
