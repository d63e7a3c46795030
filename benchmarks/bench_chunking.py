"""Chunking alone: ``Chunker.chunk_batch`` over whole corpora, as ingestion calls it (groups of 64 documents,
token ids for the model), and where its time goes.

    python benchmarks/bench_chunking.py --datasets scifact,cosqa-coclr --out benchmarks/results/chunking.json

Each corpus (title + "\\n\\n" + text per document) is chunked with the default settings (128 / 32) and the real
Qwen3 tokenizer; the best of ``--repeat`` passes is reported. ``--split`` also times the tokenizer calls (the
Rust side) apart from the rest (cutting in Python), by wrapping them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def main() -> None:
    from qwen3_rag.indexers import chunking
    from qwen3_rag.indexers.chunking import Chunker
    from qwen3_rag.types import Document

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="scifact,cosqa-coclr", help="comma-separated BEIR folders in data/")
    ap.add_argument("--repeat", type=int, default=3, help="passes per corpus; the best is reported")
    ap.add_argument("--split", action="store_true", help="also time the tokenizer calls apart from the rest")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    spent = {"tokenizer": 0.0}
    if args.split:
        for name in ("encode", "ids"):
            real = getattr(chunking._ContentTokenizer, name)

            def counted(self: Any, texts: list[str], real: Any = real) -> Any:
                t = time.perf_counter()
                out = real(self, texts)
                spent["tokenizer"] += time.perf_counter() - t
                return out

            setattr(chunking._ContentTokenizer, name, counted)

    group = getattr(chunking, "GROUP_DOCUMENTS", 64)  # (64 before it had a name)
    tokenizer = C.real_tokenizer(True)
    rows = []
    for name in args.datasets.split(","):
        with open(C.data_dir(name) / "corpus.jsonl", encoding="utf-8") as f:
            docs = [Document(id=r["_id"], text=((r.get("title") or "") + "\n\n" + r["text"]).strip())
                    for r in map(json.loads, f)]
        chunker = Chunker(tokenizer=tokenizer)
        best, best_tokenizer, n_chunks = float("inf"), 0.0, 0
        for _ in range(args.repeat):
            spent["tokenizer"] = 0.0
            t = time.perf_counter()
            n_chunks = sum(len(c) for i in range(0, len(docs), group)
                           for c in chunker.chunk_batch(docs[i:i + group], token_ids=True).chunks)
            wall = time.perf_counter() - t
            if wall < best:
                best, best_tokenizer = wall, spent["tokenizer"]
        row: dict[str, Any] = {"dataset": name, "documents": len(docs), "chunks": n_chunks, "seconds": best}
        if args.split:
            row["tokenizer seconds"] = best_tokenizer
            row["other seconds"] = best - best_tokenizer
        rows.append(row)
    table = C.print_table(rows, list(rows[0]))
    if args.out:
        C.write_results(args.out, rows=rows, table=table)


if __name__ == "__main__":
    main()
