"""What Embedder and Reranker share: lazy loading, token-budget batching, padding, out-of-memory retry."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from qwen3_rag.retrieval import _loading, _threads
from qwen3_rag.retrieval.inputs import check_queries, check_texts, check_unicode  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

#: Default padded-token budget of one forward pass, per device type. On CPUs small batches win, the working set
#: staying in cache (on a busy machine too, since the thread count follows the free cores: _threads.py); on GPUs
#: large ones do (BENCHMARKS.md, 1. Embedding and 7. Footprint and CPU under load).
DEFAULT_TOKEN_BUDGET = {"cuda": 65536, "cpu": 2048, "mps": 16384}


def plan_batches(lengths: Sequence[int], max_tokens: int, max_rows: int | None = None) -> list[list[int]]:
    """Group item indices into batches, longest first, so that rows x longest row <= ``max_tokens``.

    Sorting by length makes padding small; the budget keeps memory flat whatever the lengths. A single item longer
    than the budget gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        length = max(int(lengths[i]), 1)
        if current and (
            max(longest, length) * (len(current) + 1) > max_tokens
            or (max_rows is not None and len(current) >= max_rows)
        ):
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, length)
    if current:
        batches.append(current)
    return batches


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int, *, left: bool, pad_to_multiple_of: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token id lists into ``(input_ids, attention_mask)`` int64 tensors."""
    width = max(len(s) for s in sequences)
    if pad_to_multiple_of > 1:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    ids = np.full((len(sequences), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(sequences), width), dtype=np.int64)
    for row, seq in enumerate(sequences):
        n = len(seq)
        if left:
            ids[row, width - n:] = seq
            mask[row, width - n:] = 1
        else:
            ids[row, :n] = seq
            mask[row, :n] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each row's first real token, as if the row were alone."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


class TransformerRunner:
    """Base class: holds the model id, device, dtype and batching settings; loads weights on first use."""

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        device: str | torch.device,
        dtype: str | torch.dtype,
        batch_size: int | None,
        max_tokens_per_batch: int | None,
        show_progress: bool,
        revision: str | None,
        attn_implementation: str | None,
        compile: bool = False,
    ) -> None:
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        if max_tokens_per_batch is not None and (not isinstance(max_tokens_per_batch, int) or max_tokens_per_batch < 1):
            raise ValueError(f"max_tokens_per_batch must be a positive int or None, got {max_tokens_per_batch!r}")
        self.model_id = os.fspath(model)
        self.revision = revision
        self._path, self._is_local = _loading.resolve_model_path(self.model_id)
        self.config = _loading.load_config(self.model_id, revision=revision)
        if self._is_local:
            _loading.check_weight_files(self._path)
        self.device = _loading.resolve_device(device)
        self._dtype_request = dtype
        _loading.check_dtype(dtype)
        self.batch_size = batch_size
        self.max_tokens_per_batch = (max_tokens_per_batch
                                     or DEFAULT_TOKEN_BUDGET.get(self.device.type, DEFAULT_TOKEN_BUDGET["cpu"]))
        self.show_progress = show_progress
        self._attn_request = attn_implementation
        self.compile = bool(compile)
        self._tokenizer: Any = None
        self._model: Any = None
        self._dtype: torch.dtype | None = None
        self._pad_id = 0
        #: Extra forward arguments: ``use_cache=False`` where the model takes it (decoders otherwise keep every
        #: layer's keys and values until the forward returns, memory a one-pass encoder never reads).
        self.forward_kwargs: dict[str, Any] = {}
        self.cache_argument = "past_key_values"
        #: The attention kernel the model was loaded with (set when it loads).
        self.attn_implementation: str | None = None
        #: On a CPU, what keeps torch's threads at the cores other processes leave free (set when the model loads;
        #: None keeps the count fixed).
        self.cpu_threads: _threads.ThreadGovernor | None = None

    # -- loading -------------------------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        """The model's (fast) tokenizer, loaded on first access."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self._path, revision=self.revision)
            if not getattr(tok, "is_fast", False):
                raise ValueError(f"{self.model_id!r} has no fast tokenizer (tokenizer.json); qwen3-rag needs one")
            # looked up now: batches may run on a thread that must not touch the tokenizer
            self._pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
            self._tokenizer = tok
        return self._tokenizer

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (resolved from ``dtype="auto"`` on first use)."""
        if self._dtype is None:
            self._dtype = _loading.resolve_dtype(
                self._dtype_request, self.device, _loading.checkpoint_dtype(self.config)
            )
        return self._dtype

    def _load_kwargs(self) -> dict[str, Any]:
        import transformers

        major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
        dtype_key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
        self.attn_implementation = _loading.attention_implementation(self.device, self.dtype, self._attn_request)
        return {dtype_key: self.dtype, "attn_implementation": self.attn_implementation, "revision": self.revision,
                "use_safetensors": True}  # never a pickle

    def _load_model(self) -> Any:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def forward(self, sequences: list[Sequence[int]]) -> torch.Tensor:  # pragma: no cover - subclasses
        """One batch of token id lists -> one float32 row per sequence."""
        raise NotImplementedError

    @property
    def model(self) -> Any:
        """The torch module that runs (loaded on first access, in eval mode, on ``device``)."""
        if self._model is None:
            logger.info("loading %s on %s as %s", self.model_id, self.device, self.dtype)
            from transformers.utils import logging as hf_logging

            if self.device.type == "cpu":
                _loading.limit_cpu_threads()
                self.cpu_threads = _threads.governor()

            bars_were_on = hf_logging.is_progress_bar_enabled()
            if not self.show_progress:  # transformers draws a "Loading weights" bar on every load
                hf_logging.disable_progress_bar()
            try:
                model = self._load_model()
            finally:
                if bars_were_on:
                    hf_logging.enable_progress_bar()
            params = inspect.signature(model.forward).parameters
            if "use_cache" in params:
                self.forward_kwargs = {"use_cache": False}
            # the argument that takes a KV cache: ``cache`` in recent transformers, ``past_key_values`` before
            self.cache_argument = "cache" if "cache" in params else "past_key_values"
            if self.compile:
                # Fuses the memory-bound elementwise work (RMSNorm upcasts, RoPE) that dominates GPU time;
                # dynamic shapes because every length-sorted batch has its own (rows, length).
                model = torch.compile(model, dynamic=True)
            self._model = model
        return self._model

    # -- running -------------------------------------------------------------------------------------------------
    def _padding_multiple(self) -> int:
        return 8 if self.device.type == "cuda" else 1

    def _device_batch(self, sequences: Sequence[Sequence[int]], *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad ``sequences`` and move ``(input_ids, attention_mask)`` to the device (pinned, async on CUDA)."""
        if self._tokenizer is None:
            self.tokenizer  # noqa: B018 - loads it and its pad id
        ids, mask = pad_batch(sequences, self._pad_id, left=left, pad_to_multiple_of=self._padding_multiple())
        pin = self.device.type == "cuda"
        if pin:
            ids, mask = ids.pin_memory(), mask.pin_memory()
        return ids.to(self.device, non_blocking=pin), mask.to(self.device, non_blocking=pin)

    def run_batches(
        self,
        sequences: Sequence[Sequence[int]],
        forward: Callable[[list[Sequence[int]]], torch.Tensor],
        out: np.ndarray,
        desc: str,
    ) -> None:
        """Run ``forward`` over token-budget batches of ``sequences``, writing row ``i`` of the result to ``out[i]``.

        On CUDA out-of-memory a batch is halved and retried, down to one row.
        """
        if not sequences:
            return
        lengths = [len(s) for s in sequences]
        batches = plan_batches(lengths, self.max_tokens_per_batch, self.batch_size)
        from tqdm.auto import tqdm

        with torch.inference_mode(), tqdm(total=len(sequences), desc=desc, disable=not self.show_progress) as bar:
            for batch in batches:
                if self.cpu_threads is not None:
                    self.cpu_threads.update()
                self._run_one(batch, sequences, forward, out)
                bar.update(len(batch))

    def _run_one(
        self,
        batch: list[int],
        sequences: Sequence[Sequence[int]],
        forward: Callable[[list[Sequence[int]]], torch.Tensor],
        out: np.ndarray,
    ) -> None:
        try:
            result = forward([sequences[i] for i in batch])
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise RuntimeError(
                    f"out of memory on {self.device} for a single input of {len(sequences[batch[0]])} tokens; "
                    "lower max_length or use a device with more memory"
                ) from None
            torch.cuda.empty_cache()
            half = len(batch) // 2
            self.max_tokens_per_batch = max(1, self.max_tokens_per_batch // 2)
            logger.warning("out of memory with %d rows; retrying in halves (token budget now %d)",
                           len(batch), self.max_tokens_per_batch)
            self._run_one(batch[:half], sequences, forward, out)
            self._run_one(batch[half:], sequences, forward, out)
            return
        out[batch] = result.float().cpu().numpy()


class RunnerFacade:
    """The properties Embedder and Reranker both expose over their runner."""

    _runner: TransformerRunner

    @property
    def tokenizer(self) -> Any:
        """The model's fast tokenizer (loaded on first access)."""
        return self._runner.tokenizer

    @property
    def device(self) -> torch.device:
        return self._runner.device

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (``dtype="auto"`` is resolved on first access)."""
        return self._runner.dtype

    @property
    def model(self) -> Any:
        """The underlying transformers module (loads the weights)."""
        return self._runner.model

    @property
    def show_progress(self) -> bool:
        return self._runner.show_progress

    @show_progress.setter
    def show_progress(self, value: bool) -> None:
        self._runner.show_progress = bool(value)
