"""Convex and reciprocal rank fusion, and the merging of overlapping chunks."""

from __future__ import annotations

import random

import pytest

from qwen3_rag.pipelines.fusion import (
    CODE_ALPHA,
    CONFIDENCE_RANK,
    CONVEX_ALPHA,
    best_candidates,
    code_density,
    convex_fusion,
    default_alpha,
    describe_fusion,
    keyword_confidence,
    looks_like_code,
    merge_overlapping,
    reciprocal_rank_fusion,
)
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
    # (and the list's confidence is measured against that bound: (1 - 5 / 10) ** 2)
    cut = dict(convex_fusion([("a", 0.8), ("b", 0.6)], [("b", 10.0), ("c", 5.0)], alpha=0.5,
                             keyword_truncated=True))
    assert cut["a"] == pytest.approx(0.5 * 0.8 + 0.5 * 0.25 * 0.5)
    with pytest.raises(ValueError, match="alpha"):
        convex_fusion([], [], alpha=-0.1)


def _flat(n: int, score: float = 1.0, prefix: str = "k") -> list[tuple[str, float]]:
    return [(f"{prefix}{i}", score) for i in range(n)]


def test_keyword_confidence() -> None:
    assert keyword_confidence([("a", 8.0)] + _flat(9, 2.0)) == pytest.approx((1 - 2 / 8) ** 2)
    assert keyword_confidence(_flat(10)) == 0.0  # nothing stands out
    assert keyword_confidence([]) == 0.0
    assert keyword_confidence([("a", 0.0)]) == 0.0
    # a complete list shorter than the rank: no other document shares a word with the query
    assert keyword_confidence([("a", 3.0), ("b", 1.0)]) == 1.0
    # a cut list shorter than the rank: its last score bounds the missing ones
    assert keyword_confidence([("a", 4.0), ("b", 1.0)], truncated=True) == pytest.approx(0.75 ** 2)
    assert keyword_confidence([("a", 4.0), ("b", 1.0)], rank=2, power=1.0) == pytest.approx(0.75)
    assert keyword_confidence(_flat(10), power=0.0) == 1.0
    with pytest.raises(ValueError, match="rank"):
        keyword_confidence(_flat(3), rank=0)


def test_convex_noise_cannot_outrank_a_strong_dense_hit() -> None:
    dense = [("answer", 0.7)] + [(f"d{i}", 0.2) for i in range(20)]
    # BM25 of common words only: the best hit barely above the rest, and missing the answer
    noise = [("k0", 1.02)] + _flat(30, prefix="n")
    for alpha in (0.1, 0.35, 0.6):
        fused = convex_fusion(dense, noise, alpha, keyword_truncated=True)
        assert fused[0][0] == "answer"
    # a BM25 hit that stands out does take the lead (the same dense list)
    clear = [("k0", 9.0)] + _flat(30, prefix="n")
    assert convex_fusion(dense, clear, 0.35, keyword_truncated=True)[0][0] == "k0"


def test_convex_is_bounded() -> None:
    rng = random.Random(3)
    for _ in range(50):
        dense = [(f"d{i}", rng.uniform(-1, 1)) for i in range(rng.randint(0, 15))]
        keyword = [(f"d{i}", rng.uniform(0, 30)) for i in rng.sample(range(30), rng.randint(0, 25))]
        keyword.sort(key=lambda item: -item[1])
        alpha = rng.random()
        cosines = dict(dense)
        floor = min(cosines.values(), default=0.0)
        for key, score in convex_fusion(dense, keyword, alpha):
            own = alpha * cosines.get(key, floor)
            assert own - 1e-12 <= score <= own + (1 - alpha) + 1e-12


def _rank(fused: list[tuple[str, float]], key: str) -> int:
    return [k for k, _ in fused].index(key)


def test_convex_is_monotone_in_each_score() -> None:
    """Raising one document's cosine or BM25 score never lowers its fused score, nor lets another document gain
    on it (whatever its rank, including the one the confidence compares with), so it never moves down."""
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(2, 2 * CONFIDENCE_RANK + 4)
        dense = sorted(((f"d{i}", rng.uniform(0, 1)) for i in range(n)), key=lambda item: -item[1])
        keyword = sorted(((f"d{i}", rng.uniform(0.1, 20)) for i in range(n)), key=lambda item: -item[1])
        alpha = rng.uniform(0.05, 0.95)
        target = f"d{rng.randrange(n)}"
        before = convex_fusion(dense, keyword, alpha)
        raised_bm25 = sorted(((k, s * rng.uniform(1.0, 3.0) if k == target else s) for k, s in keyword),
                             key=lambda item: -item[1])
        raised_dense = sorted(((k, min(1.0, s + rng.uniform(0, 0.5)) if k == target else s) for k, s in dense),
                              key=lambda item: -item[1])
        for after in (convex_fusion(dense, raised_bm25, alpha), convex_fusion(raised_dense, keyword, alpha)):
            old, new = dict(before), dict(after)
            assert new[target] >= old[target] - 1e-12
            assert all(new[target] - new[k] >= old[target] - old[k] - 1e-12 for k in old)
            assert _rank(after, target) <= _rank(before, target)


def test_convex_ties_and_empty_lists() -> None:
    # equal fused scores keep the order of first appearance, dense list first
    fused = convex_fusion([("a", 0.5), ("b", 0.5)], [("c", 1.0), ("d", 1.0)], alpha=1.0)
    assert [k for k, _ in fused] == ["a", "b", "c", "d"]
    dense = [("a", 0.9), ("b", 0.5), ("c", 0.1)]
    # no query word in the index: the dense order, scores scaled by alpha
    assert convex_fusion(dense, [], alpha=0.35) == [(k, pytest.approx(0.35 * s)) for k, s in dense]
    # no dense list (e.g. nothing embedded yet): the BM25 order
    keyword = [("x", 6.0), ("y", 3.0), ("z", 1.0)]
    assert [k for k, _ in convex_fusion([], keyword, alpha=0.35)] == ["x", "y", "z"]
    assert convex_fusion([], [], alpha=0.35) == []
    # keyword_weight=1 is the plain query-max normalisation
    plain = dict(convex_fusion(dense, _flat(10), alpha=0.5, keyword_weight=1.0))
    assert plain["k0"] == pytest.approx(0.5 * 0.1 + 0.5)


def test_describe_fusion() -> None:
    assert describe_fusion("convex", alpha=0.35) == "convex, BM25 confidence-weighted, alpha 0.35"
    assert describe_fusion("convex") == describe_fusion("convex", "auto") == (
        f"convex, BM25 confidence-weighted, alpha {CONVEX_ALPHA:g} ({CODE_ALPHA:g} on code)")
    assert describe_fusion("rrf", rrf_k=60, weights=(1.0, 0.5)) == "rrf, k 60, weights 1/0.5"
    with pytest.raises(ValueError, match="fusion must be"):
        describe_fusion("max")  # type: ignore[arg-type]


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


def test_a_merged_hit_cites_the_lines_of_the_union() -> None:
    from qwen3_rag.types import line_spans

    doc = "".join(f"line {i}\n" for i in range(1, 30))
    spans = [(14, 60), (0, 30), (50, 120)]
    lines = [line_spans(doc, [span])[0] for span in spans]
    hits = [Hit(chunk_id=i, doc_id="d", text=doc[a:b], score=1.0 - i / 10, start=a, end=b, start_line=first,
                end_line=last) for i, ((a, b), (first, last)) in enumerate(zip(spans, lines, strict=True))]
    [merged] = merge_overlapping(hits, "merge")
    assert merged.text == doc[0:120]
    assert (merged.start_line, merged.end_line) == line_spans(doc, [(0, 120)])[0]


def test_dedup_and_none() -> None:
    hits = [_hit(1, 0, 30, 0.9), _hit(2, 20, 50, 0.8), _hit(3, 5, 10, 0.7)]
    assert [h.chunk_id for h in merge_overlapping(hits, "dedup")] == [1]
    assert merge_overlapping(hits, "none") == hits
    with pytest.raises(ValueError, match="overlap mode"):
        merge_overlapping(hits, "bogus")  # type: ignore[arg-type]


def test_code_is_told_from_prose_by_its_symbols() -> None:
    assert code_density("") == code_density("   \n") == 0.0
    assert code_density("x = f(a[0]);") == pytest.approx(6 / 10)  # spaces do not count
    assert code_density("words " * 1000 + "x[0] = f(y);" * 1000) == 0.0  # the first 4,096 characters tell
    assert code_density("The results of the trial (see Table 2) were significant for every group that took "
                        "the drug for more than a year.") < 0.04
    code = ["def area(r):\n    return 3.14159 * r ** 2", "items = [x for x in range(10) if x % 2 == 0]"]
    prose = ["Photosynthesis turns light into chemical energy.", "Water boils at 100 degrees at sea level."]
    assert looks_like_code(code) and looks_like_code(code + prose[:1])
    assert looks_like_code(code + prose)  # half is enough
    assert not looks_like_code(code[:1] + prose) and not looks_like_code(prose) and not looks_like_code([])
    assert default_alpha(code) == CODE_ALPHA and default_alpha(prose) == CONVEX_ALPHA


def test_best_candidates_are_the_head_of_each_list() -> None:
    dense = [(f"d{i}", 1.0 - i / 100) for i in range(30)]
    keyword = [("d3", 9.0), ("k1", 8.0)] + [(f"k{i}", 7.0 - i / 10) for i in range(2, 30)]
    head = best_candidates(dense, keyword)
    assert head[:CONFIDENCE_RANK] == [f"d{i}" for i in range(CONFIDENCE_RANK)]
    assert head[CONFIDENCE_RANK:] == ["k1"] + [f"k{i}" for i in range(2, CONFIDENCE_RANK)]  # d3 once
    assert best_candidates([], keyword, n=2) == ["d3", "k1"] and best_candidates([], []) == []
