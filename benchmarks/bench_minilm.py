"""all-MiniLM-L6-v2 on CPU: qwen3-rag's Embedder against its model card's code and sentence-transformers.

Texts: SciFact documents chunked as the default ingestion does (128 tokens, 32 overlap) plus the queries;
outputs are checked equal (cosine) while timing.

    python benchmarks/bench_minilm.py --n-docs 300 --out benchmarks/results/minilm-cpu.json
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
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    path = C.minilm_path()
    ours = Embedder(path, device="cpu", dtype="float32")
    chunker = Chunker.for_embedder(ours)
    docs, queries = C.scifact_texts(args.n_docs, 300)
    texts = [c.text for i, d in enumerate(docs) for c in chunker.chunk(Document(id=str(i), text=d))] + queries
    n_tokens = sum(len(ids) for ids in ours.tokenize(texts))
    print(f"{len(texts)} texts (chunks + queries), {n_tokens} tokens", flush=True)

    ours.embed_documents(texts[:8])
    ours_vecs, t_ours = C.timed(ours.embed_documents, texts)
    rows = [{"implementation": "qwen3-rag Embedder", "seconds": t_ours, "tokens/s": n_tokens / t_ours}]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    reference_embed(model, tok, texts[:8])
    ref_vecs, t_ref = C.timed(reference_embed, model, tok, texts)
    rows.append({"implementation": f"model-card code (batch {REF_BATCH_SIZE}, input order)", "seconds": t_ref,
                 "tokens/s": n_tokens / t_ref, "min cosine vs ours": float((ours_vecs * ref_vecs).sum(1).min())})
    st = SentenceTransformer(path, device="cpu")
    st.encode(texts[:8])
    st_vecs, t_st = C.timed(st.encode, texts, batch_size=32, convert_to_numpy=True)
    rows.append({"implementation": "sentence-transformers (batch 32)", "seconds": t_st, "tokens/s": n_tokens / t_st,
                 "min cosine vs ours": float((ours_vecs * st_vecs).sum(1).min())})
    for r in rows:
        r["x ours"] = rows[0]["tokens/s"] / r["tokens/s"]
    table = C.print_table(rows, ["implementation", "seconds", "tokens/s", "x ours", "min cosine vs ours"])
    if args.out:
        C.write_results(args.out, texts=len(texts), tokens=n_tokens, rows=rows, table=table)


if __name__ == "__main__":
    main()
