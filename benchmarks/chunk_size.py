"""Which default chunk size? nDCG@10 of dense retrieval with chunked documents (max over a document's chunks).

Runs all-MiniLM-L6-v2 (the only embedding model that installs offline here) on SciFact and XQuAD-en from
../shared/data, chunking every document with qwen3_rag's Chunker at several sizes, scoring each document by
its best chunk, and printing one table side by side. ``chunk_size=0`` is "no chunking" (the model truncates
the text at its own limit: 256 tokens for MiniLM).

    python benchmarks/chunk_size.py                # all queries; SciFact = judged docs + 300 distractors
    python benchmarks/chunk_size.py --full-corpus  # the whole SciFact corpus (slow on a CPU)
    python benchmarks/chunk_size.py --quick        # two settings only
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

# -- settings
# -------------------------------------------------------------------------------------------------
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DATASETS = {"scifact": DATA / "scifact", "xquad-en": DATA / "xquad" / "en"}
# (chunk_size, chunk_overlap); 250 is about MiniLM's 256-token limit
GRID = [(0, 0), (64, 16), (96, 24), (128, 0), (128, 32), (192, 32), (250, 32)]
QUICK_GRID = [(0, 0), (128, 32)]
# SciFact's 5,183 abstracts take ~20 min per setting on 2 shared CPU cores, so by default the corpus is every
# document judged for the queries plus this many random distractors (seeded); None = the full corpus.
SCIFACT_DISTRACTORS: int | None = 300
SEED = 0
K = 10
RESULTS = Path(__file__).resolve().parent / "results" / "chunk_size.json"


def load_beir(folder: Path) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    corpus = {}
    with open(folder / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            corpus[str(rec["_id"])] = (f"{rec.get('title') or ''} {rec['text']}").strip()
    queries = {}
    with open(folder / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            queries[str(rec["_id"])] = rec["text"]
    qrels: dict[str, dict[str, int]] = {}
    with open(folder / "qrels" / "test.tsv", encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            q, d, s = line.rstrip("\n").split("\t")
            qrels.setdefault(q, {})[d] = int(s)
    queries = {q: t for q, t in queries.items() if q in qrels}
    return corpus, queries, qrels


def ndcg_at_k(ranked: list[str], rels: dict[str, int], k: int = K) -> float:
    dcg = sum(rels.get(d, 0) / np.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(rels.values(), reverse=True)[:k]
    idcg = sum(r / np.log2(i + 2) for i, r in enumerate(ideal))
    return float(dcg / idcg) if idcg > 0 else 0.0


def evaluate(embedder, corpus, queries, qrels, chunk_size: int, overlap: int) -> dict[str, float]:
    from qwen3_rag.indexers.chunking import Chunker
    from qwen3_rag.types import Document

    chunker = Chunker.for_embedder(embedder, chunk_size, overlap)
    doc_ids, owners, texts = list(corpus), [], []
    for i, doc_id in enumerate(doc_ids):
        for chunk in chunker.chunk(Document(id=doc_id, text=corpus[doc_id])):
            owners.append(i)
            texts.append(chunk.text)
    t0 = time.perf_counter()
    chunk_vecs = embedder.embed_documents(texts)
    seconds = time.perf_counter() - t0
    qids = list(queries)
    qvecs = embedder.embed_queries([queries[q] for q in qids])
    owners_arr = np.asarray(owners)
    scores = []
    for row, qid in enumerate(qids):
        sims = chunk_vecs @ qvecs[row]
        doc_best = np.full(len(doc_ids), -np.inf, dtype=np.float32)
        np.maximum.at(doc_best, owners_arr, sims)
        top = np.argsort(-doc_best)[:K]
        scores.append(ndcg_at_k([doc_ids[j] for j in top], qrels[qid]))
    return {
        "ndcg@10": float(np.mean(scores)),
        "chunks": len(texts),
        "chunks_per_doc": len(texts) / len(doc_ids),
        "embed_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="two settings only")
    parser.add_argument("--full-corpus", action="store_true", help="the whole SciFact corpus")
    parser.add_argument("--model", default=None, help="embedding model directory (default: MiniLM's package)")
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding scifact/ and xquad/en/")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where to write the JSON results")
    parser.add_argument("--grid", default=None, help="settings to compare, e.g. '0:0,128:32,256:32'")
    args = parser.parse_args()
    from qwen3_rag import Embedder

    model = args.model if args.model is not None else C.minilm_path()
    embedder = Embedder(model, device=args.device, dtype="float32")
    grid = QUICK_GRID if args.quick else GRID
    if args.grid:
        grid = [(int(a), int(b)) for a, b in (item.split(":") for item in args.grid.split(","))]
    rows = []
    for name, folder in DATASETS.items():
        corpus, queries, qrels = load_beir(args.data / folder.relative_to(DATA))
        if name == "scifact" and SCIFACT_DISTRACTORS is not None and not args.full_corpus:
            judged = {d for rels in qrels.values() for d in rels if d in corpus}
            rest = sorted(set(corpus) - judged)
            rng = np.random.default_rng(SEED)
            keep = judged | set(rng.choice(rest, size=min(SCIFACT_DISTRACTORS, len(rest)), replace=False))
            corpus = {d: t for d, t in corpus.items() if d in keep}
        for size, overlap in grid:
            res = evaluate(embedder, corpus, queries, qrels, size, overlap)
            res.update(
                dataset=name,
                chunk_size=size,
                chunk_overlap=overlap,
                queries=len(queries),
                documents=len(corpus),
            )
            rows.append(res)
            print(
                f"{name:9s} size={size:4d} overlap={overlap:3d} nDCG@10={res['ndcg@10']:.4f} "
                f"docs={len(corpus)} chunks={res['chunks']} ({res['chunks_per_doc']:.2f}/doc) "
                f"embed {res['embed_seconds']:.0f}s",
                flush=True,
            )
    print()
    print("| chunk_size / overlap | " + " | ".join(DATASETS) + " |")
    print("|---|" + "---|" * len(DATASETS))
    for size, overlap in grid:
        cells = [
            f"{r['ndcg@10']:.4f} ({r['chunks_per_doc']:.2f} chunks/doc)"
            for r in rows
            if r["chunk_size"] == size and r["chunk_overlap"] == overlap
        ]
        print(f"| {size or 'none'} / {overlap} | " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "model": "all-MiniLM-L6-v2",
                "machine": platform.platform(),
                "processor": platform.processor(),
                "device": str(embedder.device),
                "quick": args.quick,
                "scifact_distractors": None if args.full_corpus else SCIFACT_DISTRACTORS,
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
