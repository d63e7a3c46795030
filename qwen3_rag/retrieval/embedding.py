"""Qwen3-Embedding (and other sentence-embedding models) as exact, fast text -> unit vectors."""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qwen3_rag.retrieval import _loading
from qwen3_rag.retrieval._runner import RunnerFacade, TransformerRunner, check_texts, positions_from_mask
from qwen3_rag.retrieval.prompts import (
    DEFAULT_EMBEDDING_MODEL,
    ENDOFTEXT,
    QUERY_TEMPLATE,
    format_query,
    resolve_instruction,
)

logger = logging.getLogger(__name__)

QWEN_MAX_LENGTH = 8192  # what the official code and evaluation truncate at
MIN_DIM = 32  # smallest Matryoshka dimension Qwen3-Embedding was trained for
_GROUP = 16384  # texts tokenized at a time: bounds memory for very large inputs


class Embedder(RunnerFacade):
    """Turn texts into L2-normalised embeddings, exactly as Qwen3-Embedding's reference code does, fast.

    Queries are formatted ``Instruct: {instruction}\\nQuery:{query}``; documents are embedded raw. Every input ends in
    ``<|endoftext|>`` (appended here, never twice, also after truncation), the embedding is the last token's final
    hidden state, sliced to ``dim`` (Matryoshka) and L2-normalised.

    Other models work too: a directory with a sentence-transformers pooling config (``modules.json``) is embedded with
    its own pooling (mean, CLS or last token) and normalisation, e.g. all-MiniLM-L6-v2.

    Weights load on first use; constructing an Embedder only reads the model config.

    Args:
        model: A hub id or a local model directory.
        device: ``"auto"`` (CUDA, then MPS, then CPU), or an explicit device that must exist.
        dtype: ``"auto"`` (bf16 on CUDA; on CPU bf16 only for a bf16 checkpoint where native bf16 measured faster),
            or ``"float32"`` / ``"bfloat16"`` / ``"float16"``.
        dim: Output dimension (Matryoshka), from 32 to the hidden size; ``None`` for the full size. Models other
            than Qwen3-Embedding were usually not trained for it: truncating them logs a warning.
        max_length: Tokens per input including the final ``<|endoftext|>``; ``None`` gives 8192 for Qwen3 and the
            sentence-transformers ``max_seq_length`` (else the model's position limit) for other models.
        instruction: Default query instruction (text or a name from :data:`qwen3_rag.TASKS`).
        batch_size: Cap on rows per forward pass (``None``: only the token budget limits it).
        max_tokens_per_batch: Padded tokens per forward pass (default 65536 on CUDA, 2048 on CPU).
        show_progress: Show a tqdm progress bar.
        pooling: Override the pooling (``"last_token"``, ``"mean"``, ``"cls"``); default from the model.
        normalize: Override L2 normalisation; default True for Qwen3 and as configured otherwise.
        revision: Hub revision.
        attn_implementation: Override the attention kernel (default flash_attention_2 on CUDA when installed,
            else sdpa).
        compile: Run the model through ``torch.compile(dynamic=True)``. On a GPU this fuses the memory-bound
            elementwise work, after a one-time compilation of about two minutes: worth it for large ingestion
            jobs, not for queries (see BENCHMARKS.md, 1. Embedding).

    Raises:
        ValueError: The model cannot be found, ``dim`` is out of range, or an argument is invalid.

    Example:
        >>> emb = Embedder("Qwen/Qwen3-Embedding-0.6B", dim=256)            # doctest: +SKIP
        >>> q = emb.embed_queries(["What is the capital of China?"])       # doctest: +SKIP
        >>> d = emb.embed_documents(["The capital of China is Beijing."])  # doctest: +SKIP
        >>> float(q @ d.T)                                                 # doctest: +SKIP
    """

    def __init__(
        self,
        model: str | os.PathLike[str] = DEFAULT_EMBEDDING_MODEL,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        dim: int | None = None,
        max_length: int | None = None,
        instruction: str | None = None,
        batch_size: int | None = None,
        max_tokens_per_batch: int | None = None,
        show_progress: bool = False,
        pooling: _loading.Pooling | None = None,
        normalize: bool | None = None,
        revision: str | None = None,
        attn_implementation: str | None = None,
        compile: bool = False,
    ) -> None:
        self._runner = _EmbeddingRunner(
            model, device=device, dtype=dtype, batch_size=batch_size, max_tokens_per_batch=max_tokens_per_batch,
            show_progress=show_progress, revision=revision, attn_implementation=attn_implementation, compile=compile)
        config = self._runner.config
        self.model_id = self._runner.model_id
        self.model_type: str = getattr(config, "model_type", "")
        self.is_qwen3 = self.model_type == "qwen3"
        st = _loading.read_sentence_transformers_config(self._runner._path) if self._runner._is_local else None
        if pooling is not None and pooling not in ("last_token", "mean", "cls"):
            raise ValueError(f"pooling={pooling!r} is not one of 'last_token', 'mean', 'cls'")
        default_pooling: _loading.Pooling = "last_token" if self.is_qwen3 else "mean"
        self.pooling: _loading.Pooling = pooling or (st.pooling if st else default_pooling)
        self.normalize = normalize if normalize is not None else (True if self.is_qwen3 or st is None else st.normalize)
        self.hidden_size = int(getattr(config, "hidden_size", 0) or getattr(config, "dim", 0))
        if dim is not None:
            check_dim(dim, self.hidden_size, self.model_id)
        self.dim = dim or self.hidden_size
        if self.dim < self.hidden_size and not self.is_qwen3:
            logger.warning(
                "dim=%d truncates the %d-dimensional vectors of %r (model_type %r), which was not trained for "
                "Matryoshka truncation (Qwen3-Embedding was): expect worse retrieval than its full size; "
                "pass dim=None unless you measured it", self.dim, self.hidden_size, self.model_id, self.model_type)
        self._runner.pooling = self.pooling
        self._runner.out_dim = self.dim
        position_limit = getattr(config, "max_position_embeddings", None)
        if max_length is None:
            if self.is_qwen3:
                max_length = QWEN_MAX_LENGTH
            elif st is not None and st.max_seq_length:
                max_length = int(st.max_seq_length)
            else:
                max_length = int(position_limit or 512)
        if not isinstance(max_length, int) or max_length < 2:
            raise ValueError(f"max_length must be an int >= 2, got {max_length!r}")
        if position_limit and max_length > position_limit:
            logger.info("max_length %d exceeds the model's %d positions; using %d", max_length, position_limit,
                        position_limit)
            max_length = int(position_limit)
        self.max_length = max_length
        self.instruction = resolve_instruction(instruction)
        self.query_prompt = self._st_query_prompt() if not self.is_qwen3 else None

    # -- properties: tokenizer, device, dtype, model, show_progress come from RunnerFacade ------------------------
    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable identity of this embedder, for index manifests."""
        return {
            "model": self.model_id,
            "revision": self._runner.revision,
            "fingerprint": _loading.fingerprint(self._runner._path, self._runner.revision),
            "model_type": self.model_type,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "dim": self.dim,
            "instruction": self.instruction,
            "max_length": self.max_length,
            "query_template": QUERY_TEMPLATE if self.is_qwen3 else (self.query_prompt or ""),
        }

    def same_model(self, fingerprint: str) -> bool:
        """Whether ``fingerprint``, recorded by :meth:`describe` (in an index manifest, by this or an earlier
        version), names this embedder's model; older indexes record a fingerprint of an older scheme, which is
        recomputed by its own formula."""
        return _loading.fingerprint_matches(fingerprint, self._runner._path, self._runner.revision)

    def __repr__(self) -> str:
        return (f"Embedder(model={self.model_id!r}, dim={self.dim}, pooling={self.pooling!r}, "
                f"max_length={self.max_length}, device={str(self.device)!r})")

    # -- public API ----------------------------------------------------------------------------------------------
    def embed_queries(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        """Embed search queries, each prefixed with the instruction (Qwen3) or the model's query prompt.

        Args:
            texts: The queries.
            instruction: Task instruction text or a name from :data:`qwen3_rag.TASKS`; default the Embedder's.

        Returns:
            float32 array of shape ``(len(texts), dim)`` with unit rows, in input order.
        """
        queries = check_texts(texts)
        if self.is_qwen3:
            task = resolve_instruction(instruction, self.instruction)
            queries = [format_query(q, task) for q in queries]
        elif self.query_prompt:
            queries = [self.query_prompt + q for q in queries]
        return self._embed(queries)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed documents (raw text, no prefix). Returns float32 ``(len(texts), dim)``, unit rows, input order."""
        return self._embed(check_texts(texts))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Number of content tokens of each text (without special tokens and without truncation)."""
        items = check_texts(texts)
        if not items:
            return []
        enc = self.tokenizer(items, add_special_tokens=False, return_attention_mask=False, verbose=False)
        return [len(ids) for ids in enc["input_ids"]]

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """The exact token ids the model sees for each text (truncated, ending in ``<|endoftext|>`` for Qwen3)."""
        items = check_texts(texts)
        return self._encode(items)

    def ids_from_content(self, content_ids: Sequence[Sequence[int]]) -> list[list[int]] | None:
        """:meth:`tokenize` for texts whose content tokens are known: the same ids, without tokenizing again.

        ``content_ids[i]`` must be the ids of ``tokenizer(text_i, add_special_tokens=False)`` (what
        :meth:`Chunker.chunk_batch <qwen3_rag.Chunker.chunk_batch>` gives for its chunks); they are truncated as
        :meth:`tokenize` truncates and framed by the model's special tokens (Qwen3: ``<|endoftext|>`` at the end).

        Returns:
            The model's input ids (new lists), or ``None`` when this tokenizer does not add its special tokens as a
            fixed prefix and suffix (then call :meth:`tokenize` on the texts).
        """
        frame = self._frame
        if frame is None:
            return None
        head, tail = frame
        keep = max(0, self.max_length - len(head) - len(tail))
        if self.tokenizer.truncation_side == "left":
            return [[*head, *ids[max(0, len(ids) - keep):], *tail] for ids in content_ids]
        return [[*head, *ids[:keep], *tail] for ids in content_ids]

    def embed_tokenized(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Embed token id lists made by :meth:`tokenize`; the same vectors as embedding the texts.

        Splits the work so that tokenizing can happen elsewhere, e.g. on another thread while this one waits for
        the GPU (pipelined ingestion does that). The model does not touch the tokenizer here.

        Raises:
            ValueError: a sequence is empty or longer than ``max_length``.
        """
        seqs = list(sequences)  # read, never changed
        for i, seq in enumerate(seqs):
            if not seq or len(seq) > self.max_length:
                raise ValueError(f"sequences[{i}] has {len(seq)} tokens; expected 1 to max_length={self.max_length} "
                                 "ids, as tokenize() makes them")
        out = np.empty((len(seqs), self.dim), dtype=np.float32)
        self._runner.run_batches(seqs, self._runner.forward, out, desc="embedding")
        return self._finish(out)

    # -- internals -----------------------------------------------------------------------------------------------
    def _st_query_prompt(self) -> str | None:
        cfg = Path(self._runner._path) / "config_sentence_transformers.json"
        if not (self._runner._is_local and cfg.is_file()):
            return None
        prompts = json.loads(cfg.read_text(encoding="utf-8")).get("prompts") or {}
        return prompts.get("query") or None

    @functools.cached_property
    def _end_id(self) -> int | None:
        """The token every input must end with, appended here (Qwen3: ``<|endoftext|>``); looked up once."""
        if self.pooling != "last_token":
            return None
        tok = self.tokenizer
        token_id = tok.convert_tokens_to_ids(ENDOFTEXT)
        if token_id is None or token_id == tok.unk_token_id:
            token_id = tok.eos_token_id
        return token_id

    @functools.cached_property
    def _frame(self) -> tuple[list[int], list[int]] | None:
        """The ids :meth:`tokenize` puts before and after a text's content tokens (found once, by probing)."""
        if self._end_id is not None:
            return [], [self._end_id]  # what _encode appends
        frames = [self._probe_frame(probe) for probe in ("Frame probe: 1 two 3.", "x")]
        return frames[0] if frames[0] == frames[1] else None

    def _probe_frame(self, text: str) -> tuple[list[int], list[int]] | None:
        content = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        full = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        for k in range(len(full) - len(content) + 1):
            if full[k : k + len(content)] == content:
                return list(full[:k]), list(full[k + len(content):])
        return None

    def _encode(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        tok = self.tokenizer
        end_id = self._end_id
        if end_id is None:
            enc = tok(texts, add_special_tokens=True, truncation=True, max_length=self.max_length,
                      return_attention_mask=False, verbose=False)
            return [list(ids) for ids in enc["input_ids"]]
        # Tokenize the content alone and append the end token ourselves: identical ids whether or not this
        # tokenizer's post-processor appends <|endoftext|>, and never two of them.
        enc = tok(texts, add_special_tokens=False, truncation=True, max_length=self.max_length - 1,
                  return_attention_mask=False, verbose=False)
        return [[*ids, end_id] for ids in enc["input_ids"]]

    def _embed(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), _GROUP):
            group = texts[start:start + _GROUP]
            self._runner.run_batches(self._encode(group), self._runner.forward, out[start:start + len(group)],
                                      desc="embedding")
        return self._finish(out)

    def _finish(self, out: np.ndarray) -> np.ndarray:
        # Matryoshka: forward() already kept the first `dim` values; normalising after the slice is the
        # re-normalisation the model card prescribes.
        if self.normalize and len(out):
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            np.divide(out, np.maximum(norms, 1e-12), out=out)
        return out


def check_dim(dim: object, full: int, model_id: str) -> None:
    """The Matryoshka rule for an output dimension: an int from :data:`MIN_DIM` to the model's ``full`` size.

    Raises:
        ValueError: naming the allowed range.
    """
    if not isinstance(dim, int) or isinstance(dim, bool) or not MIN_DIM <= dim <= full:
        raise ValueError(f"dim={dim!r} is out of range for {model_id!r}: pass an int from {MIN_DIM} to {full} (its "
                         f"hidden size), or None for the full {full}")


class _EmbeddingRunner(TransformerRunner):
    pooling: _loading.Pooling = "last_token"
    out_dim: int = 0

    def _load_model(self) -> Any:
        from transformers import AutoModel

        model = AutoModel.from_pretrained(self._path, **self._load_kwargs())
        return model.to(self.device).eval()

    def forward(self, sequences: list[Sequence[int]]) -> torch.Tensor:
        left = self.pooling == "last_token"
        ids, mask = self._device_batch(sequences, left=left)
        model = self.model
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, **self.forward_kwargs}
        if left:
            kwargs["position_ids"] = positions_from_mask(mask)
        hidden = model(**kwargs).last_hidden_state
        if self.pooling == "last_token":
            pooled = hidden[:, -1]
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).float()
            pooled = (hidden.float() * weights).sum(1) / weights.sum(1).clamp(min=1)
        return pooled[:, : self.out_dim].float()
