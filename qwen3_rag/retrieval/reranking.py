"""Qwen3-Reranker: the exact yes/no relevance probability, computed from two rows of the LM head."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from qwen3_rag.retrieval._runner import RunnerFacade, TransformerRunner, check_texts, positions_from_mask
from qwen3_rag.retrieval.prompts import (
    RERANKER_NO,
    RERANKER_PREFIX,
    RERANKER_SUFFIX,
    RERANKER_YES,
    format_reranker_body,
    resolve_instruction,
)
from qwen3_rag.types import RerankResult

logger = logging.getLogger(__name__)

DEFAULT_RERANKER_MODEL = "Qwen/Qwen3-Reranker-0.6B"


class Reranker(RunnerFacade):
    """Score (query, document) pairs with Qwen3-Reranker: P("yes") against "no" at the last position.

    The input is the fixed system prefix, ``<Instruct>: ...\\n<Query>: ...\\n<Document>: ...``, and the fixed
    assistant suffix with an empty think block. Only the body is truncated (the document's tail goes), so the prefix
    and suffix always survive. The score is ``sigmoid(h . (W[yes] - W[no]))`` from the last hidden state ``h`` and
    the two LM-head rows: identical to the softmax over the full-vocabulary logits, without computing them.

    Args:
        model: A hub id or a local directory of a Qwen3-Reranker (a Qwen3 causal LM).
        device: ``"auto"`` or an explicit device.
        dtype: ``"auto"``, ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        max_length: Tokens per pair, prefix and suffix included (8192 as the reference code).
        instruction: Default instruction (text or a name from :data:`qwen3_rag.TASKS`).
        batch_size: Cap on pairs per forward pass.
        max_tokens_per_batch: Padded tokens per forward pass (default 65536 on CUDA, 2048 on CPU).
        show_progress: Show a tqdm progress bar.
        revision: Hub revision.
        attn_implementation: Override the attention kernel.
        compile: Run the model through ``torch.compile(dynamic=True)`` (faster on GPUs after a one-time compile).

    Example:
        >>> rr = Reranker("Qwen/Qwen3-Reranker-0.6B")                              # doctest: +SKIP
        >>> rr.rerank("capital of China?", ["Beijing is the capital.", "Gravity."])  # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_RERANKER_MODEL,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        max_length: int = 8192,
        instruction: str | None = None,
        batch_size: int | None = None,
        max_tokens_per_batch: int | None = None,
        show_progress: bool = False,
        revision: str | None = None,
        attn_implementation: str | None = None,
        compile: bool = False,
    ) -> None:
        self._runner = _RerankerRunner(
            model,
            device=device,
            dtype=dtype,
            batch_size=batch_size,
            max_tokens_per_batch=max_tokens_per_batch,
            show_progress=show_progress,
            revision=revision,
            attn_implementation=attn_implementation,
            compile=compile,
        )
        self.model_id = self._runner.model_id
        if not isinstance(max_length, int) or max_length < 64:
            raise ValueError(f"max_length must be an int >= 64 (prefix and suffix alone take 48 tokens), "
                             f"got {max_length!r}")
        self.max_length = max_length
        self.instruction = resolve_instruction(instruction)
        self._prefix_ids: list[int] | None = None
        self._suffix_ids: list[int] | None = None

    def __repr__(self) -> str:
        return f"Reranker(model={self.model_id!r}, max_length={self.max_length}, device={str(self.device)!r})"

    # -- public API ----------------------------------------------------------------------------------------------
    def score(self, query: str, documents: Sequence[str], instruction: str | None = None) -> list[float]:
        """Relevance probabilities in [0, 1] of each document for ``query``, in input order.

        Raises:
            TypeError: ``query`` is not a str, or ``documents`` is not a list of str.
        """
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        docs = check_texts(documents, "documents")
        task = resolve_instruction(instruction, self.instruction)
        return self._score([format_reranker_body(query, d, task) for d in docs])

    def score_pairs(self, pairs: Sequence[tuple[str, str]], instruction: str | None = None) -> list[float]:
        """Relevance probabilities of (query, document) pairs, batched across queries."""
        task = resolve_instruction(instruction, self.instruction)
        bodies = []
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise TypeError(f"pairs[{i}] must be a (query, document) tuple of two str, got {pair!r:.80}")
            bodies.append(format_reranker_body(pair[0], pair[1], task))
        return self._score(bodies)

    def rerank(
        self, query: str, documents: Sequence[str], top_n: int | None = None, instruction: str | None = None
    ) -> list[RerankResult]:
        """Documents sorted by relevance (ties keep input order), at most ``top_n`` of them.

        Returns:
            RerankResult(index=position in ``documents``, score, document) for each kept document.
        """
        if top_n is not None and (not isinstance(top_n, int) or top_n < 0):
            raise ValueError(f"top_n must be a non-negative int or None, got {top_n!r}")
        docs = check_texts(documents, "documents")
        scores = self.score(query, docs, instruction)
        order = sorted(range(len(docs)), key=lambda i: -scores[i])
        if top_n is not None:
            order = order[:top_n]
        return [RerankResult(index=i, score=scores[i], document=docs[i]) for i in order]

    def tokenize(self, query: str, document: str, instruction: str | None = None) -> list[int]:
        """The exact token ids the model sees for one pair."""
        task = resolve_instruction(instruction, self.instruction)
        return self._encode([format_reranker_body(query, document, task)])[0]

    # -- internals -----------------------------------------------------------------------------------------------
    def _affixes(self) -> tuple[list[int], list[int]]:
        if self._prefix_ids is None or self._suffix_ids is None:
            tok = self.tokenizer
            self._prefix_ids = list(tok(RERANKER_PREFIX, add_special_tokens=False)["input_ids"])
            self._suffix_ids = list(tok(RERANKER_SUFFIX, add_special_tokens=False)["input_ids"])
        return self._prefix_ids, self._suffix_ids

    def _encode(self, bodies: list[str]) -> list[list[int]]:
        if not bodies:
            return []
        prefix, suffix = self._affixes()
        budget = self.max_length - len(prefix) - len(suffix)
        enc = self.tokenizer(bodies, add_special_tokens=False, truncation=True, max_length=budget,
                             return_attention_mask=False, verbose=False)
        return [[*prefix, *ids, *suffix] for ids in enc["input_ids"]]

    def _score(self, bodies: list[str]) -> list[float]:
        out = np.empty((len(bodies), 1), dtype=np.float32)
        self._runner._run_batches(self._encode(bodies), self._runner.forward, out, desc="reranking")
        return [float(x) for x in out[:, 0]]


class _RerankerRunner(TransformerRunner):
    _head: torch.Tensor

    def _load_model(self) -> Any:
        from transformers import AutoModelForCausalLM

        lm = AutoModelForCausalLM.from_pretrained(self._path, **self._load_kwargs())
        tok = self.tokenizer
        yes_id, no_id = tok.convert_tokens_to_ids(RERANKER_YES), tok.convert_tokens_to_ids(RERANKER_NO)
        for name, token_id in (("yes", yes_id), ("no", no_id)):
            if token_id is None or token_id == tok.unk_token_id:
                raise ValueError(f"the tokenizer of {self.model_id!r} has no single token {name!r}; "
                                 "is this a Qwen3-Reranker?")
        head = lm.get_output_embeddings().weight
        # Only rows "no" and "yes" of the LM head are ever needed; keep a copy of them and let the rest go
        # (for untied checkpoints that frees vocab x hidden weights).
        self._head = head[[no_id, yes_id]].detach().clone().to(self.device)
        base = lm.get_decoder() if hasattr(lm, "get_decoder") else lm.model
        return base.to(self.device).eval()

    def forward(self, sequences: list[Sequence[int]]) -> torch.Tensor:
        model = self.model
        ids, mask = self._device_batch(sequences, left=True)
        hidden = model(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask)).last_hidden_state
        logits = hidden[:, -1] @ self._head.T  # (batch, 2): [no, yes]
        logits = logits.float()
        return torch.sigmoid(logits[:, 1] - logits[:, 0]).unsqueeze(1)
