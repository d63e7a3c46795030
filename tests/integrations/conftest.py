"""Fixtures of the framework adapter tests: a small corpus indexed with the hash embedder."""

from __future__ import annotations

import inspect
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent

CORPUS = [
    (
        "faiss",
        "FAISS is a library for efficient similarity search of dense vectors.",
        {"topic": "search", "year": 2017},
    ),
    ("bm25", "BM25 ranks documents by keyword overlap with the query.", {"topic": "search", "year": 1994}),
    ("beijing", "Beijing is the capital of China.", {"topic": "geo", "year": 2020}),
    ("paris", "Paris is the capital of France.", {"topic": "geo", "year": 2021}),
    (
        "gravity",
        "Gravity is a force that attracts two bodies towards each other.",
        {"topic": "physics", "year": 1687},
    ),
    (
        "rag",
        "Retrieval augmented generation combines search with language models to answer questions.",
        {"topic": "search", "year": 2020},
    ),
]


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_pycollect_makeitem(collector: Any, name: str, obj: object) -> Generator[None, Any, None]:
    """Mark the async tests collected here (LangChain's standard suites leave them unmarked) with
    ``pytest.mark.asyncio`` before pytest-asyncio's own wrapper turns marked coroutines into asyncio items."""
    outcome = yield
    if not inspect.iscoroutinefunction(obj) or HERE not in Path(str(collector.path)).parents:
        return
    result = outcome.get_result()
    for item in result if isinstance(result, list) else [result]:
        if isinstance(item, pytest.Function) and item.get_closest_marker("asyncio") is None:
            item.add_marker(pytest.mark.asyncio)


@pytest.fixture()
def corpus() -> list[tuple[str, str, dict[str, Any]]]:
    """``(id, text, metadata)`` of a six-document corpus."""
    return list(CORPUS)


@pytest.fixture()
def corpus_index(tmp_path: Path, hash_embedder: Any) -> Any:
    """An open core index with :data:`CORPUS` (one chunk per document), closed after the test."""
    from qwen3_rag import Document, Index, ingest_documents

    index = Index.create(tmp_path / "corpus", hash_embedder, chunk_size=0, chunk_overlap=0)
    ingest_documents([Document(id=i, text=t, source=f"{i}.txt", metadata=m) for i, t, m in CORPUS], index)
    yield index
    index.close()
