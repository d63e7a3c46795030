"""Milvus Lite against the local FAISS + SQLite index, side by side: ingest throughput and query latency / QPS at
10k and 100k chunks, through the storage contract both implement (the write loop with vectors given, then
``search_vectors`` / ``keyword_search``). Plus the memory per million vectors of Milvus's index types from
Milvus's own sizing rules, as the basis for a scaling plan.

Store-only figures: random unit vectors (dimension :data:`DIM`), one chunk per document, short texts. The two
backends alternate (local first in odd rounds, Milvus first in even ones) and every figure carries the load
average when it was taken: the machine is shared.

    python benchmarks/bench_milvus.py --out benchmarks/results/milvus.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

# ---- settings ---------------------------------------------------------------------------------------------------
DIM = 384             # all-MiniLM-L6-v2's width; the sizing table also gives 1024 (Qwen3-Embedding-0.6B)
SIZES = (10_000, 100_000)
ROUNDS = 2            # each backend measured this many times per size, alternating which goes first
N_QUERIES = 200       # single queries timed one after the other (latency); the same as one batch (QPS)
N_FILTERED = 20       # filtered queries timed (a filter on a JSON field is a scan on Milvus Lite: seconds at 100k)
K = 10
COMMIT_EVERY = 512    # the write loop's default
SEED = 0
WORDS = 2_000         # vocabulary of the synthetic chunk texts (BM25 needs shared terms)
# Milvus's sizing rules (see sizing() for the sources): defaults of each index type
HNSW_M = 30           # Milvus's default M: up to M outgoing and M incoming links per node
IVF_NLIST = 4_096
PQ_BYTES_PER_SUBVECTOR = 1    # nbits = 8
DISKANN_PQ_RATIO = 0.125      # DiskIndex.PQCodeBudgetGBRatio: PQ codes kept in memory, as a share of the raw data
DISKANN_CACHE_RATIO = 0.10    # DiskIndex.SearchCacheBudgetGBRatio: graph nodes cached in memory
DISKANN_MAX_DEGREE = 56       # DiskIndex.MaxDegree: links per node of the Vamana graph (on disk)
# ------------------------------------------------------------------------------------------------------------------


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def corpus(n: int, rng: np.random.Generator) -> tuple[list[Any], np.ndarray]:
    from qwen3_rag import Document

    vectors = rng.standard_normal((n, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    words = rng.integers(0, WORDS, (n, 12))
    docs = [Document(id=f"d{i}", text=" ".join(f"w{w}" for w in row), metadata={"group": i % 10})
            for i, row in enumerate(words)]
    return docs, vectors


def ingest(location: str, docs: list[Any], vectors: np.ndarray) -> float:
    """Seconds to create the index, write every chunk through the write loop and close it."""
    from qwen3_rag import DocumentWriter, Index

    t0 = time.perf_counter()
    with Index.create(location, dim=DIM, chunk_size=0, chunk_overlap=0) as index:
        with DocumentWriter(index, chunker="whole", commit_every=COMMIT_EVERY) as writer:
            for doc, vector in zip(docs, vectors, strict=True):
                writer.add(doc, vector)
    return time.perf_counter() - t0


def query(location: str, queries: np.ndarray, texts: list[str]) -> dict[str, float]:
    """Latencies of single dense, filtered dense and BM25 queries, and the QPS of one batch."""
    from qwen3_rag import Index

    out: dict[str, float] = {}
    with Index.open(location, read_only=True) as index:
        index.search_vectors(queries[:1], K)  # first use: loading, building or flushing is not a query
        index.keyword_search(texts[:1], K)
        for name, n, run in (
                ("dense", len(queries), lambda i: index.search_vectors(queries[i:i + 1], K)),
                ("filtered", N_FILTERED, lambda i: index.search_vectors(queries[i:i + 1], K, filter={"group": 3})),
                ("bm25", len(queries), lambda i: index.keyword_search(texts[i:i + 1], K))):
            times = []
            for i in range(n):
                t0 = time.perf_counter()
                run(i)
                times.append(time.perf_counter() - t0)
            out[f"{name} p50 ms"] = 1000 * statistics.median(times)
            out[f"{name} p95 ms"] = 1000 * float(np.percentile(times, 95))
            out[f"{name} QPS (sequential)"] = len(times) / sum(times)
        t0 = time.perf_counter()
        ids, _ = index.search_vectors(queries, K)
        out["dense QPS (one batch)"] = len(queries) / (time.perf_counter() - t0)
        assert (ids >= 0).all()
    return out


def sizing(dim: int) -> list[dict[str, Any]]:
    """Memory per million vectors of each Milvus index type, from Milvus's sizing rules:

    - FLAT / IVF_FLAT: "IVF_FLAT does not perform any compression, so the index files it produces are roughly the
      same size as the original, raw non-indexed vector data" and are loaded whole (milvus-docs,
      site/en/reference/index.md, "IVF_SQ8"); plus ``nlist`` centroids and an 8-byte id per vector.
    - HNSW: the raw vectors plus the graph: ``M`` "maximum number of connections (or edges) each node can have in
      the graph, including both outgoing and incoming edges", default 30 (milvus-docs,
      site/en/userGuide/manage-indexes/floating-vector/hnsw.md): 2M links of 4 bytes per node.
    - IVF_PQ: ``m`` sub-quantizers of ``nbits`` = 8 bits (one byte per sub-vector) per vector (milvus-docs,
      site/en/reference/index.md, "IVF_PQ"), plus ids, centroids and the codebooks; m = dim / 8 here.
    - DiskANN: in memory only the PQ codes, ``PQCodeBudgetGBRatio`` = 0.125 of the raw data, and the search cache,
      ``SearchCacheBudgetGBRatio`` = 0.10; on disk the raw vectors and the Vamana graph of ``MaxDegree`` = 56
      links (milvus-docs, site/en/reference/disk_index.md).
    """
    n = 1_000_000
    raw = n * dim * 4
    pq_m = dim // 8
    rows = [
        ("FLAT", raw + n * 8, 0, "raw vectors + ids"),
        ("IVF_FLAT", raw + n * 8 + IVF_NLIST * dim * 4, 0, f"raw + ids + {IVF_NLIST} centroids"),
        ("HNSW", raw + n * 2 * HNSW_M * 4, 0, f"raw + 2M links x 4 B, M = {HNSW_M}"),
        ("IVF_PQ", n * (pq_m * PQ_BYTES_PER_SUBVECTOR + 8) + IVF_NLIST * dim * 4 + 256 * dim * 4, 0,
         f"m = {pq_m} one-byte codes + ids + centroids + codebooks"),
        ("DISKANN", (DISKANN_PQ_RATIO + DISKANN_CACHE_RATIO) * raw, raw + n * DISKANN_MAX_DEGREE * 4,
         f"PQ codes {DISKANN_PQ_RATIO} + cache {DISKANN_CACHE_RATIO} of raw; disk: raw + {DISKANN_MAX_DEGREE} links"),
    ]
    return [{"dim": dim, "index": name, "memory GiB / 1M": mem / 2**30, "disk GiB / 1M": disk / 2**30 or None,
             "rule": rule} for name, mem, disk, rule in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--rounds", type=int, default=ROUNDS)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    machine = C.machine()
    print(f"{machine['cpu']}, {machine['cpu_count']} cores; load average at start {load()}")
    rng = np.random.default_rng(SEED)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-milvus-") as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            docs, vectors = corpus(n, rng)
            queries = rng.standard_normal((N_QUERIES, DIM), dtype=np.float32)
            queries /= np.linalg.norm(queries, axis=1, keepdims=True)
            texts = [docs[int(i)].text.split()[0] + " " + docs[int(i) + 1].text.split()[1]
                     for i in rng.integers(0, n - 1, N_QUERIES)]
            for r in range(args.rounds):
                for side in (("local", "milvus-lite") if r % 2 == 0 else ("milvus-lite", "local")):
                    location = (str(Path(tmp) / f"local-{n}-{r}") if side == "local"
                                else f"milvus-lite://{tmp}/m-{n}-{r}.db/bench")
                    before = load()
                    seconds = ingest(location, docs, vectors)
                    row = {"chunks": n, "round": r, "backend": side, "ingest s": seconds,
                           "ingest chunks/s": n / seconds, "load before": before, "load after ingest": load()}
                    row.update(query(location, queries, texts))
                    row["load after queries"] = load()
                    rows.append(row)
                    print(f"{side:12s} {n:>7,} chunks, round {r}: ingest {n / seconds:,.0f} chunks/s, dense p50 "
                          f"{row['dense p50 ms']:.1f} ms (load {row['load after queries']})", flush=True)
    columns = ["chunks", "round", "backend", "ingest chunks/s", "dense p50 ms", "dense p95 ms",
               "dense QPS (sequential)", "dense QPS (one batch)", "filtered p50 ms", "bm25 p50 ms",
               "load before", "load after queries"]
    C.print_table(rows, columns)
    memory = sizing(384) + sizing(1024)
    C.print_table(memory, ["dim", "index", "memory GiB / 1M", "disk GiB / 1M", "rule"])
    if args.out:
        C.write_results(args.out, machine=machine, settings={"dim": DIM, "queries": N_QUERIES, "filtered": N_FILTERED,
                                                             "k": K, "commit_every": COMMIT_EVERY},
                        runs=rows, memory_per_million=memory)


if __name__ == "__main__":
    main()
