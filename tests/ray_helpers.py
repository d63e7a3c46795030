"""What Ray workers import in the tests of distributed ingestion (``tests/`` is on their path): an embedder whose
process dies in its first embedding call, once."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qwen3_rag.retrieval.models import load_embedder


class DiesOnce:
    """The index's embedder, except that the first call to embed anything, in any process, kills its process (no
    cleanup, as a crash or an out-of-memory kill), leaving ``marker`` behind."""

    def __init__(self, record: Mapping[str, Any], marker: str) -> None:
        self._embedder = load_embedder(record=record, device="cpu")
        self._marker = Path(marker)

    # the contract's members, spelled out: a protocol check on Python >= 3.12 does not look through __getattr__
    @property
    def dim(self) -> int:
        return self._embedder.dim

    @property
    def tokenizer(self) -> Any:
        return self._embedder.tokenizer

    @property
    def max_length(self) -> int:
        return self._embedder.max_length

    def describe(self) -> dict[str, Any]:
        return self._embedder.describe()

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self._embedder.tokenize(texts)

    def ids_from_content(self, content_ids: Sequence[Sequence[int]]) -> list[list[int]] | None:
        return self._embedder.ids_from_content(content_ids)

    def embed_queries(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        return self._embedder.embed_queries(texts, instruction)

    def _maybe_die(self) -> None:
        try:
            fd = os.open(self._marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os._exit(1)

    def embed_tokenized(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        self._maybe_die()
        return self._embedder.embed_tokenized(sequences)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self._maybe_die()
        return self._embedder.embed_documents(texts)


def dies_once(record: Mapping[str, Any], *, marker: str) -> DiesOnce:
    return DiesOnce(record, marker)
