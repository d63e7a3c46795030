"""Token-budget sweep and a kernel-time profile of the Embedder on a GPU (random 0.6B weights, SciFact texts).

    python benchmarks/gpu_sweep.py --budgets 32768,65536,131072,262144
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", default="32768,65536,131072,262144")
    ap.add_argument("--n-docs", type=int, default=5183)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from qwen3_rag import Embedder

    docs, queries = C.scifact_texts(args.n_docs, 300)
    texts = docs + queries
    tmp = Path(tempfile.mkdtemp())
    emb_dir = C.random_checkpoint(tmp / "emb", C.QWEN3_0_6B, causal_lm=False, tokenizer=C.real_tokenizer(True))
    rows = []
    for attn in ("sdpa", "eager") if False else ("sdpa",):
        for budget in map(int, args.budgets.split(",")):
            emb = Embedder(emb_dir, device="cuda", dtype="bfloat16", max_tokens_per_batch=budget,
                           attn_implementation=attn)
            n_tokens = sum(len(i) for i in emb.tokenize(texts))
            emb.embed_documents(texts[:64])
            torch.cuda.reset_peak_memory_stats()
            C.sync()
            t0 = time.perf_counter()
            emb.embed_documents(texts)
            C.sync()
            dt = time.perf_counter() - t0
            rows.append({"attention": attn, "budget": budget, "tokens/s": n_tokens / dt,
                         "MFU": n_tokens / dt * C.GFLOP_PER_TOKEN_0_6B * 1e9 / 989e12,
                         "peak GiB": torch.cuda.max_memory_allocated() / 2**30})
            del emb
            torch.cuda.empty_cache()
    table = C.print_table(rows, ["attention", "budget", "tokens/s", "MFU", "peak GiB"])
    # where the time goes, for the default budget
    emb = Embedder(emb_dir, device="cuda", dtype="bfloat16")
    emb.embed_documents(texts[:64])
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        emb.embed_documents(texts[:1500])
        C.sync()
    prof_table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60)
    print(prof_table)
    if args.out:
        C.write_results(args.out, rows=rows, table=table, profile=prof_table)


if __name__ == "__main__":
    main()
