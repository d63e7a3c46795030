"""Vector search: queries/s, recall@10 against exact search, memory and build time for each index type, and the
overhead of qwen3-rag's index over raw FAISS on the same vectors.

Vectors are synthetic unit vectors of dimension 1024 with cluster structure (random centres plus noise), queries
are perturbed corpus vectors, so approximate indexes face realistic neighbourhoods rather than the uniform
sphere, where every point is equally far from every other.

    python benchmarks/bench_search.py --sizes 100000 --out benchmarks/results/search-100k.json
    python benchmarks/bench_search.py --sizes 1000000 --specs Flat,IVF4096,Flat,HNSW32
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

# ---- settings ---------------------------------------------------------------------------------------------------
DIM = 1024
N_QUERIES = 1000
K = 10
CENTRES = 2000
SEED = 0
NOISE = 0.6        # a vector is its centre plus noise of this norm (cosine to its centre ~0.86)
QUERY_NOISE = 0.3  # a query is a corpus vector plus noise of this norm
# ------------------------------------------------------------------------------------------------------------------


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_data(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centres = unit(rng.standard_normal((CENTRES, DIM), dtype=np.float32))
    vectors = np.empty((n, DIM), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        assign = rng.integers(0, CENTRES, m)
        noise = rng.standard_normal((m, DIM), dtype=np.float32) / np.sqrt(DIM)  # norm ~1
        vectors[start:start + m] = unit(centres[assign] + NOISE * noise)
    picks = rng.integers(0, n, N_QUERIES)
    noise = rng.standard_normal((N_QUERIES, DIM), dtype=np.float32) / np.sqrt(DIM)
    queries = unit(vectors[picks] + QUERY_NOISE * noise)
    return vectors, queries


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def qps(search, queries: np.ndarray, repeats: int = 3) -> tuple[float, np.ndarray]:
    best = float("inf")
    ids = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        _, ids = search(queries)
        best = min(best, time.perf_counter() - t0)
    return len(queries) / best, ids


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f[:K]) & set(e[:K])) / K for f, e in zip(found, exact, strict=True)]))


def main() -> None:
    from qwen3_rag.indexers.vector_index import VectorIndex

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000")
    ap.add_argument("--specs", default="Flat,HNSW32,IVF1024,Flat,IVF1024,PQ64",
                    help="comma list; 'IVF<n>,Flat' and 'IVF<n>,PQ<m>' keep their comma")
    ap.add_argument("--ef-search", default="",
                    help="also search each HNSW index with these efSearch values (comma list), e.g. 64,128,256")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    raw = args.specs.split(",")
    specs: list[str] = []
    for part in raw:  # re-join "IVF1024" + "Flat"/"PQ64"
        if specs and specs[-1].upper().startswith("IVF") and "," not in specs[-1]:
            specs[-1] += "," + part
        else:
            specs.append(part)
    rng = np.random.default_rng(SEED)
    rows = []
    for n in map(int, args.sizes.split(",")):
        vectors, queries = make_data(n, rng)
        ids = np.arange(10, 10 + n, dtype=np.int64)  # stable ids that are not positions
        exact = faiss.IndexFlatIP(DIM)
        exact.add(vectors)
        q_exact, exact_pos = qps(lambda q, ex=exact: ex.search(q, K), queries)
        exact_ids = ids[exact_pos]
        rows.append({"n": n, "index": "raw faiss IndexFlatIP", "build s": 0.0, "queries/s": q_exact,
                     "recall@10": 1.0, "max RSS GiB": rss_gib()})
        for spec in specs:
            t0 = time.perf_counter()
            index = VectorIndex(DIM, spec, use_gpu=False)
            if index.needs_training(n):
                sample = rng.choice(n, min(n, max(100_000, index.spec.train_size)), replace=False)
                index.reset(train_vectors=vectors[sample])
            index.add(ids, vectors)
            build = time.perf_counter() - t0
            q, found = qps(lambda qq, ix=index: ix.search(qq, K), queries)
            size = None
            with tempfile.TemporaryDirectory() as tmp:
                index.save(Path(tmp) / "x.faiss")
                size = (Path(tmp) / "x.faiss").stat().st_size / 2**30
            rows.append({"n": n, "index": f"qwen3-rag {index.effective_type}", "build s": build, "queries/s": q,
                         "recall@10": recall(found, exact_ids), "file GiB": size, "max RSS GiB": rss_gib(),
                         "vs raw Flat": q_exact / q})
            if index.spec.kind == "hnsw":
                for ef in filter(None, args.ef_search.split(",")):
                    index.ef_search = int(ef)
                    q, found = qps(lambda qq, ix=index: ix.search(qq, K), queries)
                    rows.append({"n": n, "index": f"qwen3-rag {index.effective_type}, efSearch {ef}",
                                 "queries/s": q, "recall@10": recall(found, exact_ids), "vs raw Flat": q_exact / q})
                index.ef_search = None
            del index
        del exact, vectors
    print(f"\nSearch, dim {DIM}, {N_QUERIES} queries batched, k={K}, faiss {faiss.__version__}, "
          f"{C.machine().get('cpu')}:")
    table = C.print_table(rows, ["n", "index", "build s", "queries/s", "recall@10", "vs raw Flat", "file GiB",
                                 "max RSS GiB"])
    if args.out:
        C.write_results(args.out, rows=rows, table=table)


if __name__ == "__main__":
    main()
