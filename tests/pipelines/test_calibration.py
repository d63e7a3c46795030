"""Hybrid fusion calibrated on labelled queries: the weights are scored exactly as hybrid search ranks, the choice
follows its rule, the settings are stored with the index and every retriever over it uses them; the CLI's
``eval --calibrate``."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from qwen3_rag import Index, Retriever
from qwen3_rag.pipelines.calibration import ALPHAS, MIN_GAIN, MIN_QUERIES, calibrate_hybrid, choose_alpha
from qwen3_rag.pipelines.evaluation import evaluate_index, index_corpus, load_beir
from qwen3_rag.pipelines.fusion import CODE_ALPHA, CONVEX_ALPHA

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "theta", "kappa", "lambda", "sigma", "omega",
         "rho", "tau", "phi", "chi", "psi"]


def write_beir(root: Path, n_queries: int = 24) -> Path:
    """Documents of random words; each query asks for a few words of one document, some with a decoy word."""
    rng = random.Random(7)
    root.mkdir(parents=True)
    (root / "qrels").mkdir()
    docs = {f"d{i}": " ".join(rng.choice(WORDS) for _ in range(14)) for i in range(40)}
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n"
                                               for k, v in docs.items()))
    queries, lines = {}, ["query-id\tcorpus-id\tscore"]
    for i in range(n_queries):
        target = f"d{rng.randrange(40)}"
        words = rng.sample(docs[target].split(), 3) + ([rng.choice(WORDS)] if i % 3 == 0 else [])
        queries[f"q{i}"] = " ".join(words)
        lines.append(f"q{i}\t{target}\t1")
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n"
                                                for k, v in queries.items()))
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("chunk_size", [0, 6])
def test_each_weight_scores_what_hybrid_search_at_that_weight_scores(tmp_path: Path, hash_embedder: Any,
                                                                      chunk_size: int) -> None:
    ds = load_beir(write_beir(tmp_path / "set"))
    with Index.create(tmp_path / "ix", hash_embedder, chunk_size=chunk_size, chunk_overlap=0) as index:
        index_corpus(ds, index)
        calibration = calibrate_hybrid(ds, Retriever(index), depth=20)
        assert sorted(calibration.ndcg) == sorted(ALPHAS)
        for alpha in (0.0, CONVEX_ALPHA, 0.8, 1.0):
            report = evaluate_index(ds, Retriever(index, alpha=alpha), ["dense", "bm25", "hybrid"], depth=20)
            assert calibration.ndcg[alpha] == pytest.approx(report.metrics["hybrid"]["ndcg@10"], abs=1e-12)
        assert calibration.dense == pytest.approx(report.metrics["dense"]["ndcg@10"], abs=1e-12)
        assert calibration.bm25 == pytest.approx(report.metrics["bm25"]["ndcg@10"], abs=1e-12)
        default = evaluate_index(ds, Retriever(index, alpha="auto"), ["hybrid"], depth=20)
        assert calibration.default == pytest.approx(default.metrics["hybrid"]["ndcg@10"], abs=1e-12)
    assert calibration.code_queries == 0 and calibration.default == calibration.ndcg[CONVEX_ALPHA]  # words
    assert calibration.alpha == choose_alpha(calibration.ndcg, calibration.default) and calibration.queries == 24
    settings = calibration.settings()
    assert settings["fusion"] == "convex" and settings["alpha"] == calibration.alpha
    assert settings["calibration"]["queries"] == 24 and settings["calibration"]["dataset"] == "set"


def test_the_default_stays_unless_another_weight_gains_enough() -> None:
    flat = {a: 0.5 for a in ALPHAS}
    assert choose_alpha(flat, 0.5) == "auto"
    assert choose_alpha({**flat, 0.8: 0.5 + MIN_GAIN / 2}, 0.5) == "auto"  # noise
    assert choose_alpha({**flat, 0.8: 0.5 + MIN_GAIN}, 0.5) == 0.8
    assert choose_alpha(flat, 0.5 - MIN_GAIN) == CONVEX_ALPHA  # every fixed weight beats the default
    # among equally good weights, the one nearest the weight the default gives most queries
    assert choose_alpha({**flat, 0.1: 0.6, 0.45: 0.6, 0.9: 0.6}, 0.5) == 0.45
    assert choose_alpha({**flat, 0.1: 0.6, 0.45: 0.6, 0.9: 0.6}, 0.5, near=CODE_ALPHA) == 0.9


def test_code_queries_are_scored_with_the_code_weight(tmp_path: Path, hash_embedder: Any) -> None:
    root = write_beir(tmp_path / "set")
    rows = [json.loads(line) for line in (root / "corpus.jsonl").read_text().splitlines()]
    (root / "corpus.jsonl").write_text("".join(  # each document becomes a line of code
        json.dumps({**r, "text": "x = f([" + "], [".join(r["text"].split()) + "])"}) + "\n" for r in rows))
    ds = load_beir(root)
    with Index.create(tmp_path / "ix", hash_embedder, chunk_size=0) as index:
        index_corpus(ds, index)
        calibration = calibrate_hybrid(ds, Retriever(index), depth=20)
        default = evaluate_index(ds, Retriever(index), ["hybrid"], depth=20)
    assert calibration.code_queries == 24 and calibration.default == calibration.ndcg[CODE_ALPHA]
    assert calibration.default == pytest.approx(default.metrics["hybrid"]["ndcg@10"], abs=1e-12)
    assert "queries whose best hits are code: 24 of 24" in calibration.summary()


def test_too_few_queries_are_refused(tmp_path: Path, hash_embedder: Any) -> None:
    ds = load_beir(write_beir(tmp_path / "set", n_queries=MIN_QUERIES - 1))
    with Index.create(tmp_path / "ix", hash_embedder, chunk_size=0) as index:
        index_corpus(ds, index)
        with pytest.raises(ValueError, match="19 labelled queries; calibrating hybrid search needs at least 20"):
            calibrate_hybrid(ds, Retriever(index))


def test_stored_settings_are_what_retrievers_over_the_index_use(tmp_path: Path, hash_embedder: Any) -> None:
    ds = load_beir(write_beir(tmp_path / "set"))
    settings = {"fusion": "convex", "alpha": 0.8, "calibration": {"dataset": "set", "queries": 24}}
    with Index.create(tmp_path / "ix", hash_embedder, chunk_size=0) as index:
        index_corpus(ds, index)
        assert index.hybrid_settings is None and Retriever(index).alpha == "auto"
        index.set_hybrid_settings({**settings, "alpha": "auto"})  # a calibration that kept the default
        assert Retriever(index).alpha == "auto" and Retriever(index).calibration == settings["calibration"]
        index.set_hybrid_settings(settings)
        assert index.hybrid_settings == settings
    with Retriever(tmp_path / "ix", embedder=hash_embedder) as retriever:  # opens the index read-only
        assert (retriever.fusion, retriever.alpha) == ("convex", 0.8)
        assert retriever.fusion_description.endswith("alpha 0.8 (calibrated on 24 queries of set)")
        calibrated = retriever.search_batch(list(ds.queries.values()), k=5, mode="hybrid")
        with pytest.raises(PermissionError, match="read-only"):
            retriever.index.set_hybrid_settings(None)
    assert json.loads((tmp_path / "ix" / "manifest.json").read_text())["hybrid"] == settings
    with Index.open(tmp_path / "ix") as index:
        explicit = Retriever(index, alpha=0.8, embedder=hash_embedder)
        assert explicit.calibration is None
        assert [[h.chunk_id for h in hits] for hits in calibrated] == [
            [h.chunk_id for h in hits] for hits in explicit.search_batch(list(ds.queries.values()), k=5,
                                                                          mode="hybrid")]
        assert Retriever(index, alpha=0.2, embedder=hash_embedder).alpha == 0.2  # an explicit weight wins
        assert Retriever(index, fusion="rrf", embedder=hash_embedder).fusion_description == "rrf, k 60, weights 1/1"
        assert Retriever(index, fusion="convex", embedder=hash_embedder).alpha == 0.8
        index.set_hybrid_settings(None)
        assert index.hybrid_settings is None and Retriever(index, embedder=hash_embedder).alpha == "auto"
        with pytest.raises(TypeError):
            index.set_hybrid_settings({"fusion": "convex", "alpha": object()})
        assert index.hybrid_settings is None  # a refused value changes nothing


def test_unusable_stored_settings_get_a_clear_error(tmp_path: Path, hash_embedder: Any) -> None:
    with Index.create(tmp_path / "ix", hash_embedder, chunk_size=0) as index:
        index.set_hybrid_settings({"fusion": "convex", "alpha": 1.7})
        with pytest.raises(ValueError, match=r"unusable hybrid settings .*alpha must be a number in \[0, 1\] or "
                                             r"'auto'.*qwen3-rag eval --calibrate"):
            Retriever(index)
        index.set_hybrid_settings({"alpha": 0.5})
        with pytest.raises(ValueError, match="unusable hybrid settings"):
            Retriever(index)
        assert Retriever(index, fusion="rrf", alpha=0.5).fusion == "rrf"  # explicit settings do not need them


def test_eval_calibrate_stores_the_weight_in_the_index(tmp_path: Path, tiny_qwen3_embedding_dir: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from qwen3_rag.cli import main

    data = write_beir(tmp_path / "set")
    base = ["eval", "--dataset", str(data), "--model", tiny_qwen3_embedding_dir, "--chunk-size", "0",
            "--no-progress"]
    assert main([*base, "--calibrate"]) == 2
    assert "--calibrate stores the chosen alpha in the index: give --index" in capsys.readouterr().err
    assert main([*base, "--calibrate", "--index", str(tmp_path / "ix"), "--fusion", "rrf"]) == 2
    assert "leave out --fusion rrf and --alpha" in capsys.readouterr().err
    assert main([*base, "--calibrate", "--index", str(tmp_path / "ix"), "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    stored = Index.read_manifest(tmp_path / "ix")["hybrid"]
    alpha = stored["alpha"]
    assert f"hybrid calibrated on 24 queries of set: alpha {alpha:g}" in out
    assert f"hybrid fusion: convex, BM25 confidence-weighted, alpha {alpha:g} (calibrated on 24 queries of set)" in out
    assert json.loads((tmp_path / "m.json").read_text())["hybrid"]["ndcg@10"] == pytest.approx(
        stored["calibration"]["chosen"], abs=1e-4)
    assert main(["info", str(tmp_path / "ix")]) == 0
    assert f"hybrid      convex, alpha {alpha}, calibrated on 24 queries of set" in capsys.readouterr().out
    with Index.open(tmp_path / "ix") as index:  # settings no retriever can use ...
        index.set_hybrid_settings({"fusion": "convex", "alpha": 2})
    assert main([*base, "--index", str(tmp_path / "ix"), "--modes", "dense"]) == 2
    assert "unusable hybrid settings" in capsys.readouterr().err
    assert main([*base, "--calibrate", "--index", str(tmp_path / "ix"), "--modes", "dense"]) == 0  # ... replaced
    assert Index.read_manifest(tmp_path / "ix")["hybrid"] == stored | {"calibration": {
        **stored["calibration"], "date": Index.read_manifest(tmp_path / "ix")["hybrid"]["calibration"]["date"]}}
    # --alpha auto: the default, whatever the index has stored
    assert main([*base, "--index", str(tmp_path / "ix"), "--modes", "hybrid", "--alpha", "auto"]) == 0
    assert f"hybrid fusion: convex, BM25 confidence-weighted, alpha {CONVEX_ALPHA:g} ({CODE_ALPHA:g} on code)\n" in (
        capsys.readouterr().out)
    assert main([*base, "--index", str(tmp_path / "ix"), "--modes", "hybrid", "--alpha", "1.5"]) == 2
    assert "--alpha must be between 0 and 1 or auto, got 1.5" in capsys.readouterr().err
