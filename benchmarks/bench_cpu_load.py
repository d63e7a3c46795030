"""CPU embedding throughput on a quiet and on a loaded machine: the Embedder at several token budgets against the
model card's reference loop, side by side, alternating.

The load is a bounded background process doing float32 matrix products on as many threads as the machine has
cores (a fair stand-in for "other jobs on the same cores"); it runs only during the loaded rounds. Each round times
every configuration once, in an order that alternates between rounds, so drift of the machine hits every side.
Every side starts with one torch thread per core; the Embedder then follows the cores other processes leave free
(qwen3_rag/retrieval/_threads.py), except the "fixed threads" side, which keeps the count as the reference does.

    python benchmarks/bench_cpu_load.py --rounds 3 --out benchmarks/results/cpu-load.json

Model: a random bf16 Qwen3 (hidden 512, 8 layers, intermediate 1536, 8/4 heads, real tokenizer), 160 SciFact
documents; what is compared is throughput, not quality (outputs are checked equal while timing).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from bench_models import reference_embed  # noqa: E402

# ---- settings ---------------------------------------------------------------------------------------------------
SHAPE = {"hidden_size": 512, "num_hidden_layers": 8, "intermediate_size": 1536, "num_attention_heads": 8,
         "num_key_value_heads": 4, "head_dim": 64}
N_DOCS = 160
BUDGETS = (2048, 8192, 16384)   # Embedder max_tokens_per_batch values compared
REF_BATCH = 32                  # the reference loop's fixed batch
LOAD_SIZE = 384                 # matrix size of the background load's products
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
# ------------------------------------------------------------------------------------------------------------------


def _burn(stop: Any, threads: int) -> None:
    torch.set_num_threads(threads)
    a = torch.randn(LOAD_SIZE, LOAD_SIZE)
    while not stop.is_set():
        a = torch.tanh(a @ a)


class Load:
    """A background process multiplying matrices on ``threads`` threads until stopped (bounded by the caller)."""

    def __init__(self, threads: int) -> None:
        self._stop = mp.get_context("spawn").Event()
        self._proc = mp.get_context("spawn").Process(target=_burn, args=(self._stop, threads), daemon=True)

    def __enter__(self) -> Load:
        # The load stands for other people's jobs: it keeps the OpenMP defaults whatever the measured process uses
        # (the spawned interpreter reads these variables when its torch loads).
        saved = {k: os.environ.pop(k) for k in WAIT_VARIABLES if k in os.environ}
        try:
            self._proc.start()
        finally:
            os.environ.update(saved)
        time.sleep(2.0)  # let it reach full speed
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._proc.join(timeout=30)
        if self._proc.is_alive():
            self._proc.kill()


def _time(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    from transformers import AutoModel

    from qwen3_rag import Embedder

    texts, _ = C.scifact_texts(N_DOCS, 0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-cpu-load-"))
    tok = C.real_tokenizer()
    path = C.random_checkpoint(tmp / "model", SHAPE, causal_lm=False, tokenizer=tok, dtype="bfloat16")
    tokens = sum(len(ids) for ids in tok(texts)["input_ids"])
    ref_model = AutoModel.from_pretrained(path, dtype=torch.bfloat16).eval()
    ref_tok = C.real_tokenizer()
    ref_tok.padding_side = "left"
    embedders = {f"embedder {b}": Embedder(path, device="cpu", max_tokens_per_batch=b, max_length=8192)
                 for b in BUDGETS}
    fixed = Embedder(path, device="cpu", max_tokens_per_batch=BUDGETS[0], max_length=8192)
    embedders[f"embedder {BUDGETS[0]}, fixed threads"] = fixed
    reference = reference_embed(ref_model, ref_tok, texts, REF_BATCH, "cpu")
    for name, emb in embedders.items():  # warm up, and check the outputs agree
        cos = float(np.min(np.sum(emb.embed_documents(texts) * reference, axis=1)))
        print(f"{name}: min cosine to the reference {cos:.5f}")
    fixed._runner.cpu_threads = None  # the thread count of the process, whatever other processes do
    cores = len(os.sched_getaffinity(0))
    sides = ["reference", *embedders]
    rows = []
    for condition in ("quiet", "loaded"):
        seconds: dict[str, list[float]] = {s: [] for s in sides}
        loads = []
        for r in range(args.rounds):
            order = sides if r % 2 == 0 else sides[::-1]
            ctx = Load(os.cpu_count() or 2) if condition == "loaded" else None
            if ctx is not None:
                ctx.__enter__()
            try:
                for side in order:
                    torch.set_num_threads(cores)  # every side starts from one thread per core
                    if side == "reference":
                        _, t = _time(lambda: reference_embed(ref_model, ref_tok, texts, REF_BATCH, "cpu"))
                    else:
                        _, t = _time(lambda side=side: embedders[side].embed_documents(texts))
                    seconds[side].append(t)
                loads.append(os.getloadavg()[0])
            finally:
                if ctx is not None:
                    ctx.__exit__(None, None, None)
        ref = float(np.median(seconds["reference"]))
        for side in sides:
            med = float(np.median(seconds[side]))
            rows.append({"condition": condition, "side": side, "median s": round(med, 2),
                         "tokens/s": round(tokens / med), "x reference": round(ref / med, 2),
                         "load avg (1 min)": round(float(np.mean(loads)), 1)})
    table = C.print_table(rows, ["condition", "side", "median s", "tokens/s", "x reference", "load avg (1 min)"])
    if args.out:
        C.write_results(args.out, shape=SHAPE, documents=N_DOCS, tokens=tokens, rounds=args.rounds,
                        torch_threads=torch.get_num_threads(),
                        openmp_wait={k: os.environ.get(k, "(unset)") for k in WAIT_VARIABLES}, rows=rows, table=table)


if __name__ == "__main__":
    main()
