"""BM25 indexing speed: documents added to one ``BM25Index`` in batches of 512, as ingestion's commits add them
(the analyzer: NFKC, lower case, words, identifier parts, stopwords, stemming, vocabulary), for each way of
tokenising identifiers side by side on prose (SciFact) and code (CoSQA's Python functions).

    python benchmarks/bench_bm25.py --repeat 4 --out benchmarks/results/bm25-identifiers-add.json

``--repeat`` copies each corpus (a later copy finds its words already seen, as a large corpus does); each pass
runs every setting once, in turn, and the best of ``--passes`` is reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def _corpus(name: str) -> list[str]:
    if name == "scifact":
        return C.scifact_texts()[0]
    with open(C.data_dir(name) / "corpus.jsonl", encoding="utf-8") as f:
        return [(row.get("title", "") + " " + row.get("text", "")).strip() for row in map(json.loads, f)]


def _add_all(index: object, texts: list[str]) -> float:
    t = time.perf_counter()
    for start in range(0, len(texts), 512):
        index.add(list(range(start, min(start + 512, len(texts)))), texts[start:start + 512])  # type: ignore[attr-defined]
    return time.perf_counter() - t


def main() -> None:
    from qwen3_rag.indexers.bm25 import BM25Config, BM25Index

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=4, help="copies of each corpus")
    ap.add_argument("--passes", type=int, default=3, help="passes; the best is reported")
    ap.add_argument("--corpora", default="scifact,cosqa-coclr")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    settings = ("split", "none")
    rows = []
    for name in args.corpora.split(","):
        texts = _corpus(name) * args.repeat
        best = dict.fromkeys(settings, float("inf"))
        for _ in range(args.passes):
            for identifiers in settings:
                seconds = _add_all(BM25Index(BM25Config(identifiers=identifiers)), texts)
                best[identifiers] = min(best[identifiers], seconds)
        for identifiers in settings:
            tokenize = BM25Index(BM25Config(identifiers=identifiers)).tokenize
            terms = sum(len(tokenize(t)) for t in texts[: len(texts) // args.repeat]) * args.repeat
            rows.append({"corpus": name, "identifiers": identifiers, "texts": len(texts), "terms": terms,
                         "seconds": round(best[identifiers], 3), "terms/s": round(terms / best[identifiers]),
                         "time x none": round(best[identifiers] / best["none"], 3)})
    table = C.print_table(rows, list(rows[0]))
    if args.out:
        C.write_results(args.out, rows=rows, table=table)


if __name__ == "__main__":
    main()
