"""What the code-aware default weight costs a hybrid search: ``alpha="auto"`` (reads the texts of each list's ten
best chunks before fusing) against a fixed ``alpha=0.35``, on the same index and queries.

    python benchmarks/bench_hybrid.py --index /tmp/qwen3-rag-chunk-context/scifact-0-0-none \
        --queries ../shared/data/scifact/queries.jsonl
    # an index made by `qwen3-rag eval` or benchmarks/chunk_context.py (all-MiniLM-L6-v2)

The query vectors are cached first (every query searched once), so the timings are the first stage only: dense
and BM25 lists, fusion, chunk reads, merging. The two sides alternate, REPEATS rounds each; the best and the
median round are reported, with the CPU and the load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

REPEATS = 5
K = 10
CANDIDATES = 50


def main(argv: list[str]) -> None:
    from qwen3_rag import Embedder, Index, Retriever

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", type=Path, required=True, help="a BEIR queries.jsonl")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    queries = [json.loads(line)["text"] for line in args.queries.read_text(encoding="utf-8").splitlines()]
    embedder = Embedder(C.minilm_path(), device="cpu", dtype="float32", max_length=256)
    with Index.open(args.index, embedder, read_only=True) as index:
        sides = {"auto": Retriever(index, alpha="auto", query_cache_size=len(queries)),
                 "0.35": Retriever(index, alpha=0.35, query_cache_size=len(queries))}
        for retriever in sides.values():  # embeds the queries, loads BM25, warms the caches
            retriever.search_batch(queries, k=K, mode="hybrid", candidates=CANDIDATES)
        rounds: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(REPEATS):
            for name, retriever in sides.items():
                started = time.perf_counter()
                retriever.search_batch(queries, k=K, mode="hybrid", candidates=CANDIDATES)
                rounds[name].append((time.perf_counter() - started) / len(queries) * 1000)
        chunks = index.count().chunks
    rows = [{"side": name, "best ms/query": f"{min(r):.2f}", "median ms/query": f"{statistics.median(r):.2f}"}
            for name, r in rounds.items()]
    ratio = statistics.median(rounds["auto"]) / statistics.median(rounds["0.35"])
    print(f"{args.index}: {chunks} chunks, {len(queries)} queries, k {K}, candidates {CANDIDATES}; "
          f"load {os.getloadavg()[0]:.2f}")
    table = C.print_table(rows, list(rows[0]))
    print(f"auto / fixed, median: {ratio:.3f}")
    if args.out:
        C.write_results(args.out, index=str(args.index), chunks=chunks, queries=len(queries), rounds=rounds,
                        ratio_median=round(ratio, 4), table=table)


if __name__ == "__main__":
    main(sys.argv[1:])
