"""Qwen3-Reranker: the exact yes/no relevance probability, computed from two rows of the LM head."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qwen3_rag.retrieval._runner import (
    RunnerFacade,
    TransformerRunner,
    check_texts,
    check_unicode,
    positions_from_mask,
)
from qwen3_rag.retrieval.prompts import (
    DEFAULT_RERANKER_MODEL,
    RERANKER_NO,
    RERANKER_PREFIX,
    RERANKER_SUFFIX,
    RERANKER_YES,
    format_reranker_body,
    resolve_instruction,
)
from qwen3_rag.types import RerankResult

logger = logging.getLogger(__name__)



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
        share_prefix: Compute the tokens that all of a query's candidates share (system prompt, instruction, query)
            once and reuse their keys and values for every candidate; the scores are unchanged. Used with the
            ``sdpa`` and ``eager`` attention kernels, without ``compile``.

    Raises:
        ValueError: the model is not a causal language model with its language-model head (an embedding or
            encoder checkpoint), or (when the weights load) its tokenizer has no single "yes" / "no" tokens.

    Example:
        >>> rr = Reranker("Qwen/Qwen3-Reranker-0.6B")                              # doctest: +SKIP
        >>> rr.rerank("capital of China?", ["Beijing is the capital.", "Gravity."])  # doctest: +SKIP
    """

    _runner: _RerankerRunner

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
        share_prefix: bool = True,
    ) -> None:
        self._runner = _RerankerRunner(
            model, device=device, dtype=dtype, batch_size=batch_size, max_tokens_per_batch=max_tokens_per_batch,
            show_progress=show_progress, revision=revision, attn_implementation=attn_implementation, compile=compile)
        self.model_id = self._runner.model_id
        check_causal_lm(self._runner.config, self.model_id, self._runner._path if self._runner._is_local else None)
        if not isinstance(max_length, int) or max_length < 64:
            raise ValueError(f"max_length must be an int >= 64 (prefix and suffix alone take 48 tokens), "
                             f"got {max_length!r}")
        self.max_length = max_length
        self.instruction = resolve_instruction(instruction)
        self.share_prefix = bool(share_prefix)
        self._prefix_ids: list[int] | None = None
        self._suffix_ids: list[int] | None = None

    def __repr__(self) -> str:
        return f"Reranker(model={self.model_id!r}, max_length={self.max_length}, device={str(self.device)!r})"

    # -- public API ----------------------------------------------------------------------------------------------
    def score(self, query: str, documents: Sequence[str], instruction: str | None = None) -> list[float]:
        """Relevance probabilities in [0, 1] of each document for ``query``, in input order.

        Raises:
            TypeError: ``query`` is not a str, or ``documents`` is not a list of str.
            ValueError: a text is not valid Unicode (a lone surrogate), naming which.
        """
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        check_unicode(query, "query")
        docs = check_texts(documents, "documents")
        task = resolve_instruction(instruction, self.instruction)
        return self._score([format_reranker_body(query, d, task) for d in docs], [0] * len(docs))

    def score_pairs(self, pairs: Sequence[tuple[str, str]], instruction: str | None = None) -> list[float]:
        """Relevance probabilities of (query, document) pairs, batched across queries."""
        task = resolve_instruction(instruction, self.instruction)
        bodies, groups = [], []
        query_group: dict[str, int] = {}
        for i, pair in enumerate(pairs):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
                raise TypeError(f"pairs[{i}] must be a (query, document) tuple of two str, got {pair!r:.80}")
            check_unicode(pair[0], f"pairs[{i}][0]")
            check_unicode(pair[1], f"pairs[{i}][1]")
            bodies.append(format_reranker_body(pair[0], pair[1], task))
            groups.append(query_group.setdefault(pair[0], len(query_group)))
        return self._score(bodies, groups)

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

    def _score(self, bodies: list[str], groups: list[int]) -> list[float]:
        """Score formatted bodies; ``groups[i]`` names the query of body ``i`` (the candidates that share a prefix)."""
        sequences = self._encode(bodies)
        out = np.empty((len(sequences), 1), dtype=np.float32)
        runner = self._runner
        if self.share_prefix and runner.can_share_prefix():
            shared, alone = split_by_shared_prefix(sequences, groups)
        else:
            shared, alone = [], list(range(len(sequences)))
        for rows, length in shared:
            out[rows] = runner.run_with_prefix(sequences[rows[0]][:length], [sequences[i][length:] for i in rows])
        if alone:
            out[alone] = runner.run([sequences[i] for i in alone])
        return [float(x) for x in out[:, 0]]


def check_causal_lm(config: Any, model_id: str, local_path: str | None) -> None:
    """Refuse a model that cannot be a Qwen3-Reranker: one whose config names no causal-LM architecture (an
    encoder such as BERT, or a bare ``Qwen3Model``), or a local checkpoint whose weights hold no language-model
    head (an embedding model saved without one, whose config may still say ``*ForCausalLM``).

    Raises:
        ValueError: naming what the model is.
    """
    archs = [str(a) for a in getattr(config, "architectures", None) or []]
    kind = f"{', '.join(archs) or 'no architecture'} (model_type {getattr(config, 'model_type', '?')!r})"
    if not any(a.endswith("ForCausalLM") for a in archs):
        raise ValueError(
            f"{model_id!r} is {kind}, not a causal language model; a Reranker scores with a Qwen3-Reranker "
            "(a causal LM that answers yes or no), e.g. 'Qwen/Qwen3-Reranker-0.6B'. Embedding models go to Embedder"
        )
    if local_path is None:
        return
    import transformers

    prefix = getattr(getattr(transformers, archs[0], None), "base_model_prefix", "model")
    names = _tensor_names(Path(local_path))
    if names and not any(name.startswith((f"{prefix}.", "lm_head.")) for name in names):
        raise ValueError(
            f"{model_id!r} says {kind}, but its weights are a bare transformer without a language-model head "
            f"(tensors named like {min(names)!r}, not {prefix}.* / lm_head.*), as an embedding checkpoint is; "
            "a Reranker needs a Qwen3-Reranker checkpoint, e.g. 'Qwen/Qwen3-Reranker-0.6B'"
        )


def _tensor_names(root: Path) -> set[str]:
    """The tensor names in a directory's safetensors files, read from their headers."""
    names: set[str] = set()
    for file in sorted(root.glob("*.safetensors")):
        with file.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size <= 100 << 20:
                raise ValueError(f"{str(file)!r} is not a safetensors file (header size {size})")
            header = json.loads(f.read(size))
        names.update(k for k in header if k != "__metadata__")
    return names


#: Below this many shared tokens, computing the prefix separately saves less than it costs.
MIN_SHARED_PREFIX = 16
#: Queries with fewer candidates are batched with the other queries' pairs instead (a query's shared run is its
#: own forward passes, so tiny groups would trade big batches for a few saved tokens).
MIN_SHARED_GROUP = 4


def split_by_shared_prefix(
    sequences: Sequence[Sequence[int]], groups: Sequence[int]
) -> tuple[list[tuple[list[int], int]], list[int]]:
    """Which rows run on a shared prefix and which run whole.

    Returns:
        ``(shared, alone)``: ``shared`` holds ``(rows, prefix length)`` for each group worth sharing (at least
        ``MIN_SHARED_GROUP`` rows with at least ``MIN_SHARED_PREFIX`` common tokens); ``alone`` the other rows.
    """
    members: dict[int, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    shared, alone = [], []
    for rows in members.values():
        length = common_prefix_length([sequences[i] for i in rows]) if len(rows) >= MIN_SHARED_GROUP else 0
        if length >= MIN_SHARED_PREFIX:
            shared.append((rows, length))
        else:
            alone.extend(rows)
    return shared, alone


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Tokens at the start of every sequence, leaving at least one token of each to compute (the scored one)."""
    first = sequences[0]
    limit = min(len(s) for s in sequences) - 1
    n = 0
    while n < limit and all(s[n] == first[n] for s in sequences):
        n += 1
    return n


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
        ids, mask = self._device_batch(sequences, left=True)
        model = self.model
        positions = positions_from_mask(mask)
        hidden = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                       **self.forward_kwargs).last_hidden_state
        return self._yes_probability(hidden[:, -1])

    def _yes_probability(self, last: torch.Tensor) -> torch.Tensor:
        logits = (last @ self._head.T).float()  # (batch, 2): [no, yes]
        return torch.sigmoid(logits[:, 1] - logits[:, 0]).unsqueeze(1)

    # -- shared prefix -------------------------------------------------------------------------------------------
    def can_share_prefix(self) -> bool:
        """Whether candidates may reuse a prefix's keys and values: tested with the sdpa and eager kernels only."""
        self.model  # noqa: B018 - loading it resolves the attention kernel
        return not self.compile and self.attn_implementation in ("sdpa", "eager")

    def run(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """The yes-probability of each whole sequence, shape (n, 1)."""
        out = np.empty((len(sequences), 1), dtype=np.float32)
        self.run_batches(sequences, self.forward, out, desc="reranking")
        return out

    def run_with_prefix(self, prefix: Sequence[int], rests: Sequence[Sequence[int]]) -> np.ndarray:
        """The yes-probability of ``prefix + rests[i]`` for each i, shape (n, 1), running the prefix once.

        The prefix's keys and values (one row) are computed first and repeated for every row of each batch of
        remainders; the remainders are left-padded after the prefix, and their positions continue from its end,
        so every token sees exactly the context it would see in the full sequence.
        """
        from transformers import DynamicCache

        model = self.model
        cache_argument = self.cache_argument
        with torch.inference_mode():
            ids = torch.tensor([list(prefix)], dtype=torch.long, device=self.device)
            cache = DynamicCache()
            model(input_ids=ids, use_cache=True, **{cache_argument: cache})
            prefix_kv = _cache_tensors(cache)

        def forward(sequences: list[Sequence[int]]) -> torch.Tensor:
            ids, mask = self._device_batch(sequences, left=True)
            rows = ids.shape[0]
            batch_cache = DynamicCache()
            for layer, (keys, values) in enumerate(prefix_kv):
                batch_cache.update(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1), layer)
            full_mask = torch.cat([mask.new_ones(rows, len(prefix)), mask], dim=1)
            positions = positions_from_mask(mask) + len(prefix)
            hidden = model(input_ids=ids, attention_mask=full_mask, position_ids=positions, use_cache=False,
                           **{cache_argument: batch_cache}).last_hidden_state
            return self._yes_probability(hidden[:, -1])

        out = np.empty((len(rests), 1), dtype=np.float32)
        self.run_batches(rests, forward, out, desc="reranking")
        return out


def _cache_tensors(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(keys, values) per layer of a DynamicCache, across transformers versions."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))
