"""Retriever: dense / BM25 / hybrid / rerank against reference computations, filters, batching, BM25 sync."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qwen3_rag import Index, ingest_documents
from qwen3_rag.indexers.bm25 import BM25Index
from qwen3_rag.pipelines.fusion import CODE_ALPHA, CONVEX_ALPHA, reciprocal_rank_fusion
from qwen3_rag.pipelines.search import Retriever, hits_to_dicts
from qwen3_rag.types import Document

TEXTS = [
    "The cat sat on the mat. It purred all day long while the dogs barked outside in the garden.",
    "Stock markets fell sharply on Monday after the central bank raised interest rates again.",
    "Quantum computers use qubits. A qubit can be in a superposition of states at once.",
    "Gravity is a force that attracts two bodies towards each other, like the earth and the moon.",
    "Cats and dogs can become friends when they grow up together in the same house.",
    "Interest rates shape the bond market; central banks move them to fight inflation.",
]
QUERIES = ["cat purring in the garden", "central bank interest rates", "qubit superposition", "moon gravity"]
CODE = [
    "def purr(cat):\n    return cat.sound() if cat.is_happy() else None",
    "rates = {bank: rate_of(bank) for bank in central_banks()}",
    "def superpose(qubits):\n    return [q.hadamard() for q in qubits]",
    "class Moon(Body):\n    def pull(self, earth): return G * self.mass * earth.mass / r ** 2",
    "if garden[cat] == 'purring': dogs.bark()",
    "def raise_rates(bank, by=0.25):\n    bank.rate += by; return bank.rate",
]


def _docs(texts: list[str] = TEXTS) -> list[Document]:
    return [Document(id=f"d{i}", text=t, source=f"file{i}.txt",
                     metadata={"lang": "en" if i % 2 else "de", "n": i})
            for i, t in enumerate(texts)]


@pytest.fixture()
def index(tmp_path: Path, hash_embedder: Any) -> Any:
    idx = Index.create(tmp_path / "ix", hash_embedder, chunk_size=0)
    ingest_documents(_docs(), idx)
    yield idx
    idx.close()


def test_dense_equals_brute_force(index: Any, hash_embedder: Any) -> None:
    retriever = Retriever(index, overlap="none")
    chunks = list(index.iter_chunks())
    vectors = hash_embedder.embed_documents([t for _, t in chunks])
    for query in QUERIES:
        sims = vectors @ hash_embedder.embed_queries([query])[0]
        order = np.argsort(-sims, kind="stable")[:3]
        hits = retriever.search(query, k=3)
        assert [h.chunk_id for h in hits] == [chunks[i][0] for i in order]
        assert [h.score for h in hits] == pytest.approx([float(sims[i]) for i in order], abs=1e-5)
        assert all(set(h.scores) == {"dense"} for h in hits)


def test_hit_fields(index: Any) -> None:
    hit = Retriever(index).search("qubit superposition", k=1)[0]
    assert hit.doc_id == "d2" and hit.source == "file2.txt" and hit.text == TEXTS[2]
    assert (hit.start, hit.end) == (0, len(TEXTS[2])) and hit.metadata["lang"] == "de"
    record = hits_to_dicts([hit])[0]
    assert record["doc_id"] == "d2" and record["scores"] == {"dense": hit.score}


def test_bm25_mode_equals_standalone_bm25(index: Any) -> None:
    retriever = Retriever(index)
    reference = BM25Index()
    chunks = list(index.iter_chunks())
    reference.add([c for c, _ in chunks], [t for _, t in chunks])
    for query in QUERIES:
        hits = retriever.search(query, k=4, mode="bm25")
        expected = reference.search(query, k=4)
        assert [h.chunk_id for h in hits] == [c for c, _ in expected]
        assert [h.scores["bm25"] for h in hits] == pytest.approx([s for _, s in expected])


def test_hybrid_is_rrf_of_the_two_lists(index: Any) -> None:
    retriever = Retriever(index, fusion="rrf", weights=(1.0, 0.5))
    for query in QUERIES:
        dense = retriever.search(query, k=6, mode="dense", overlap="none")
        bm25 = retriever.search(query, k=6, mode="bm25", overlap="none")
        expected = reciprocal_rank_fusion([[h.chunk_id for h in dense], [h.chunk_id for h in bm25]], k=60,
                                          weights=[1.0, 0.5])
        hits = retriever.search(query, k=6, mode="hybrid", candidates=6, overlap="none")
        assert [h.chunk_id for h in hits] == [c for c, _ in expected][:6]
        assert hits[0].scores["fused"] == pytest.approx(expected[0][1]) == pytest.approx(hits[0].score)
        assert "dense" in hits[0].scores


def test_hybrid_convex_is_the_score_combination(index: Any) -> None:
    retriever = Retriever(index, alpha=0.3)
    for query in QUERIES:
        dense = retriever.search(query, k=6, mode="dense", overlap="none")
        bm25 = retriever.search(query, k=6, mode="bm25", overlap="none")
        floor = min(h.score for h in dense)
        top = max(h.score for h in bm25)
        bm25_scores = {h.chunk_id: h.score for h in bm25}
        expected = {h.chunk_id: 0.3 * h.score + 0.7 * bm25_scores.get(h.chunk_id, 0.0) / top for h in dense}
        for h in bm25:
            expected.setdefault(h.chunk_id, 0.3 * floor + 0.7 * h.score / top)
        hits = retriever.search(query, k=6, mode="hybrid", candidates=6, overlap="none")
        assert [h.score for h in hits] == pytest.approx(sorted(expected.values(), reverse=True)[:6])
        assert all(h.scores["fused"] == h.score for h in hits)


@pytest.mark.parametrize(("texts", "weight"), [(TEXTS, CONVEX_ALPHA), (CODE, CODE_ALPHA)])
def test_the_default_dense_weight_follows_what_was_found(tmp_path: Path, hash_embedder: Any, texts: list[str],
                                                         weight: float) -> None:
    with Index.create(tmp_path / "ix", hash_embedder, chunk_size=0) as index:
        ingest_documents(_docs(texts), index)
        default, other = Retriever(index), Retriever(index, alpha=CODE_ALPHA + CONVEX_ALPHA - weight)
        assert default.alpha == "auto" and default.fusion_description == (
            f"convex, BM25 confidence-weighted, alpha {CONVEX_ALPHA:g} ({CODE_ALPHA:g} on code)")
        for query in QUERIES:
            hits = default.search(query, k=6, mode="hybrid", overlap="none")
            expected = Retriever(index, alpha=weight).search(query, k=6, mode="hybrid", overlap="none")
            assert [(h.chunk_id, h.score) for h in hits] == [(h.chunk_id, h.score) for h in expected]
            assert [h.score for h in hits] != [h.score for h in other.search(query, k=6, mode="hybrid",
                                                                            overlap="none")]


def test_batch_equals_single_calls(index: Any) -> None:
    retriever = Retriever(index)
    for mode in ("dense", "bm25", "hybrid"):
        batch = retriever.search_batch(QUERIES, k=3, mode=mode)
        single = [retriever.search(q, k=3, mode=mode) for q in QUERIES]
        assert [[h.chunk_id for h in hs] for hs in batch] == [[h.chunk_id for h in hs] for hs in single]
    assert retriever.search_batch([], k=3) == []


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_filter_applies_in_every_mode(index: Any, mode: str) -> None:
    retriever = Retriever(index)
    hits = retriever.search("cats dogs market rates", k=10, filter={"lang": "en"}, mode=mode)
    assert hits and all(h.metadata["lang"] == "en" for h in hits)
    hits = retriever.search("cats", k=10, filter={"n": {"$gte": 4}}, mode=mode)
    assert all(h.metadata["n"] >= 4 for h in hits)


def test_rerank_orders_by_reranker(index: Any, tiny_reranker: Any) -> None:
    retriever = Retriever(index, reranker=tiny_reranker)
    hits = retriever.search("central bank interest rates", k=3, mode="hybrid", rerank=True, candidates=5)
    assert len(hits) == 3
    scores = [h.scores["rerank"] for h in hits]
    assert scores == sorted(scores, reverse=True) and [h.score for h in hits] == scores
    pool = retriever.search("central bank interest rates", k=5, mode="hybrid", candidates=5)
    expected = tiny_reranker.score("central bank interest rates", [h.text for h in pool])
    assert max(scores) == pytest.approx(max(expected), abs=1e-5)
    batch = retriever.search_batch(QUERIES[:2], k=2, rerank=True, candidates=4)
    single = [retriever.search(q, k=2, rerank=True, candidates=4) for q in QUERIES[:2]]
    assert [[h.chunk_id for h in hs] for hs in batch] == [[h.chunk_id for h in hs] for hs in single]


def test_overlapping_chunks_are_merged(tmp_path: Path, hash_embedder: Any) -> None:
    text = " ".join(f"Sentence {i} talks about apples and pears in the orchard." for i in range(12))
    with Index.create(tmp_path / "ov", hash_embedder, chunk_size=24, chunk_overlap=8) as idx:
        ingest_documents([Document(id="long", text=text, source="long.txt")], idx)
        assert len(idx.chunks_of("long")) > 2
        raw = Retriever(idx, overlap="none").search("apples pears orchard", k=30, mode="bm25")
        assert any(a.start < b.end and b.start < a.end for a in raw for b in raw if a is not b)
        for overlap in ("merge", "dedup"):
            hits = Retriever(idx, overlap=overlap).search("apples pears orchard", k=30, mode="bm25")
            spans = sorted((h.start, h.end) for h in hits)
            assert all(e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:], strict=False))
            assert all(text[h.start:h.end] == h.text for h in hits)
        merged = Retriever(idx).search("apples pears orchard", k=30, mode="bm25")
        assert sum(len(h.text) for h in merged) >= sum(len(h.text) for h in
                                                       Retriever(idx, overlap="dedup").search(
                                                           "apples pears orchard", k=30, mode="bm25"))


def test_bm25_follows_upsert_and_delete(index: Any) -> None:
    retriever = Retriever(index)
    assert retriever.search("zebra", mode="bm25") == []
    ingest_documents([Document(id="d1", text="A zebra crossed the savanna.", source="file1.txt"),
                      Document(id="z", text="Zebras have stripes; a zebra herd.", source="z.txt")], index)
    hits = retriever.search("zebra", k=5, mode="bm25")
    assert {h.doc_id for h in hits} == {"d1", "z"}
    with index.transaction():
        index.delete(["z"])
    assert [h.doc_id for h in retriever.search("zebra", k=5, mode="bm25")] == ["d1"]
    assert retriever.search("stock markets fell", k=5, mode="bm25") == [] or all(
        h.doc_id != "d1" for h in retriever.search("stock markets fell", k=5, mode="bm25"))
    # BM25 equals a fresh build over the store
    fresh = BM25Index()
    chunks = list(index.iter_chunks())
    fresh.add([c for c, _ in chunks], [t for _, t in chunks])
    assert index.keyword_index().ids == fresh.ids


def test_read_only_retriever_catches_up(tmp_path: Path, hash_embedder: Any) -> None:
    with Index.create(tmp_path / "ix", hash_embedder, chunk_size=0) as idx:
        ingest_documents(_docs(), idx)
    with Retriever(tmp_path / "ix", embedder=hash_embedder) as reader:
        assert reader.search("qubit", k=1, mode="bm25")[0].doc_id == "d2"
    # a writer that never touched BM25: it is kept in step and published when the writer closes
    with Index.open(tmp_path / "ix", hash_embedder) as idx:
        idx.delete(["d2"])
        ingest_documents([Document(id="q", text="Qubit qubit qubit.", source="q.txt")], idx)
    with Retriever(tmp_path / "ix", embedder=hash_embedder) as reader:
        assert [h.doc_id for h in reader.search("qubit", k=5, mode="bm25")] == ["q"]


def test_errors(index: Any, tmp_path: Path) -> None:
    retriever = Retriever(index)
    with pytest.raises(ValueError, match="needs a reranker"):
        retriever.search("x", rerank=True)
    with pytest.raises(ValueError, match="mode must be one of"):
        retriever.search("x", mode="sparse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k must be a positive int"):
        retriever.search("x", k=0)
    with pytest.raises(ValueError, match="query 0 is empty"):
        retriever.search("  ")
    with pytest.raises(TypeError, match="search_batch"):
        retriever.search(["x"])  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="no index at"):
        Retriever(tmp_path / "missing")
    with pytest.raises(ValueError, match="weights"):
        Retriever(index, weights=(1.0,))
    with pytest.raises(ValueError, match="fusion must be"):
        Retriever(index, fusion="max")  # type: ignore[arg-type]
    for alpha in (1.5, "0.5", True, "automatic"):
        with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\] or 'auto'"):
            Retriever(index, alpha=alpha)  # type: ignore[arg-type]


def test_repeated_queries_are_embedded_once(index: Any, hash_embedder: Any) -> None:
    retriever = Retriever(index, overlap="none", query_cache_size=2)
    first = retriever.search_batch(QUERIES[:2], k=3)
    embedded = hash_embedder.texts_embedded
    assert retriever.search_batch(QUERIES[:2], k=3, mode="hybrid") and hash_embedder.texts_embedded == embedded
    assert retriever.search_batch(QUERIES[:2], k=3) == first
    retriever.search(QUERIES[2], k=3)  # a third query pushes the oldest out
    assert hash_embedder.texts_embedded == embedded + 1
    retriever.search_batch(QUERIES[:2], k=3)
    assert hash_embedder.texts_embedded == embedded + 2  # only QUERIES[0] was embedded again
    off = Retriever(index, query_cache_size=0)
    off.search(QUERIES[0], k=1)
    off.search(QUERIES[0], k=1)
    assert hash_embedder.texts_embedded == embedded + 4
    with pytest.raises(ValueError, match="query_cache_size"):
        Retriever(index, query_cache_size=-1)
    retriever.query_cache_size = 1  # lowering the size drops the oldest vectors at once
    assert list(retriever._query_vectors) == [(QUERIES[0], None)]
    with pytest.raises(ValueError, match="query_cache_size"):
        retriever.query_cache_size = -1
