"""`qwen3-rag query` and `qwen3-rag eval` through a subprocess, including their error messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qwen3_rag import Document, Index, ingest_documents

ROOT = Path(__file__).resolve().parents[2]

DOCS = {
    "d1": ("Cats", "Cats purr when they are happy.\nThey also sleep a lot during the day."),
    "d2": ("Dogs", "Dogs bark at strangers and love long walks in the park."),
    "d3": ("Markets", "Stock markets fell after the central bank raised interest rates."),
    "d4": ("Qubits", "Quantum computers use qubits that can be in superposition."),
    "d5": ("Gravity", "Gravity attracts masses towards each other, like the earth and the moon."),
}
QUERIES = {"q1": "why do cats purr", "q2": "what do quantum computers use",
           "q3": "stock market interest rates",
           "q4": "unjudged query"}
QRELS = [("q1", "d1", 2), ("q2", "d4", 1), ("q3", "d3", 1), ("q3", "d2", 0)]


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "qwen3_rag", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def cli_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The same entry point in this process: for the cheaper checks (a subprocess start costs seconds)."""
    from qwen3_rag.cli import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": t, "text": x}) + "\n"
                                               for k, (t, x) in DOCS.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n"
                                                for k, v in QUERIES.items()))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                             + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in QRELS))
    return root


@pytest.fixture(scope="module")
def minilm_index(tmp_path_factory: pytest.TempPathFactory, minilm_embedder: Any) -> Path:
    path = tmp_path_factory.mktemp("cli") / "index"
    with Index.create(path, minilm_embedder, chunk_size=0) as index:
        ingest_documents([Document(id=k, text=f"{t}\n{x}", source=f"notes/{k}.txt",
                                   metadata={"topic": "animals" if k in ("d1", "d2") else "science", "n": i})
                          for i, (k, (t, x)) in enumerate(DOCS.items())], index)
    return path


def test_query_prints_ranked_passages(minilm_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli_in_process(capsys, "query", str(minilm_index), "why do cats purr", "-k", "2")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("[1] ") and "notes/d1.txt, lines 1-3" in lines[0] and "dense" in lines[0]
    assert "Cats purr" in lines[1]
    assert sum(1 for line in lines if line.startswith("[")) == 2


def test_a_reader_that_stops_early_gets_no_traceback(minilm_index: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "qwen3_rag", "info", str(minilm_index), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `| head -c 0`: gone before the command writes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and "Traceback" not in err, err


def test_query_json_hybrid_rerank_filter(minilm_index: Path, tiny_qwen3_reranker_dir: str) -> None:
    out = cli("query", str(minilm_index), "interest rates", "-k", "3", "--hybrid", "--rerank",
              tiny_qwen3_reranker_dir, "--filter", "topic=science", "--json")
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)
    assert 1 <= len(hits) <= 3
    assert all(h["metadata"]["topic"] == "science" for h in hits)
    assert set(hits[0]["scores"]) >= {"dense", "fused", "rerank"}
    assert hits[0]["score"] == hits[0]["scores"]["rerank"]
    assert {"chunk_id", "doc_id", "text", "source", "start", "end", "page", "start_line", "end_line"} <= set(hits[0])


def test_query_bm25_json_filter_in_process(minilm_index: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli_in_process(capsys, "query", str(minilm_index), "cats", "--bm25", "--json")
    assert code == 0, err
    assert [h["doc_id"] for h in json.loads(out)] == ["d1"]
    code, out, err = cli_in_process(capsys, "query", str(minilm_index), "cats", "--bm25", "--json",
                                    "--filter", '{"n": {"$gte": 1}}')
    assert code == 0, err
    assert json.loads(out) == []  # "cats" is only in d1 (n = 0)


def test_query_errors(minilm_index: Path, tmp_path: Path) -> None:
    out = cli("query", str(tmp_path / "nope"), "question")
    assert out.returncode == 2
    assert "qwen3-rag: error: no index at" in out.stderr and "qwen3-rag index SOURCES... --index" in out.stderr
    assert "Traceback" not in out.stderr
    out = cli("query", str(minilm_index), "question", "--filter", "topic")
    assert out.returncode == 2 and "bad filter 'topic': expected KEY=VALUE" in out.stderr
    assert "Traceback" not in out.stderr


def test_query_errors_in_process(minilm_index: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = cli_in_process(capsys, "query", str(tmp_path / "empty"), "question")
    assert code == 2 and "no index at" in err
    code, _, err = cli_in_process(capsys, "query", str(minilm_index), "question",
                                  "--filter", '{"n": {"$near": 3}}')
    assert code == 2 and "bad filter" in err and "$near" in err
    code, _, err = cli_in_process(capsys, "query", str(minilm_index), "question", "--filter", "{not json")
    assert code == 2 and "not valid JSON" in err
    code, _, err = cli_in_process(capsys, "query", str(minilm_index), "question", "-k", "0")
    assert code == 2 and "-k must be at least 1" in err


def test_eval_end_to_end(tmp_path: Path, minilm_path: str) -> None:
    data = write_beir(tmp_path / "tiny")
    result = tmp_path / "out" / "metrics.json"
    out = cli("eval", "--dataset", str(data), "--model", minilm_path, "--chunk-size", "0",
              "--max-length", "128",
              "--modes", "dense,bm25,hybrid", "--index", str(tmp_path / "ix"), "--json", str(result),
              "--no-progress")
    assert out.returncode == 0, out.stderr
    metrics = json.loads(result.read_text())
    assert list(metrics) == ["dense", "bm25", "hybrid"]
    for values in metrics.values():
        assert set(values) == {"ndcg@10", "recall@100", "mrr@10", "map@100", "ndcg@10_change"}
        assert values["recall@100"] == 1.0 and values["mrr@10"] == 1.0
    assert "ndcg@10" in out.stdout and "hybrid" in out.stdout and "vs best" in out.stdout
    assert "hybrid fusion: convex, BM25 confidence-weighted, alpha" in out.stdout
    # the index keeps its BM25 file beside it, published when the run closed it
    assert len(list((tmp_path / "ix").glob("bm25.*.npz"))) == 1


def test_eval_reuses_index(tmp_path: Path, minilm_path: str, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_beir(tmp_path / "tiny")
    args = ["eval", "--dataset", str(data), "--model", minilm_path, "--chunk-size", "0",
            "--max-length", "128",
            "--index", str(tmp_path / "ix"), "--no-progress"]
    code, first, err = cli_in_process(capsys, *args, "--modes", "bm25,hybrid",
                                      "--json", str(tmp_path / "a.json"))
    assert code == 0, err
    code, second, err = cli_in_process(capsys, "eval", "--dataset", str(data),
                                       "--index", str(tmp_path / "ix"),
                                       "--max-length", "128", "--modes", "bm25,hybrid", "--no-progress",
                                       "--json", str(tmp_path / "b.json"))
    assert code == 0, err
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads((tmp_path / "b.json").read_text())


def test_plot_legend_names_the_fusion() -> None:
    from qwen3_rag.cli.eval import mode_label, recall_figure

    fusion = "convex, BM25 confidence-weighted, alpha 0.35"
    curves = {"dense": [0.2, 0.5, 0.9], "bm25": [0.1, 0.4, 0.8], "hybrid": [0.3, 0.6, 1.0],
              "rerank": [0.4, 0.7, 1.0]}
    fig = recall_figure(curves, "tiny: recall@k", fusion)
    try:
        legend = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
        assert legend == ["dense", "bm25", f"hybrid ({fusion})", f"rerank (of hybrid: {fusion})"]
        assert [list(line.get_ydata()) for line in fig.axes[0].get_lines()] == list(curves.values())
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    assert mode_label("hybrid") == "hybrid" and mode_label("dense", fusion) == "dense"


def test_eval_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_beir(tmp_path / "tiny")
    (data / "qrels" / "test.tsv").unlink()
    out = cli("eval", "--dataset", str(data))
    assert out.returncode == 2
    assert "test.tsv" in out.stderr and "is missing" in out.stderr and "Traceback" not in out.stderr
    code, _, err = cli_in_process(capsys, "eval", "--dataset", str(tmp_path / "nowhere"))
    assert code == 2 and "does not exist" in err
    code, _, err = cli_in_process(capsys, "eval", "--dataset", str(data), "--modes", "dense,sparse")
    assert code == 2 and "unknown mode(s) sparse" in err
    code, _, err = cli_in_process(capsys, "eval", "--dataset", str(data), "--weights", "1")
    assert code == 2 and "--weights" in err
