"""Metrics against hand-computed cases, and BEIR loading."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from qwen3_rag.pipelines.evaluation import (
    EvalReport,
    evaluate_run,
    load_beir,
    per_query_metrics,
    rank_run,
    recall_curve,
)


def _log2(x: float) -> float:
    return math.log2(x)


def test_graded_ndcg_hand_computed() -> None:
    qrels = {"q": {"a": 2, "b": 1, "c": 0, "z": 1}}
    run = {"q": {"c": 0.9, "a": 0.8, "x": 0.7, "b": 0.6}}  # ranks: c, a, x, b
    m = per_query_metrics(qrels, run, k_values=[3, 10])["q"]
    dcg3 = 0 / _log2(2) + 2 / _log2(3) + 0 / _log2(4)
    idcg3 = 2 / _log2(2) + 1 / _log2(3) + 1 / _log2(4)
    assert m["ndcg@3"] == pytest.approx(dcg3 / idcg3)
    dcg10 = dcg3 + 1 / _log2(5)
    assert m["ndcg@10"] == pytest.approx(dcg10 / idcg3)  # ideal has only 3 relevant docs
    assert m["recall@3"] == pytest.approx(1 / 3)
    assert m["recall@10"] == pytest.approx(2 / 3)
    assert m["mrr@3"] == pytest.approx(1 / 2)
    # map_cut: precision at each relevant retrieved, over all relevant (3)
    assert m["map@3"] == pytest.approx((1 / 2) / 3)
    assert m["map@10"] == pytest.approx((1 / 2 + 2 / 4) / 3)


def test_ties_broken_by_doc_id_descending_like_trec_eval() -> None:
    assert rank_run({"a": 1.0, "b": 1.0, "c": 2.0}) == ["c", "b", "a"]
    qrels = {"q": {"a": 1}}
    m = per_query_metrics(qrels, {"q": {"a": 1.0, "b": 1.0}}, k_values=[1, 2])["q"]
    assert m["recall@1"] == 0.0  # "b" wins the tie
    assert m["mrr@2"] == pytest.approx(0.5)


def test_query_without_relevant_documents_scores_zero_and_counts() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 0}}
    run = {"q1": {"a": 1.0}, "q2": {"b": 1.0}}
    per_q = per_query_metrics(qrels, run, k_values=[10])
    assert per_q["q2"] == {"ndcg@10": 0.0, "recall@10": 0.0, "mrr@10": 0.0, "map@10": 0.0}
    assert evaluate_run(qrels, run, k_values=[10])["ndcg@10"] == pytest.approx(0.5)


def test_missing_run_scores_zero_and_unjudged_queries_ignored() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    run = {"q1": {"a": 1.0}, "q3": {"b": 1.0}}
    assert evaluate_run(qrels, run, k_values=[10])["recall@10"] == pytest.approx(0.5)


def test_ignore_identical_ids_is_a_flag() -> None:
    qrels = {"1": {"1": 1, "2": 1}}
    run = {"1": {"1": 0.9, "2": 0.8}}
    assert evaluate_run(qrels, run, [1])["mrr@1"] == 1.0
    # dropping the document "1" (the query's own id) makes "2" rank first
    on = per_query_metrics(qrels, run, [1], ignore_identical_ids=True)["1"]
    assert on["mrr@1"] == 1.0 and on["recall@1"] == pytest.approx(0.5)
    qrels = {"1": {"1": 1}}
    assert evaluate_run(qrels, run, [10], ignore_identical_ids=True)["ndcg@10"] == 0.0


def test_perfect_run_and_cutoff() -> None:
    qrels = {"q": {"a": 3, "b": 1}}
    assert evaluate_run(qrels, {"q": {"a": 2.0, "b": 1.0}}, [10])["ndcg@10"] == pytest.approx(1.0)
    # swapped order: (1 + 3/log2 3) / (3 + 1/log2 3)
    swapped = evaluate_run(qrels, {"q": {"a": 1.0, "b": 2.0}}, [10])["ndcg@10"]
    assert swapped == pytest.approx((1 + 3 / _log2(3)) / (3 + 1 / _log2(3)))


def test_recall_curve_matches_recall_at_k() -> None:
    qrels = {"q1": {"a": 1, "b": 1}, "q2": {"c": 2}, "q3": {"d": 0}}
    run = {"q1": {"a": 3.0, "x": 2.0, "b": 1.0}, "q2": {"y": 1.0, "c": 0.5}}
    curve = recall_curve(qrels, run, max_k=4)
    for k in range(1, 5):
        assert curve[k - 1] == pytest.approx(evaluate_run(qrels, run, [k])[f"recall@{k}"])


def test_evaluate_empty_qrels_raises() -> None:
    with pytest.raises(ValueError, match="no judged queries"):
        evaluate_run({}, {})


def _write_beir(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    docs = [{"_id": "d1", "title": "Cats", "text": "purr"}, {"_id": "d2", "title": "", "text": "dogs bark"}]
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    queries = [{"_id": "q1", "text": "cat"}, {"_id": "q2", "text": "unjudged"}]
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\n")


def test_load_beir(tmp_path: Path) -> None:
    _write_beir(tmp_path / "set")
    ds = load_beir(tmp_path / "set")
    assert set(ds.corpus) == {"d1", "d2"}
    assert ds.queries == {"q1": "cat"}  # only judged queries
    assert ds.qrels == {"q1": {"d1": 2}}
    assert ds.document_text("d1") == "Cats purr"
    assert ds.document_text("d2") == "dogs bark"


def test_load_beir_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_beir(tmp_path / "nope")
    _write_beir(tmp_path / "set")
    (tmp_path / "set" / "queries.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="queries.jsonl"):
        load_beir(tmp_path / "set")
    _write_beir(tmp_path / "set")
    (tmp_path / "set" / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\n")
    with pytest.raises(ValueError, match="test.tsv:2"):
        load_beir(tmp_path / "set")


def _write_bigger_beir(root: Path) -> None:
    import random

    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "sigma"]
    root.mkdir(parents=True)
    (root / "qrels").mkdir()
    docs = {f"d{i}": " ".join(rng.choice(words) for _ in range(12)) for i in range(30)}
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "T" + k, "text": v}) + "\n"
                                               for k, v in docs.items()))
    queries = {f"q{i}": " ".join(rng.sample(words, 2)) for i in range(8)}
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n"
                                                for k, v in queries.items()))
    lines = ["query-id\tcorpus-id\tscore"]
    for i, (qid, text) in enumerate(queries.items()):
        hits = [d for d, t in docs.items() if all(w in t.split() for w in text.split())]
        for rank, d in enumerate(hits[:3] or ["d0"]):
            lines.append(f"{qid}\t{d}\t{2 if rank == 0 else 1}")
        if i == 0:
            lines.append(f"{qid}\td29\t0")
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")


def test_evaluate_index_end_to_end(tmp_path: Path, hash_embedder: Any, tiny_reranker: Any) -> None:
    from qwen3_rag.indexers.bm25 import BM25Index
    from qwen3_rag.indexers.index import Index
    from qwen3_rag.pipelines.evaluation import evaluate_index, index_corpus
    from qwen3_rag.pipelines.search import Retriever

    _write_bigger_beir(tmp_path / "set")
    ds = load_beir(tmp_path / "set")
    with Index.create(tmp_path / "ix", hash_embedder, chunk_size=0) as index:
        assert index_corpus(ds, index) == 30
        assert index_corpus(ds, index) == 0  # unchanged documents are skipped
        [doc] = index.get_documents(["d3"])  # title + text, the title also as metadata (chunk context)
        assert doc.text.startswith("Td3 ") and doc.metadata == {"title": "Td3"}
        retriever = Retriever(index, reranker=tiny_reranker, query_cache_size=4)
        embedded = hash_embedder.texts_embedded
        report = evaluate_index(ds, retriever, ["dense", "bm25", "hybrid", "rerank"], candidates=5)
        assert hash_embedder.texts_embedded - embedded == len(ds.queries)  # once each, not once per mode
        assert retriever.query_cache_size == 4
        assert len(retriever._query_vectors) == 4  # restored: the run's extra vectors are let go

    assert list(report.metrics) == ["dense", "bm25", "hybrid", "rerank"]
    assert set(report.metrics["dense"]) == {"ndcg@10", "recall@100", "mrr@10", "map@100"}
    assert report.num_queries == 8 and len(report.recall_curves["bm25"]) == 100
    assert "hybrid" in report.table() and "vs best" in report.table()
    assert report.settings["fusion"] == retriever.fusion_description
    assert set(report.changes()) == set(report.metrics)

    # BM25 through the index equals a standalone BM25 run scored by evaluate_run
    ids = list(ds.corpus)
    bm25 = BM25Index()
    bm25.add(list(range(len(ids))), [ds.document_text(d) for d in ids])
    run = {q: {ids[c]: s for c, s in bm25.search(text, k=100)} for q, text in ds.queries.items()}
    expected = evaluate_run(ds.qrels, run, [10, 100])
    for name, value in report.metrics["bm25"].items():
        assert value == pytest.approx(expected[name])

    # dense equals exact cosine search
    d = hash_embedder.embed_documents([ds.document_text(i) for i in ids])
    q = hash_embedder.embed_queries(list(ds.queries.values()))
    sims = q @ d.T
    run = {qid: {ids[j]: float(sims[n, j]) for j in range(len(ids))} for n, qid in enumerate(ds.queries)}
    expected = evaluate_run(ds.qrels, run, [10, 100])
    assert report.metrics["dense"]["ndcg@10"] == pytest.approx(expected["ndcg@10"], abs=1e-6)

    # reranking only reorders the top 5: the hybrid list's recall@100 is kept
    assert report.metrics["rerank"]["recall@100"] == pytest.approx(report.metrics["hybrid"]["recall@100"])


def test_evaluate_index_rejects_bad_modes(tmp_path: Path) -> None:
    from qwen3_rag.pipelines.evaluation import evaluate_index

    _write_beir(tmp_path / "set")
    with pytest.raises(ValueError, match="unknown evaluation mode"):
        evaluate_index(tmp_path / "set", retriever=SimpleNamespace(reranker=None), modes=["sparse"])
    with pytest.raises(ValueError, match="needs a reranker"):
        evaluate_index(tmp_path / "set", retriever=SimpleNamespace(reranker=None), modes=["rerank"])



def _report(dense: float, bm25: float | None, hybrid: float, rerank: float | None = None) -> EvalReport:
    scores = {"dense": dense, "bm25": bm25, "hybrid": hybrid, "rerank": rerank}
    metrics = {mode: {"ndcg@5": v, "recall@100": 0.9} for mode, v in scores.items() if v is not None}
    return EvalReport(metrics=metrics, settings={"k": 5, "fusion": "convex, test"})


def test_report_changes_against_the_best_single_mode() -> None:
    report = _report(dense=0.746, bm25=0.116, hybrid=0.536, rerank=0.740)
    assert report.ndcg_name == "ndcg@5"
    assert report.best_single() == "dense"
    changes = report.changes()
    assert changes["dense"] == 0.0
    assert changes["bm25"] == pytest.approx(-0.630)
    assert changes["hybrid"] == pytest.approx(-0.210)
    # hybrid is flagged, rerank (-0.006) is within the tolerance, and single modes never are
    assert list(report.regressions()) == ["hybrid"]
    assert list(report.regressions(tolerance=0.005)) == ["hybrid", "rerank"]
    [warning] = report.warnings()
    assert "hybrid is 0.210 below dense in ndcg@5" in warning and "convex, test" in warning
    assert "no --hybrid" in warning
    data = report.to_dict()
    assert data["hybrid"]["ndcg@5_change"] == pytest.approx(-0.210)
    assert data["dense"]["recall@100"] == 0.9
    table = report.table()
    assert "-0.210" in table and "+0.000" in table and "against dense" in table

    # BM25 the better single mode, hybrid above it: no warning
    report = _report(dense=0.242, bm25=0.965, hybrid=0.970)
    assert report.best_single() == "bm25"
    assert report.changes()["hybrid"] == pytest.approx(0.005)
    assert report.regressions() == {} and report.warnings() == []
    assert "+0.005" in report.table()


def test_report_without_a_single_mode() -> None:
    report = EvalReport(metrics={"hybrid": {"ndcg@10": 0.5}}, settings={"k": 10})
    assert report.best_single() is None and report.changes() == {} and report.warnings() == []
    assert report.to_dict() == {"hybrid": {"ndcg@10": 0.5}}
    assert "vs best" not in report.table()
    # only one single mode run: it is the reference
    report = EvalReport(metrics={"bm25": {"ndcg@10": 0.6}, "hybrid": {"ndcg@10": 0.5}}, settings={"k": 10})
    assert report.warnings() == ["hybrid is 0.100 below bm25 in ndcg@10 on this data set; BM25 search (--bm25) "
                                 "serves it better"]
