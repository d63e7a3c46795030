"""Reciprocal rank fusion and the merging of overlapping chunks."""

from __future__ import annotations

import pytest

from qwen3_rag.pipelines.fusion import convex_fusion, merge_overlapping, reciprocal_rank_fusion
from qwen3_rag.types import Hit

DOC = "The quick brown fox jumps over the lazy dog. " * 4


def _hit(chunk_id: int, start: int, end: int, score: float, doc_id: str = "d") -> Hit:
    return Hit(chunk_id=chunk_id, doc_id=doc_id, text=DOC[start:end], score=score, start=start, end=end)


def test_rrf_hand_computed() -> None:
    fused = dict(reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"]], k=60))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["b"] == pytest.approx(1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)


def test_rrf_weights_and_order() -> None:
    ranked = reciprocal_rank_fusion([["a", "b"], ["b", "a"]], k=60)
    assert [key for key, _ in ranked] == ["a", "b"]  # tie: first seen in list 0 at rank 1
    ranked = reciprocal_rank_fusion([["a", "b"], ["b", "a"]], k=60, weights=[1.0, 2.0])
    assert [key for key, _ in ranked] == ["b", "a"]
    assert ranked[0][1] == pytest.approx(1 / 62 + 2 / 61)


def test_rrf_duplicates_and_errors() -> None:
    assert dict(reciprocal_rank_fusion([["a", "a", "b"]]))["a"] == pytest.approx(1 / 61)
    with pytest.raises(ValueError, match="weights"):
        reciprocal_rank_fusion([["a"], ["b"]], weights=[1.0])
    with pytest.raises(ValueError, match="k must be"):
        reciprocal_rank_fusion([["a"]], k=-1)
    assert reciprocal_rank_fusion([]) == []


def test_convex_fusion_hand_computed() -> None:
    fused = dict(convex_fusion([("a", 0.8), ("b", 0.6)], [("b", 10.0), ("c", 5.0)], alpha=0.5))
    assert fused["a"] == pytest.approx(0.5 * 0.8 + 0.0)
    assert fused["b"] == pytest.approx(0.5 * 0.6 + 0.5 * 1.0)
    assert fused["c"] == pytest.approx(0.5 * 0.6 + 0.5 * 0.5)  # missing dense score: the list's lowest cosine
    assert [k for k, _ in convex_fusion([("a", 0.8), ("b", 0.6)], [("b", 10.0)], alpha=0.5)] == ["b", "a"]
    # a tie keeps the order of first appearance, dense list first
    assert [k for k, _ in convex_fusion([("a", 0.5)], [("b", 1.0)], alpha=1.0)] == ["a", "b"]
    assert convex_fusion([], [("x", 2.0)], alpha=0.4) == [("x", pytest.approx(0.6))]
    assert convex_fusion([("x", 0.3)], [], alpha=0.4) == [("x", pytest.approx(0.12))]
    # a BM25 list cut at a depth: a missing document scored at most the list's lowest score
    cut = dict(convex_fusion([("a", 0.8), ("b", 0.6)], [("b", 10.0), ("c", 5.0)], alpha=0.5,
                             keyword_truncated=True))
    assert cut["a"] == pytest.approx(0.5 * 0.8 + 0.5 * 0.5)
    with pytest.raises(ValueError, match="alpha"):
        convex_fusion([], [], alpha=-0.1)


def test_merge_builds_exact_union() -> None:
    hits = [_hit(2, 20, 60, 0.9), _hit(1, 0, 30, 0.8), _hit(9, 10, 40, 0.7, doc_id="other"),
            _hit(3, 60, 90, 0.6)]
    merged = merge_overlapping(hits, "merge")
    assert [h.chunk_id for h in merged] == [2, 9, 3]  # 3 only touches 2: kept apart
    top = merged[0]
    assert (top.start, top.end, top.score) == (0, 60, 0.9)
    assert top.text == DOC[0:60]
    assert top.metadata["merged_chunk_ids"] == [2, 1]


def test_merge_chains_into_one_passage() -> None:
    hits = [_hit(1, 0, 30, 0.9), _hit(3, 50, 80, 0.8), _hit(2, 25, 55, 0.7)]
    merged = merge_overlapping(hits, "merge")
    assert len(merged) == 1
    assert merged[0].text == DOC[0:80] and (merged[0].start, merged[0].end) == (0, 80)


def test_dedup_and_none() -> None:
    hits = [_hit(1, 0, 30, 0.9), _hit(2, 20, 50, 0.8), _hit(3, 5, 10, 0.7)]
    assert [h.chunk_id for h in merge_overlapping(hits, "dedup")] == [1]
    assert merge_overlapping(hits, "none") == hits
    with pytest.raises(ValueError, match="overlap mode"):
        merge_overlapping(hits, "bogus")  # type: ignore[arg-type]
