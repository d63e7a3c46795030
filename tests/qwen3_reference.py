"""Plain implementations of the published Qwen3 algorithms (model-card code): one padded batch, full logits."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from qwen3_rag.retrieval.prompts import RERANKER_PREFIX, RERANKER_SUFFIX


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    left_padding = mask[:, -1].sum() == mask.shape[0]
    if left_padding:
        return hidden[:, -1]
    lengths = mask.sum(dim=1) - 1
    return hidden[torch.arange(hidden.shape[0]), lengths]


def reference_embed(model_dir: str, texts: list[str], max_length: int = 8192, dim: int | None = None) -> np.ndarray:
    """The model card's transformers snippet, with a tokenizer that appends <|endoftext|> itself."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    batch = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch)
    emb = last_token_pool(out.last_hidden_state, batch["attention_mask"])
    if dim is not None:
        emb = emb[:, :dim]
    return F.normalize(emb, p=2, dim=1).numpy()


def reference_rerank(
    model_dir: str, pairs: list[tuple[str, str]], instruction: str, max_length: int = 8192
) -> list[float]:
    """The model card's reranker snippet: full logits, log-softmax over [no, yes]."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok: Any = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    yes, no = tok.convert_tokens_to_ids("yes"), tok.convert_tokens_to_ids("no")
    prefix = tok.encode(RERANKER_PREFIX, add_special_tokens=False)
    suffix = tok.encode(RERANKER_SUFFIX, add_special_tokens=False)
    bodies = [f"<Instruct>: {instruction}\n<Query>: {q}\n<Document>: {d}" for q, d in pairs]
    enc = tok(bodies, padding=False, truncation="longest_first", return_attention_mask=False,
              max_length=max_length - len(prefix) - len(suffix))
    enc["input_ids"] = [prefix + ids + suffix for ids in enc["input_ids"]]
    batch = tok.pad(enc, padding=True, return_tensors="pt", max_length=max_length)
    with torch.no_grad():
        logits = model(**batch).logits[:, -1, :]
    scores = torch.stack([logits[:, no], logits[:, yes]], dim=1)
    return torch.log_softmax(scores, dim=1)[:, 1].exp().tolist()
