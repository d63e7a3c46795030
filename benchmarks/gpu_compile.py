"""torch.compile against eager for the Embedder on a GPU (random 0.6B weights, all SciFact texts).

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
    t0 = time.perf_counter()
    got = compiled.embed_documents(texts[:2000])
    C.sync()
    print("compile+first 2000 texts", time.perf_counter() - t0, "min cos", float((expected * got).sum(1).min()))
    for name, emb in (("eager", eager), ("compiled", compiled)):
        C.sync()
        t0 = time.perf_counter()
        emb.embed_documents(texts)
        C.sync()
        dt = time.perf_counter() - t0
        print(name, f"{n_tokens / dt:,.0f} tokens/s", f"MFU {n_tokens / dt * 0.94e9 / 989e12:.3f}", flush=True)


if __name__ == "__main__":
    main()
