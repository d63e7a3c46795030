"""all-MiniLM-L6-v2 on CPU: qwen3-rag's Embedder against its model card's code and sentence-transformers.

Texts: SciFact documents chunked as the default ingestion does (128 tokens, 32 overlap) plus the queries;
outputs are checked equal (cosine) while timing.

    python benchmarks/bench_minilm.py --n-docs 300 --out benchmarks/results/minilm-cpu.json
    python benchmarks/bench_minilm.py --budgets 2048,8192 --rounds 2 --out benchmarks/results/minilm-cpu-budgets.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

REF_BATCH_SIZE = 32  # the model card's example encodes fixed batches; sentence-transformers' default is 32 too


def reference_embed(model, tok, texts: list[str]) -> np.ndarray:
    """The all-MiniLM-L6-v2 model card's transformers code: mean pooling, normalise, batches in input order."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), REF_BATCH_SIZE):
            enc = tok(texts[i:i + REF_BATCH_SIZE], padding=True, truncation=True, max_length=256,
                      return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(emb, p=2, dim=1).numpy())
    return np.concatenate(out)


def main() -> None:
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    from qwen3_rag import Document, Embedder
    from qwen3_rag.indexers.chunking import Chunker

    ap = argparse.ArgumentParser()
    ap.add_argument("--n-docs", type=int, default=300)
    ap.add_argument("--budgets", default="",
                    help="comma-separated CPU token budgets to time the Embedder at (default: its own default)")
    ap.add_argument("--rounds", type=int, default=1, help="each side once per round, the order reversed every other")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    path = C.minilm_path()
    budgets = [int(b) for b in args.budgets.split(",") if b] or [None]
    ours = {b: Embedder(path, device="cpu", dtype="float32", max_tokens_per_batch=b) for b in budgets}
    first = ours[budgets[0]]
    chunker = Chunker.for_embedder(first)
    docs, queries = C.scifact_texts(args.n_docs, 300)
    texts = [c.text for i, d in enumerate(docs) for c in chunker.chunk(Document(id=str(i), text=d))] + queries
    n_tokens = sum(len(ids) for ids in first.tokenize(texts))
    print(f"{len(texts)} texts (chunks + queries), {n_tokens} tokens", flush=True)

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    st = SentenceTransformer(path, device="cpu")
    sides = {f"qwen3-rag Embedder, {emb._runner.max_tokens_per_batch} tokens per batch":
             (lambda emb=emb: emb.embed_documents(texts)) for emb in ours.values()}
    sides[f"model-card code (batch {REF_BATCH_SIZE}, input order)"] = lambda: reference_embed(model, tok, texts)
    sides["sentence-transformers (batch 32)"] = lambda: st.encode(texts, batch_size=32, convert_to_numpy=True)
    for emb in ours.values():
        emb.embed_documents(texts[:8])
    reference_embed(model, tok, texts[:8])
    st.encode(texts[:8])
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    vectors = {}
    for r in range(args.rounds):
        for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            vectors[name], t = C.timed(sides[name])
            seconds[name].append(t)
    base = next(iter(sides))
    rows = []
    for name, values in seconds.items():
        t = float(np.median(values))
        rows.append({"implementation": name, "seconds": t, "tokens/s": n_tokens / t,
                     "min cosine vs ours": float((vectors[base] * vectors[name]).sum(1).min())})
    for r in rows:
        r["x ours"] = rows[0]["tokens/s"] / r["tokens/s"]
    table = C.print_table(rows, ["implementation", "seconds", "tokens/s", "x ours", "min cosine vs ours"])
    if args.out:
        C.write_results(args.out, texts=len(texts), tokens=n_tokens, rounds=args.rounds, seconds=seconds, rows=rows,
                        table=table)


if __name__ == "__main__":
    main()
