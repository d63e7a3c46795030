"""torch.compile against eager for the Embedder on a GPU (random 0.6B weights, all SciFact texts).

    PYTHONPATH=. python benchmarks/gpu_compile.py
"""
import sys, time, tempfile
from pathlib import Path
import torch
sys.path.insert(0, "benchmarks")
import _common as C
from qwen3_rag import Embedder
docs, queries = C.scifact_texts(5183, 300)
texts = docs + queries
emb_dir = C.random_checkpoint(Path(tempfile.mkdtemp()) / "emb", C.QWEN3_0_6B, causal_lm=False, tokenizer=C.real_tokenizer(True))
base = Embedder(emb_dir, device="cuda", dtype="bfloat16")
n = sum(len(i) for i in base.tokenize(texts))
ref = base.embed_documents(texts[:2000])
emb = Embedder(emb_dir, device="cuda", dtype="bfloat16", compile=True)
t0 = time.perf_counter(); got = emb.embed_documents(texts[:2000]); C.sync(); print("compile+first 2000 texts", time.perf_counter() - t0, "min cos", float((ref * got).sum(1).min()), flush=True)
for name, e in (("eager", base), ("compiled", emb)):
    C.sync(); t0 = time.perf_counter(); e.embed_documents(texts); C.sync(); dt = time.perf_counter() - t0
    print(name, f"{n/dt:,.0f} tokens/s", f"MFU {n/dt*0.94e9/989e12:.3f}", flush=True)
