"""The Embedder's CPU settings side by side: token budget x torch threads, quiet or under the bounded load of
bench_cpu_load.py. The OpenMP wait policy is read when torch loads, so compare it across two runs:

    python benchmarks/bench_cpu_threads.py --n-docs 80 --loaded
    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_cpu_threads.py --n-docs 80 --loaded

Model and texts as bench_cpu_load.py (random bf16 Qwen3, hidden 512, 8 layers, SciFact documents). Every side runs
at a fixed thread count (the Embedder's adaptation to free cores is switched off). Prints median seconds and the
ratio to the model card's reference loop (batch 32, 2 threads) per side.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from bench_cpu_load import BUDGETS, REF_BATCH, SHAPE, Load  # noqa: E402
from bench_models import reference_embed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-docs", type=int, default=80)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--loaded", action="store_true", help="run under the bounded background load")
    parser.add_argument("--sides", default=None,
                        help="comma-separated budget:threads pairs to time (default: every budget at 2 and 1)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from transformers import AutoModel

    from qwen3_rag import Embedder

    texts, _ = C.scifact_texts(args.n_docs, 0)
    tok = C.real_tokenizer()
    path = C.random_checkpoint(Path(tempfile.mkdtemp(prefix="bench-cpu-threads-")) / "model", SHAPE,
                               causal_lm=False, tokenizer=tok, dtype="bfloat16")
    ref_model = AutoModel.from_pretrained(path, dtype=torch.bfloat16).eval()
    ref_tok = C.real_tokenizer()
    ref_tok.padding_side = "left"
    timed: list[tuple[int, int]] = ([(int(b), int(t)) for b, t in (p.split(":") for p in args.sides.split(","))]
                                    if args.sides else [(b, t) for b in BUDGETS for t in (2, 1)])
    embedders = {b: Embedder(path, device="cpu", max_tokens_per_batch=b, max_length=8192) for b, _ in timed}
    for emb in embedders.values():  # warm up
        emb.embed_documents(texts[:8])
        emb._runner.cpu_threads = None  # each side's thread count is fixed here, not adapted to the load
    sides: list[tuple[int | None, int]] = [(None, 2), *timed]
    seconds: dict[str, list[float]] = {}
    loads = []
    with Load(2) if args.loaded else contextlib.nullcontext():
        for r in range(args.rounds):
            for budget, threads in sides if r % 2 == 0 else sides[::-1]:
                torch.set_num_threads(threads)
                started = time.perf_counter()
                if budget is None:
                    reference_embed(ref_model, ref_tok, texts, REF_BATCH, "cpu")
                else:
                    embedders[budget].embed_documents(texts)
                name = f"{'reference' if budget is None else f'embedder {budget}'}, {threads} threads"
                seconds.setdefault(name, []).append(time.perf_counter() - started)
            loads.append(os.getloadavg()[0])
    ref = float(np.median(seconds["reference, 2 threads"]))
    rows = [{"side": name, "median s": round(float(np.median(v)), 1),
             "x reference": round(ref / float(np.median(v)), 2),
             "loaded": args.loaded, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(default)"),
             "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT", "(default)"),
             "load avg (1 min)": round(float(np.mean(loads)), 1)} for name, v in seconds.items()]
    table = C.print_table(rows, list(rows[0]))
    if args.out:
        C.write_results(args.out, shape=SHAPE, documents=args.n_docs, rounds=args.rounds, rows=rows, table=table)


if __name__ == "__main__":
    main()
