"""torch.compile against eager for the Embedder on a GPU (random 0.6B weights, all SciFact texts).

Three ways: eager; ``compile=True`` (the whole model, what the package does); and each decoder layer compiled on
its own ("regional": one compilation reused by all 28 layers). On the CPU regional compilation took 15 s instead
of 115 s and ran at least as fast (BENCHMARKS.md); this script measures whether that holds on a GPU, where the
whole-model compile gave 2.26x after ~2 min.

    PYTHONPATH=. python benchmarks/gpu_compile.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def main() -> None:
    from qwen3_rag import Embedder

    docs, queries = C.scifact_texts(5183, 300)
    texts = docs + queries
    emb_dir = C.random_checkpoint(Path(tempfile.mkdtemp()) / "emb", C.QWEN3_0_6B, causal_lm=False,
                                  tokenizer=C.real_tokenizer(True))
    eager = Embedder(emb_dir, device="cuda", dtype="bfloat16")
    n_tokens = sum(len(ids) for ids in eager.tokenize(texts))
    expected = eager.embed_documents(texts[:2000])
    compiled = Embedder(emb_dir, device="cuda", dtype="bfloat16", compile=True)
    regional = Embedder(emb_dir, device="cuda", dtype="bfloat16")
    for layer in regional.model.layers:
        layer.compile(dynamic=True)
    for name, emb in (("whole-model compile", compiled), ("regional compile", regional)):
        t0 = time.perf_counter()
        got = emb.embed_documents(texts[:2000])
        C.sync()
        print(name, "compile+first 2000 texts", f"{time.perf_counter() - t0:.1f}s",
              "min cos", float((expected * got).sum(1).min()), flush=True)
    for name, emb in (("eager", eager), ("compiled", compiled), ("regional", regional)):
        C.sync()
        t0 = time.perf_counter()
        emb.embed_documents(texts)
        C.sync()
        dt = time.perf_counter() - t0
        print(name, f"{n_tokens / dt:,.0f} tokens/s", f"MFU {n_tokens / dt * 0.94e9 / 989e12:.3f}", flush=True)


if __name__ == "__main__":
    main()
