"""Real-data check of the Embedder: all-MiniLM-L6-v2 on SciFact must reproduce MTEB's nDCG@10 = 0.6451.

Whole documents (title + " " + text), max_length 256, exact cosine search over all 5,183 documents, the 300 test
queries; no index, no chunking: this checks the model path alone.

    python benchmarks/scifact_minilm.py [--data ../shared/data/scifact] [--out benchmarks/results/scifact-minilm.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

PUBLISHED = {"ndcg@10": 0.6451, "recall@100": 0.9250}


def main() -> None:
    from qwen3_rag import Embedder
    from qwen3_rag.pipelines.evaluation import evaluate_run, load_beir

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(C.data_dir("scifact")))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    data = load_beir(args.data)
    doc_ids = list(data.corpus)
    query_ids = list(data.queries)
    emb = Embedder(C.minilm_path(), device="cpu", dtype="float32", max_length=256,
                   show_progress=True)
    t0 = time.perf_counter()
    docs = emb.embed_documents([data.document_text(d) for d in doc_ids])
    t_docs = time.perf_counter() - t0
    queries = emb.embed_queries([data.queries[q] for q in query_ids])
    scores = queries @ docs.T
    top = np.argsort(-scores, axis=1)[:, :100]
    run = {q: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(query_ids)}
    metrics = evaluate_run(data.qrels, run, k_values=(10, 100))
    print(json.dumps({k: round(v, 4) for k, v in metrics.items() if k in ("ndcg@10", "recall@100", "mrr@10",
                                                                           "map@100")}))
    print(f"published nDCG@10 {PUBLISHED['ndcg@10']}, recall@100 {PUBLISHED['recall@100']}")
    if args.out:
        C.write_results(args.out, documents=len(doc_ids), queries=len(query_ids), embed_seconds=t_docs,
                        metrics=metrics, published=PUBLISHED)


if __name__ == "__main__":
    main()
