"""Embedding and reranking throughput: qwen3-rag against the model-card reference code and sentence-transformers.

Random weights with the real Qwen3-0.6B shape measure speed honestly (the work per token is the same as with the
real weights); outputs are checked equal (cosine / absolute score difference) while timing. Texts are SciFact
documents (title + text, corpus order) and queries (with the instruction), a realistic mix of lengths.

    python benchmarks/bench_models.py --device cpu --n-docs 48 --n-queries 16            # CPU, short slice
    python benchmarks/bench_models.py --device cuda --n-docs 5183 --n-queries 300         # GPU, everything
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

# ---- settings ---------------------------------------------------------------------------------------------------
REF_BATCH_SIZE = 32          # reference code: fixed-size padded batches in corpus order
ST_BATCH_SIZE = 32           # sentence-transformers default
RERANK_CANDIDATES = 100      # candidates per query for the reranker benchmark (--candidates)
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}  # dense bf16 tensor-core peak
# ------------------------------------------------------------------------------------------------------------------


def reference_embed(model: Any, tok: Any, texts: list[str], batch_size: int, device: str) -> np.ndarray:
    """The model card's code: left padding, fixed batches in input order, last-token pool, normalise."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            batch = tok(texts[i:i + batch_size], padding=True, truncation=True, max_length=8192,
                        return_tensors="pt").to(device)
            hidden = model(**batch).last_hidden_state
            emb = hidden[:, -1]  # left padding
            out.append(torch.nn.functional.normalize(emb.float(), p=2, dim=1).cpu().numpy())
    return np.concatenate(out)


def reference_rerank(model: Any, tok: Any, pairs: list[tuple[str, str]], batch_size: int, device: str) -> list[float]:
    """The model card's reranker code: prefix + body + suffix, full-vocabulary logits, log-softmax [no, yes]."""
    from qwen3_rag.retrieval.prompts import DEFAULT_INSTRUCTION, RERANKER_PREFIX, RERANKER_SUFFIX

    prefix = tok.encode(RERANKER_PREFIX, add_special_tokens=False)
    suffix = tok.encode(RERANKER_SUFFIX, add_special_tokens=False)
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    scores: list[float] = []
    with torch.inference_mode():
        for i in range(0, len(pairs), batch_size):
            bodies = [f"<Instruct>: {DEFAULT_INSTRUCTION}\n<Query>: {q}\n<Document>: {d}"
                      for q, d in pairs[i:i + batch_size]]
            enc = tok(bodies, padding=False, truncation="longest_first", return_attention_mask=False,
                      add_special_tokens=False, max_length=8192 - len(prefix) - len(suffix))
            enc["input_ids"] = [prefix + ids + suffix for ids in enc["input_ids"]]
            batch = tok.pad(enc, padding=True, return_tensors="pt").to(device)
            logits = model(**batch).logits[:, -1, :]
            two = torch.stack([logits[:, no], logits[:, yes]], dim=1).float()
            scores += torch.log_softmax(two, dim=1)[:, 1].exp().tolist()
    return scores


def peak_memory() -> float | None:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return None


def reset_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="default bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--shape", choices=["0.6b", "tiny"], default="0.6b")
    ap.add_argument("--n-docs", type=int, default=48)
    ap.add_argument("--n-queries", type=int, default=16)
    ap.add_argument("--rerank-queries", type=int, default=1)
    ap.add_argument("--candidates", type=int, default=RERANK_CANDIDATES)
    ap.add_argument("--candidate-kind", choices=["documents", "chunks"], default="documents",
                    help="rerank whole SciFact documents, or the chunks the default ingestion makes (128 / 32)")
    ap.add_argument("--max-tokens-per-batch", type=int, default=None)
    ap.add_argument("--ref-rerank-batches", default="8",
                    help="batch sizes for the reference reranker (full logits need batch x length x 151669 floats)")
    ap.add_argument("--also-dtype", default=None,
                    help="also time qwen3-rag in this dtype (e.g. bfloat16 on CPUs with AVX512-BF16 / AMX) and "
                         "report its cosine against the main dtype")
    ap.add_argument("--skip", default="", help="comma list of: reference,st,rerank")
    ap.add_argument("--out", default=None, help="JSON file for the results")
    args = ap.parse_args()
    device = args.device
    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    skip = set(filter(None, args.skip.split(",")))
    shape = C.QWEN3_0_6B if args.shape == "0.6b" else C.TINY

    from qwen3_rag import Embedder, Reranker, format_query

    docs, queries = C.scifact_texts(args.n_docs, args.n_queries)
    texts = docs + [format_query(q, "Given a scientific claim, retrieve documents that support or refute the claim")
                    for q in queries]
    tmp = Path(tempfile.mkdtemp(prefix="bench-models-"))
    tok = C.real_tokenizer(append_endoftext=True)
    t0 = time.perf_counter()
    emb_dir = C.random_checkpoint(tmp / "emb", shape, causal_lm=False, tokenizer=tok, dtype=dtype)
    print(f"built random {args.shape} checkpoint in {time.perf_counter() - t0:.1f}s", flush=True)
    results: dict[str, Any] = {"machine": C.machine(), "settings": {**vars(args), "dtype": dtype,
                               "ref_batch_size": REF_BATCH_SIZE, "st_batch_size": ST_BATCH_SIZE}}
    tdtype = getattr(torch, dtype)

    # ---- embedding -------------------------------------------------------------------------------------------
    ours = Embedder(emb_dir, device=device, dtype=dtype, max_tokens_per_batch=args.max_tokens_per_batch)
    n_tokens = sum(len(ids) for ids in ours.tokenize(texts))
    print(f"{len(texts)} texts, {n_tokens} tokens (mean {n_tokens / len(texts):.0f}, "
          f"max {max(len(i) for i in ours.tokenize(texts))})", flush=True)
    ours.embed_documents(texts[:8])  # load + warm up
    reset_memory()
    ours_vecs, t_ours = C.timed(ours.embed_documents, texts)
    rows = [{"implementation": "qwen3-rag Embedder", "seconds": t_ours, "tokens/s": n_tokens / t_ours,
             "peak GiB": peak_memory()}]
    attn = ours._runner.model.config._attn_implementation
    del ours
    reset_memory()
    if args.also_dtype:
        other = Embedder(emb_dir, device=device, dtype=args.also_dtype,
                         max_tokens_per_batch=args.max_tokens_per_batch)
        other.embed_documents(texts[:8])
        reset_memory()
        other_vecs, t_other = C.timed(other.embed_documents, texts)
        rows.append({"implementation": f"qwen3-rag Embedder, {args.also_dtype}", "seconds": t_other,
                     "tokens/s": n_tokens / t_other, "peak GiB": peak_memory(),
                     "min cosine vs ours": float((ours_vecs * other_vecs).sum(1).min())})
        del other
        reset_memory()

    if "reference" not in skip:
        from transformers import AutoModel, AutoTokenizer

        ref_tok = AutoTokenizer.from_pretrained(emb_dir, padding_side="left")
        ref_model = AutoModel.from_pretrained(emb_dir, dtype=tdtype, attn_implementation=attn).to(device).eval()
        reference_embed(ref_model, ref_tok, texts[:8], REF_BATCH_SIZE, device)
        reset_memory()
        ref_vecs, t_ref = C.timed(reference_embed, ref_model, ref_tok, texts, REF_BATCH_SIZE, device)
        cos = float((ours_vecs * ref_vecs).sum(1).min())
        rows.append({"implementation": f"model-card reference (batch {REF_BATCH_SIZE}, corpus order)",
                     "seconds": t_ref, "tokens/s": n_tokens / t_ref, "peak GiB": peak_memory(),
                     "min cosine vs ours": cos})
        del ref_model
        reset_memory()

    if "st" not in skip:
        from sentence_transformers import SentenceTransformer, models

        transformer = models.Transformer(emb_dir, model_args={"dtype": tdtype, "attn_implementation": attn},
                                         tokenizer_args={"padding_side": "left"}, max_seq_length=8192)
        pooling = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="lasttoken")
        st = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device=device)
        st.encode(texts[:8], batch_size=ST_BATCH_SIZE)
        reset_memory()
        st_vecs, t_st = C.timed(st.encode, texts, batch_size=ST_BATCH_SIZE, convert_to_numpy=True)
        cos = float((ours_vecs * st_vecs).sum(1).min())
        rows.append({"implementation": f"sentence-transformers (batch {ST_BATCH_SIZE})", "seconds": t_st,
                     "tokens/s": n_tokens / t_st, "peak GiB": peak_memory(), "min cosine vs ours": cos})
        del st
        reset_memory()

    peak = next((v for k, v in PEAK_TFLOPS.items() if k in results["machine"].get("gpu", "")), None)
    for r in rows:
        r["speed vs ours"] = rows[0]["tokens/s"] / r["tokens/s"]
        if peak and args.shape == "0.6b":
            r["MFU"] = r["tokens/s"] * C.GFLOP_PER_TOKEN_0_6B * 1e9 / (peak * 1e12)
    print(f"\nEmbedding, {args.shape} shape, {dtype}, {attn}, {device}:")
    results["embedding"] = {"texts": len(texts), "tokens": n_tokens, "attention": attn, "rows": rows,
                            "table": C.print_table(rows, ["implementation", "seconds", "tokens/s", "speed vs ours",
                                                          "MFU", "peak GiB", "min cosine vs ours"])}

    # ---- reranking -------------------------------------------------------------------------------------------
    if "rerank" not in skip:
        rr_dir = C.random_checkpoint(tmp / "rr", shape, causal_lm=True, tokenizer=C.real_tokenizer(False),
                                     dtype=dtype, seed=1)
        if args.candidate_kind == "chunks":
            from qwen3_rag import Chunker, Document

            chunker = Chunker(tokenizer=C.real_tokenizer(False))
            cands = [c.text for i, d in enumerate(C.scifact_texts(args.candidates)[0])
                     for c in chunker.chunk(Document(id=str(i), text=d))][: args.candidates]
        else:
            cands = C.scifact_texts(args.candidates)[0]
        pairs = [(q, d) for q in queries[: args.rerank_queries] for d in cands]
        rr = Reranker(rr_dir, device=device, dtype=dtype, max_tokens_per_batch=args.max_tokens_per_batch)
        rr.score(pairs[0][0], [d for _, d in pairs[:4]])
        reset_memory()
        ours_scores, t_rr = C.timed(rr.score_pairs, pairs)
        n_rr_tokens = sum(len(rr.tokenize(q, d)) for q, d in pairs)
        rrows = [{"implementation": "qwen3-rag Reranker", "seconds": t_rr, "pairs/s": len(pairs) / t_rr,
                  "tokens/s": n_rr_tokens / t_rr, "peak GiB": peak_memory()}]
        rr.share_prefix = False  # the same model, every pair computed in full: what sharing the prefix saves
        reset_memory()
        full_scores, t_full = C.timed(rr.score_pairs, pairs)
        rrows.append({"implementation": "qwen3-rag Reranker, share_prefix=False", "seconds": t_full,
                      "pairs/s": len(pairs) / t_full, "tokens/s": n_rr_tokens / t_full, "peak GiB": peak_memory(),
                      "max |score diff|": float(np.max(np.abs(np.array(ours_scores) - np.array(full_scores))))})
        del rr
        reset_memory()
        if args.also_dtype:
            rr2 = Reranker(rr_dir, device=device, dtype=args.also_dtype, max_tokens_per_batch=args.max_tokens_per_batch)
            rr2.score(pairs[0][0], [d for _, d in pairs[:4]])
            other_scores, t_rr2 = C.timed(rr2.score_pairs, pairs)
            rrows.append({"implementation": f"qwen3-rag Reranker, {args.also_dtype}", "seconds": t_rr2,
                          "pairs/s": len(pairs) / t_rr2, "tokens/s": n_rr_tokens / t_rr2,
                          "max |score diff|": float(np.max(np.abs(np.array(ours_scores) - np.array(other_scores))))})
            del rr2
            reset_memory()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        ref_tok = AutoTokenizer.from_pretrained(rr_dir, padding_side="left")
        ref_model = AutoModelForCausalLM.from_pretrained(rr_dir, dtype=tdtype, attn_implementation=attn)
        ref_model = ref_model.to(device).eval()
        for bs in [int(x) for x in args.ref_rerank_batches.split(",")]:
            reference_rerank(ref_model, ref_tok, pairs[:4], bs, device)
            reset_memory()
            ref_scores, t_ref = C.timed(reference_rerank, ref_model, ref_tok, pairs, bs, device)
            rrows.append({"implementation": f"model-card reference (batch {bs}, full logits)", "seconds": t_ref,
                          "pairs/s": len(pairs) / t_ref, "tokens/s": n_rr_tokens / t_ref,
                          "peak GiB": peak_memory(),
                          "max |score diff|": float(np.max(np.abs(np.array(ours_scores) - np.array(ref_scores))))})
        for r in rrows:
            r["speed vs ours"] = rrows[0]["pairs/s"] / r["pairs/s"]
        print(f"\nReranking, {len(pairs)} pairs ({args.rerank_queries} x {len(cands)}), {args.shape}, {dtype}:")
        results["reranking"] = {"pairs": len(pairs), "tokens": n_rr_tokens, "rows": rrows,
                                "table": C.print_table(rrows, ["implementation", "seconds", "pairs/s", "tokens/s",
                                                               "speed vs ours", "peak GiB", "max |score diff|"])}
    if args.out:
        C.write_results(args.out, **results)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
