"""Tune hybrid fusion (RRF weights, convex alpha) on the tuning sets only, with all-MiniLM-L6-v2 and our BM25.

Settings are at the top. Dense runs use exact cosine search over embeddings cached in CACHE (numpy, no
pickle); BM25 is qwen3_rag.indexers.bm25.BM25Index with its defaults; fusion is qwen3_rag.pipelines.fusion.
Tuning sets only: SciFact, XQuAD en/zh/de/es, CoSQA (never MBPP, Cranfield, CISI or the other XQuAD
languages).

    python benchmarks/fusion_weights.py                    # writes benchmarks/results/fusion_weights.json
    python benchmarks/fusion_weights.py scifact xquad/zh   # some sets only
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _common as C  # noqa: E402

from qwen3_rag.indexers.bm25 import BM25Index  # noqa: E402
from qwen3_rag.pipelines.evaluation import evaluate_run, load_beir  # noqa: E402
from qwen3_rag.pipelines.fusion import convex_fusion, reciprocal_rank_fusion  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SETS = ["scifact", "xquad/en", "xquad/zh", "xquad/de", "xquad/es", "cosqa-coclr"]
MAX_LENGTH = 256
DEPTH = 100  # each list is cut to this before fusion (what Retriever uses for candidates=100)
WEIGHTS = [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (1.0, 0.5), (1.0, 0.75), (0.75, 1.0), (0.5, 1.0)]
RRF_KS = [60]
ALPHAS = [0.3, 0.4, 0.45, 0.5, 0.6]  # dense weight of the convex fusion
CACHE = Path("/tmp/qwen3-rag-bench-cache")
OUT = ROOT / "benchmarks" / "results" / "fusion_weights.json"


def dense_scores(name: str, ds, embedder) -> tuple[np.ndarray, list[str], list[str]]:
    doc_ids = list(ds.corpus)
    query_ids = list(ds.queries)
    CACHE.mkdir(parents=True, exist_ok=True)
    stem = CACHE / name.replace("/", "_")
    docs_file, queries_file = stem.with_suffix(".docs.npy"), stem.with_suffix(".queries.npy")
    if docs_file.exists():
        d = np.load(docs_file, allow_pickle=False)
    else:
        t = time.time()
        d = embedder.embed_documents([ds.document_text(i) for i in doc_ids])
        np.save(docs_file, d, allow_pickle=False)
        print(f"  embedded {len(doc_ids)} docs of {name} in {time.time() - t:.0f}s", flush=True)
    if queries_file.exists():
        q = np.load(queries_file, allow_pickle=False)
    else:
        q = embedder.embed_queries([ds.queries[i] for i in query_ids])
        np.save(queries_file, q, allow_pickle=False)
    return q @ d.T, doc_ids, query_ids


def main() -> None:
    from qwen3_rag import Embedder

    embedder = Embedder(C.minilm_path(), device="cpu", dtype="float32",
                        max_length=MAX_LENGTH)
    results: dict[str, dict[str, float]] = {}
    recalls: dict[str, dict[str, float]] = {}
    for name in sys.argv[1:] or SETS:
        ds = load_beir(DATA / name)
        sims, doc_ids, query_ids = dense_scores(name, ds, embedder)
        dense_lists = []
        for row in sims:
            top = np.argsort(-row, kind="stable")[:DEPTH]
            dense_lists.append([(doc_ids[i], float(row[i])) for i in top])
        bm25 = BM25Index()
        bm25.add(list(range(len(doc_ids))), [ds.document_text(i) for i in doc_ids])
        bm25_lists = [[(doc_ids[c], s) for c, s in r]
                      for r in bm25.search_batch([ds.queries[q] for q in query_ids], k=DEPTH)]
        row: dict[str, float] = {}
        recall: dict[str, float] = {}
        for rrf_k in RRF_KS:
            for w in WEIGHTS:
                run = {}
                for qid, dl, bl in zip(query_ids, dense_lists, bm25_lists, strict=False):
                    if w[1] == 0:
                        run[qid] = dict(dl)
                    elif w[0] == 0:
                        run[qid] = dict(bl)
                    else:
                        fused = reciprocal_rank_fusion([[d for d, _ in dl], [d for d, _ in bl]], k=rrf_k,
                                                       weights=w)
                        run[qid] = {d: s for d, s in fused[:DEPTH]}
                m = evaluate_run(ds.qrels, run, [10, 100])
                label = ("dense" if w[1] == 0 else "bm25" if w[0] == 0
                         else f"rrf k={rrf_k} w={w[0]:g}/{w[1]:g}")
                row[label] = round(m["ndcg@10"], 4)
                recall[label] = round(m["recall@100"], 4)
        for alpha in ALPHAS:
            run = {qid: dict(convex_fusion(dl, bl, alpha, keyword_truncated=len(bl) >= DEPTH)[:DEPTH])
                   for qid, dl, bl in zip(query_ids, dense_lists, bm25_lists, strict=True)}
            m = evaluate_run(ds.qrels, run, [10, 100])
            row[f"convex a={alpha:g}"] = round(m["ndcg@10"], 4)
            recall[f"convex a={alpha:g}"] = round(m["recall@100"], 4)
        results[name] = row
        recalls[name] = recall
        print(name, row, flush=True)
    cols = list(next(iter(results.values())))
    print("\n| nDCG@10 / recall@100 | " + " | ".join(results) + " |")
    print("|---" * (len(results) + 1) + "|")
    for col in cols:
        print(f"| {col} | " + " | ".join(f"{results[name][col]:.4f} / {recalls[name][col]:.4f}"
                                         for name in results) + " |")
    OUT.write_text(json.dumps({"machine": platform.platform(), "model": "all-MiniLM-L6-v2",
                               "max_length": MAX_LENGTH,
                               "depth": DEPTH, "ndcg@10": results,
                               "recall@100": recalls}, indent=2))


if __name__ == "__main__":
    main()
