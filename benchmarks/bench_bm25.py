"""BM25 indexing speed: SciFact documents added to one ``BM25Index`` in batches of 512, as ingestion's commits add
them (the analyzer: NFKC, lower case, words, stopwords, stemming, vocabulary).

    python benchmarks/bench_bm25.py --repeat 4 --out benchmarks/results/bm25-add.json

``--repeat`` copies the corpus (a later copy finds its words already seen, as a large corpus does); the best of
``--passes`` is reported.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def main() -> None:
    from qwen3_rag.indexers.bm25 import BM25Index

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=4, help="copies of the SciFact corpus")
    ap.add_argument("--passes", type=int, default=3, help="passes; the best is reported")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    texts = C.scifact_texts()[0] * args.repeat
    best = float("inf")
    for _ in range(args.passes):
        index = BM25Index()
        t = time.perf_counter()
        for start in range(0, len(texts), 512):
            index.add(list(range(start, min(start + 512, len(texts)))), texts[start:start + 512])
        best = min(best, time.perf_counter() - t)
    words = sum(len(index.tokenize(t)) for t in texts[: len(texts) // args.repeat]) * args.repeat
    row = {"texts": len(texts), "terms": words, "seconds": best, "terms/s": words / best}
    table = C.print_table([row], list(row))
    if args.out:
        C.write_results(args.out, rows=[row], table=table)


if __name__ == "__main__":
    main()
