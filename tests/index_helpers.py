"""A small corpus and oracles shared by the index tests."""

from __future__ import annotations

import numpy as np

from qwen3_rag import Document, Index

TOPICS = ["faiss vectors search", "sqlite durable store", "qwen embedding model", "chunk tokens text",
          "metadata filter query", "python code tests"]


def corpus(n: int = 40, prefix: str = "d") -> list[Document]:
    docs = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        body = "\n".join(" ".join(f"word{(i * 7 + j + line) % 50}" for j in range(6)) for line in range(2 + i % 5))
        docs.append(Document(id=f"{prefix}{i}", text=f"Document {i} is about {topic}.\n{body}",
                             source=f"src/{prefix}{i}.txt",
                             metadata={"n": i, "group": i % 3, "topic": topic.split()[0],
                                       **({"year": 2000 + i} if i % 4 else {})}))
    return docs


def all_chunk_ids(index: Index) -> list[int]:
    return [int(c.chunk_id) for doc_id, _, _ in index.iter_documents() for c in index.chunks_of(doc_id)
            if c.chunk_id is not None]


def oracle(index: Index, query: np.ndarray, k: int, allowed: set[int] | None = None) -> list[tuple[int, float]]:
    ids = [i for i in all_chunk_ids(index) if allowed is None or i in allowed]
    if not ids:
        return []
    sims = index.get_vectors(ids) @ query
    return sorted(zip(ids, sims.tolist(), strict=True), key=lambda p: -p[1])[:k]


