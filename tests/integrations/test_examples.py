"""The RAG chatbot examples: retriever -> prompt -> chat model -> parser with citations (LangChain) and the
citation query engine (LlamaIndex), with the frameworks' fake LLMs, offline."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_langchain_chatbot_answers_with_citations(corpus_index: Any) -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.runnables import RunnableLambda

    from qwen3_rag.integrations.langchain import Qwen3Retriever

    bot = _load("langchain_chatbot")
    retriever = Qwen3Retriever.from_index(corpus_index, k=3)
    result = bot.build_chain(retriever, FakeListChatModel(responses=["Beijing [1], not Paris [9]."])).invoke(
        "What is the capital of China?"
    )
    assert result["answer"] == "Beijing [1], not Paris [9]."
    assert result["context"][0].id == "beijing" and result["sources"] == ["beijing.txt"]  # [9] does not exist

    prompts: list[str] = []

    def echo(prompt: Any) -> str:
        prompts.append(prompt.to_string())
        return "See [2] and [1]."

    result = bot.build_chain(retriever, RunnableLambda(echo)).invoke("What is the capital of China?")
    assert "[1] beijing.txt\nBeijing is the capital of China." in prompts[0]
    assert "Question: What is the capital of China?" in prompts[0]
    assert result["sources"] == [result["context"][1].metadata["source"], "beijing.txt"]


def test_langchain_chatbot_main_runs_offline(capsys: pytest.CaptureFixture[str], minilm_path: str) -> None:
    bot = _load("langchain_chatbot")
    assert bot.main(["--question", "What is the capital of China?", "--embedding-model", minilm_path]) == 0
    out = capsys.readouterr().out
    assert "Beijing is the capital of China [1]." in out and "*[1] beijing.md" in out


def test_llamaindex_chatbot_cites_sources(hash_embedder: Any, tiny_reranker: Any, corpus: list[Any]) -> None:
    from llama_index.core import Document
    from llama_index.core.llms import MockLLM

    from qwen3_rag.integrations.llamaindex import Qwen3Embedding, Qwen3Rerank

    bot = _load("llamaindex_chatbot")
    docs = [Document(text=t, doc_id=i, metadata={"source": f"{i}.txt"}) for i, t, _ in corpus]
    index = bot.build_index(docs, Qwen3Embedding(embedder=hash_embedder))
    engine = bot.build_query_engine(index, MockLLM(), k=3)
    response = engine.query("What is the capital of China?")
    assert response.source_nodes[0].node.metadata["source"] == "beijing.txt"
    # MockLLM echoes its prompt: the passages are numbered for citation
    assert "Source 1:\nBeijing is the capital of China." in str(response)
    reranked = bot.build_query_engine(
        index, MockLLM(), k=4, reranker=Qwen3Rerank(reranker=tiny_reranker, top_n=2)
    )
    nodes = reranked.query("What is the capital of China?").source_nodes
    assert len(nodes) == 2 and nodes[0].score >= nodes[1].score
    index.vector_store.close()


def test_llamaindex_chatbot_main_runs_offline(capsys: pytest.CaptureFixture[str], minilm_path: str) -> None:
    bot = _load("llamaindex_chatbot")
    assert bot.main(["--question", "What is the capital of China?", "--embedding-model", minilm_path]) == 0
    out = capsys.readouterr().out
    assert "[1] beijing.md" in out
