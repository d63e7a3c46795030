"""Ingestion on a local Ray against a single process: the share of the run spent outside the model.

Both sides ingest the same SciFact documents into a new index with the default chunking (128 / 32), alternating
single, Ray, single, Ray, ... in one run (the machine is shared: alternating spreads its load over both sides).
The single process is ``ingest()`` as ``qwen3-rag index`` runs it; the Ray side is ``ingest(..., ray=...)`` on a
local Ray started once before the rounds (as a cluster is running before a job): one preparing actor (read + skip
+ chunk) and one embedding actor, whose start (process, imports, model load) is part of each Ray run.

"Outside the model" is the wall time minus the time in the model: the single process's ``embed`` stage; on Ray the
embedding actor's time in its calls (summed ``embed_seconds``; one actor, so never overlapping itself).

    python benchmarks/bench_ray.py --n-docs 400 --rounds 2 --out benchmarks/results/ray-cpu-minilm.json

``--embedder random --gpu-tokens-per-s R`` replaces the model on both sides by random vectors that take
``tokens / R`` seconds, as a GPU of that throughput would (the chunking and the model inputs stay real; the
record is MiniLM's, or with ``--tokenizer qwen3`` a tiny Qwen3 checkpoint's with the real Qwen3 tokenizer):

    python benchmarks/bench_ray.py --n-docs 0 --embedder random --tokenizer qwen3 --gpu-tokens-per-s 135000 \\
        --rounds 2 --out benchmarks/results/ray-simgpu135k.json

``--milvus-lite ROWS`` times raw pymilvus inserts of ROWS 1024-wide rows into Milvus Lite (the store's own write
rate, not through a qwen3-rag backend):

    python benchmarks/bench_ray.py --milvus-lite 100000 --out benchmarks/results/milvus-lite-insert.json

``--prepare-only`` measures the preparing stage alone in this process (read, skip, chunk with token ids): the
per-core chunking throughput that sizes a cluster's CPUs (docs/scaling.md). Run it with ``RAYON_RS_NUM_CPUS=1``
for one core.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

#: Embedding actors of the Ray side (the machine has 2 cores: one prepares, one embeds).
ACTORS = 1


class SimulatedModel:
    """The record and tokenizer of a real embedder, random unit vectors that take ``tokens / rate`` seconds (the
    wait of a thread on a GPU, without the GIL). Built in each Ray actor from the index's record."""

    def __init__(self, record: Mapping[str, Any], rate: float) -> None:
        from qwen3_rag import load_embedder

        self._real = load_embedder(record=record, device="cpu")  # its weights never load
        self.dim, self.max_length, self.rate = self._real.dim, self._real.max_length, rate

    @property
    def tokenizer(self) -> Any:
        return self._real.tokenizer

    def describe(self) -> dict[str, Any]:
        return self._real.describe()

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return self._real.tokenize(texts)

    def ids_from_content(self, ids: list[list[int]]) -> list[list[int]] | None:
        return self._real.ids_from_content(ids)

    def embed_tokenized(self, ids: list[list[int]]) -> Any:
        import numpy as np

        time.sleep(sum(map(len, ids)) / self.rate)
        v = np.random.default_rng(len(ids)).standard_normal((len(ids), self.dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def embed_documents(self, texts: list[str]) -> Any:
        return self.embed_tokenized(self.tokenize(texts))

    def embed_queries(self, texts: list[str], instruction: str | None = None) -> Any:
        return self.embed_documents(texts)


def simulated(record: Mapping[str, Any], *, rate: float) -> SimulatedModel:
    return SimulatedModel(record, rate)


def model_dir(args: argparse.Namespace, tmp: Path) -> str:
    if args.tokenizer == "qwen3":  # a tiny Qwen3-Embedding checkpoint with the real tokenizer
        return C.random_checkpoint(tmp / "tokens", C.TINY, causal_lm=False, tokenizer=C.real_tokenizer(True))
    return C.minilm_path()


class FirstBatch:
    """When the driver got its first batch from Ray (the actors started, the first rows through every stage)."""

    def __init__(self) -> None:
        from qwen3_rag.pipelines import distributed

        self.at: float | None = None
        real = distributed.timed

        def timed(items: Any, seconds: dict[str, float], stage: str) -> Any:
            for n, item in enumerate(real(items, seconds, stage)):
                if n == 0:
                    self.at = time.perf_counter()
                yield item

        distributed.timed = timed


def one_run(side: str, args: argparse.Namespace, corpus: Path, index: Path, model: str,
            first: FirstBatch) -> dict[str, Any]:
    from qwen3_rag import Embedder, ingest
    from qwen3_rag.pipelines.distributed import RayOptions

    embedder: Any = Embedder(model, device="cpu", dtype="float32")
    make = None
    if args.embedder == "random":
        make = functools.partial(simulated, rate=args.gpu_tokens_per_s)
        embedder = SimulatedModel(embedder.describe(), args.gpu_tokens_per_s)
    else:
        embedder.embed_documents(["warm up"])  # model loading is not ingestion (on Ray it is: each run's actor)
    ray = RayOptions(address="local", actors=ACTORS, embedder=make) if side == "ray" else None
    shutil.rmtree(index, ignore_errors=True)
    load = os.getloadavg()[0]
    first.at = None
    started = time.perf_counter()
    # the single process pipelined for a GPU-speed model, as ingest() decides for an accelerator
    pipelined = args.embedder == "random" and side == "single"
    report = ingest([corpus], index, embedder=embedder, ray=ray, pipelined=pipelined or None)
    wall = time.perf_counter() - started
    model_seconds = report.timings["embed"]
    return {"side": side, "wall_s": wall, "model_s": model_seconds, "outside_model": 1 - model_seconds / wall,
            "documents": report.added, "chunks": report.chunks_added, "tokens": report.tokens,
            "wait_s": report.timings["wait"], "first_batch_s": first.at - started if first.at else None,
            "load_1min": load, "timings": dict(report.timings)}


def prepare_only(args: argparse.Namespace, corpus: Path, model: str) -> None:
    """The preparing stage alone, in this process, on an empty index: read, skip, chunk with token ids."""
    import numpy as np
    import pyarrow as pa

    from qwen3_rag import Embedder
    from qwen3_rag.pipelines.ray_stages import PrepareStage

    record = Embedder(model, device="cpu").describe()
    stage = PrepareStage(record, 128, 32, np.zeros(0, dtype="S16"))
    batch = pa.table({"path": [os.fsencode(corpus)], "doc_id": [os.fsencode(corpus.name)]})
    best = None
    for _ in range(3):
        started = time.perf_counter()
        tables = list(stage(batch))
        seconds = time.perf_counter() - started
        best = seconds if best is None else min(best, seconds)
    rows = pa.concat_tables(tables)
    tokens = sum(rows.column("tokens").to_pylist())
    chunks = sum(kind == "chunk" for kind in rows.column("kind").to_pylist())
    lengths = [len(ids) for ids in rows.column("ids").to_pylist()]
    result = {"seconds": best, "documents": sum(i == 0 for i in rows.column("index").to_pylist()), "chunks": chunks,
              "tokens": tokens, "tokens_per_s": tokens / best, "chunks_per_s": chunks / best,
              "content_tokens_per_chunk": sum(lengths) / len(lengths),
              "rayon_threads": os.environ.get("RAYON_RS_NUM_CPUS", "all")}
    print(json.dumps(result, indent=2))
    if args.out:
        C.write_results(args.out, tokenizer=args.tokenizer, **result)


def milvus_lite_writes(args: argparse.Namespace, tmp: Path) -> None:
    """Raw pymilvus inserts into Milvus Lite (a file, one process): rows of a 1024-wide vector, a document id, a
    chunk's text and position, in batches of 512 (the default commit), then a flush. Not through a qwen3-rag
    backend: the store's own write rate, an input of docs/scaling.md."""
    import numpy as np
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(str(tmp / "lite.db"))
    schema = client.create_schema(auto_id=True)
    schema.add_field("chunk_id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=args.dim)
    schema.add_field("doc_id", DataType.VARCHAR, max_length=256)
    schema.add_field("text", DataType.VARCHAR, max_length=4096)
    schema.add_field("position", DataType.INT32)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="IP")
    client.create_collection("chunks", schema=schema, index_params=index)
    rng = np.random.default_rng(0)
    text = "x" * 450  # about a 105-token chunk of English
    batches, seconds = 0, 0.0
    for start in range(0, args.milvus_lite, 512):
        n = min(512, args.milvus_lite - start)
        vectors = rng.standard_normal((n, args.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows = [{"vector": v.tolist(), "doc_id": f"doc-{(start + i) // 8}", "text": text, "position": (start + i) % 8}
                for i, v in enumerate(vectors)]
        started = time.perf_counter()
        client.insert("chunks", rows)
        seconds += time.perf_counter() - started
        batches += 1
    started = time.perf_counter()
    client.flush("chunks")
    flush = time.perf_counter() - started
    result = {"rows": args.milvus_lite, "dim": args.dim, "batches": batches, "insert_s": seconds, "flush_s": flush,
              "rows_per_s": args.milvus_lite / (seconds + flush), "load_1min": os.getloadavg()[0]}
    print(json.dumps(result, indent=2))
    client.close()
    if args.out:
        C.write_results(args.out, **result)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-docs", type=int, default=400, help="first N SciFact documents (0 = all 5,183)")
    ap.add_argument("--rounds", type=int, default=2, help="single, Ray pairs, alternating")
    ap.add_argument("--embedder", choices=["minilm", "random"], default="minilm")
    ap.add_argument("--tokenizer", choices=["minilm", "qwen3"], default="minilm",
                    help="random embedder: chunk and frame inputs as MiniLM or as Qwen3 does")
    ap.add_argument("--gpu-tokens-per-s", type=float, default=135000.0, help="random embedder: its throughput")
    ap.add_argument("--prepare-only", action="store_true", help="time the preparing stage alone, in this process")
    ap.add_argument("--milvus-lite", type=int, default=0, metavar="ROWS",
                    help="time ROWS raw inserts into Milvus Lite instead (the store's write rate)")
    ap.add_argument("--dim", type=int, default=1024, help="--milvus-lite: vector width (Qwen3-Embedding-0.6B: 1024)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.tokenizer != "minilm" and args.embedder != "random" and not args.prepare_only:
        ap.error("--tokenizer applies to --embedder random (and --prepare-only)")

    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    if args.milvus_lite:
        milvus_lite_writes(args, tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        return
    corpus = tmp / "corpus.jsonl"
    with open(C.data_dir("scifact") / "corpus.jsonl", encoding="utf-8") as src:
        corpus.write_text("".join(line for i, line in enumerate(src) if not args.n_docs or i < args.n_docs))
    model = model_dir(args, tmp)
    if args.prepare_only:
        prepare_only(args, corpus, model)
        shutil.rmtree(tmp, ignore_errors=True)
        return

    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = time.perf_counter()
    ray.init(address="local", include_dashboard=False)
    cluster_start = time.perf_counter() - started
    rows, first = [], FirstBatch()
    try:
        for n in range(args.rounds):
            for side in ("single", "ray"):
                rows.append({"round": n + 1, **one_run(side, args, corpus, tmp / f"index-{side}", model, first)})
                print({k: v for k, v in rows[-1].items() if k != "timings"}, flush=True)
    finally:
        ray.shutdown()
    what = (f"simulated {args.gpu_tokens_per_s:,.0f} tokens/s, {args.tokenizer} tokenizer"
            if args.embedder == "random" else "all-MiniLM-L6-v2 on the CPU")
    print(f"\n{rows[0]['documents']} SciFact documents -> {rows[0]['chunks']} chunks, {rows[0]['tokens']} tokens; "
          f"{what}; local Ray started in {cluster_start:.1f}s (not in the runs):")
    table = C.print_table(rows, ["round", "side", "wall_s", "model_s", "outside_model", "first_batch_s",
                                 "load_1min"])
    if args.out:
        C.write_results(args.out, embedder=args.embedder, tokenizer=args.tokenizer, actors=ACTORS,
                        gpu_tokens_per_s=args.gpu_tokens_per_s if args.embedder == "random" else None,
                        cluster_start_s=cluster_start, rows=rows, table=table)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
