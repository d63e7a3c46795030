"""Ingestion end to end on SciFact: where the time goes (load, chunk, embed, index, commit).

The target is that everything but embedding stays under 10% of the run. all-MiniLM-L6-v2 (the real model that
installs offline) with the default chunking (128 tokens, 32 overlap), Flat index, BM25 kept in step.

    python benchmarks/bench_ingest.py --n-docs 1000 --out benchmarks/results/ingest-cpu.json

With ``--embedder random`` the model is replaced by random unit vectors (the real tokenizer, MiniLM's or with
``--tokenizer qwen3`` Qwen3's, still chunks and makes the model inputs), which isolates what is not embedding at a
scale where a real model would take hours; ``--repeat`` copies the corpus under new ids to grow it:

    python benchmarks/bench_ingest.py --n-docs 0 --repeat 10 --embedder random

``--gpu-tokens-per-s R`` makes the random embedder behave like a GPU model of that throughput: it gets the input ids
as an Embedder does (ingestion frames the chunker's token ids with ``ids_from_content`` on the calling thread) and
waits ``tokens / R`` seconds without holding the GIL, as a thread waiting on a GPU does. ``--pipeline on`` embeds
in a background thread beside chunking and writing, ``off`` one after the other, ``auto`` as ``ingest`` decides
(on for accelerators):

    python benchmarks/bench_ingest.py --n-docs 0 --repeat 4 --embedder random --gpu-tokens-per-s 135000 --pipeline on
    python benchmarks/bench_ingest.py --n-docs 0 --repeat 4 --embedder random --gpu-tokens-per-s 135000 --pipeline off

``--via add`` times ``Index.add(documents)`` (the Python API) on the same corpus instead of ``ingest()``:

    python benchmarks/bench_ingest.py --n-docs 0 --embedder random --tokenizer qwen3 --via add
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


class RandomEmbedder:
    """Random unit vectors at no cost, tokenizing as a real Embedder does: ingestion minus the model."""

    def __init__(self, tokens: Any, dim: int = 384, gpu_tokens_per_s: float = 0.0) -> None:
        import numpy as np

        # the Embedder's own tokenizer and input framing; its weights never load
        self.tokenizer, self.tokenize = tokens.tokenizer, tokens.tokenize
        self.ids_from_content = getattr(tokens, "ids_from_content", None)  # absent before ids were reused
        self.dim, self.model_id, self.max_length = dim, "random", tokens.max_length
        self._rng = np.random.default_rng(0)
        self.gpu_tokens_per_s = gpu_tokens_per_s

    def describe(self) -> dict[str, object]:
        return {"model": "random", "fingerprint": "random:v1", "dim": self.dim, "pooling": "mean",
                "max_length": self.max_length}

    def embed_tokenized(self, ids: list[list[int]]) -> object:
        import numpy as np

        if self.gpu_tokens_per_s:
            time.sleep(sum(map(len, ids)) / self.gpu_tokens_per_s)
        v = self._rng.standard_normal((len(ids), self.dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def embed_documents(self, texts: list[str]) -> object:
        return self.embed_tokenized(self.tokenize(texts))  # tokenizing as an Embedder does

    embed_queries = embed_documents


def tokenizer_used(args: argparse.Namespace) -> str:
    """The tokenizer that chunks and makes the model inputs: --tokenizer applies to the random embedder only."""
    return {"minilm": "minilm", "qwen3-0.6b-random": "qwen3"}.get(args.embedder, args.tokenizer)


def main() -> None:
    from qwen3_rag import Embedder
    from qwen3_rag.pipelines.ingest import ingest

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-docs", type=int, default=1000, help="first N SciFact documents (0 = all 5,183)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=1, help="copies of the corpus, under new document ids")
    ap.add_argument("--embedder", choices=["minilm", "qwen3-0.6b-random", "random"], default="minilm",
                    help="qwen3-0.6b-random: random weights in the real 0.6B shape (bf16 on CUDA), for GPU runs")
    ap.add_argument("--tokenizer", choices=["minilm", "qwen3"], default="minilm",
                    help="random embedder only: tokenize (chunk sizes, model inputs) as MiniLM or as Qwen3 does")
    ap.add_argument("--gpu-tokens-per-s", type=float, default=0.0,
                    help="random embedder only: wait as a GPU of this throughput would")
    ap.add_argument("--pipeline", choices=["auto", "on", "off"], default="auto",
                    help="ingest(pipelined=None / True / False)")
    ap.add_argument("--via", choices=["ingest", "add"], default="ingest",
                    help="ingest(): the folder/jsonl pipeline; add: Index.add(documents) from Python")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.tokenizer != "minilm" and args.embedder != "random":
        ap.error("--tokenizer applies to --embedder random only (the other embedders use their own tokenizer)")
    if args.via == "add" and args.pipeline != "auto":
        ap.error("--pipeline applies to ingest() only; Index.add embeds one batch after the other")

    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    corpus = tmp / "corpus.jsonl"
    with open(C.data_dir("scifact") / "corpus.jsonl", encoding="utf-8") as src:
        lines = [json.loads(line) for i, line in enumerate(src) if not args.n_docs or i < args.n_docs]
    records = [{**record, "_id": f"{record['_id']}-{copy}" if copy else record["_id"]}
               for copy in range(args.repeat) for record in lines]
    if args.via == "ingest":  # Index.add takes the records from memory
        corpus.write_text("".join(json.dumps(record) + "\n" for record in records))
    embedder: object
    if args.embedder == "random":
        if args.tokenizer == "qwen3":  # a tiny Qwen3-Embedding checkpoint with the real tokenizer
            tokens = Embedder(C.random_checkpoint(tmp / "tokens", C.TINY, causal_lm=False,
                                                  tokenizer=C.real_tokenizer(True)), device="cpu")
        else:
            tokens = Embedder(C.minilm_path(), device="cpu")
        embedder = RandomEmbedder(tokens, gpu_tokens_per_s=args.gpu_tokens_per_s)
    elif args.embedder == "qwen3-0.6b-random":
        dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
        checkpoint = C.random_checkpoint(tmp / "model", C.QWEN3_0_6B, causal_lm=False,
                                         tokenizer=C.real_tokenizer(True), dtype=dtype)
        embedder = Embedder(checkpoint, device=args.device, dtype=dtype)
        embedder.embed_documents(["warm up"] * 8)
    else:
        embedder = Embedder(C.minilm_path(), device=args.device, dtype="float32")
        embedder.embed_documents(["warm up"])  # model loading is not ingestion
    if args.via == "add":
        time_index_add(args, records, tmp, embedder)
        return
    t0 = time.perf_counter()
    pipelined = {"auto": None, "on": True, "off": False}[args.pipeline]
    report = ingest([corpus], tmp / "index", embedder=embedder, pipelined=pipelined)
    wall = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = ingest([corpus], tmp / "index", embedder=embedder, pipelined=pipelined)
    rerun = time.perf_counter() - t0
    timings = dict(report.timings)
    if timings["wait"] > 0:  # pipelined: embedding overlaps the rest: what is left is the wall time beyond it
        timings["not overlapped"] = wall - timings["embed"]
    else:
        timings["other"] = max(wall - sum(timings.values()), 0.0)
    rows = [{"stage": k, "seconds": v, "share": v / wall} for k, v in timings.items()]
    print(f"\nIngestion ({args.embedder} embedder, {tokenizer_used(args)} tokenizer, pipelined={pipelined}) of "
          f"{report.added} SciFact documents -> {report.chunks_added} chunks, {report.tokens} tokens, "
          f"{wall:.1f}s; re-run on the unchanged corpus {rerun:.1f}s ({again.unchanged} unchanged):")
    table = C.print_table(rows, ["stage", "seconds", "share"])
    not_embedding = 1 - timings["embed"] / wall
    print(f"not embedding: {not_embedding:.1%} of the run")
    if args.out:
        C.write_results(args.out, documents=report.added, chunks=report.chunks_added, tokens=report.tokens,
                        seconds=wall, rerun_seconds=rerun, rows=rows, not_embedding_share=not_embedding, table=table)
    shutil.rmtree(tmp, ignore_errors=True)


def time_index_add(args: argparse.Namespace, records: list[dict[str, Any]], tmp: Path, embedder: object) -> None:
    """``ingest_documents`` of the corpus records (title + " " + text per document) into a new index, timed."""
    from qwen3_rag import Document, Index, ingest_documents

    docs = [Document(id=r["_id"], text=(r.get("title", "") + " " + r["text"]).strip()) for r in records]
    with Index.create(tmp / "index", embedder) as index:
        t0 = time.perf_counter()
        stats = ingest_documents(docs, index, replace=False)
        wall = time.perf_counter() - t0
    print(f"ingest_documents ({args.embedder} embedder, {tokenizer_used(args)} tokenizer) of {stats.added} SciFact "
          f"documents -> {stats.chunks_added} chunks: {wall:.1f}s")
    if args.out:
        C.write_results(args.out, via="Index.add", documents=stats.added, chunks=stats.chunks_added, seconds=wall)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
