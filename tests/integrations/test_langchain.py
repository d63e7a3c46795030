"""LangChain adapters: the langchain-tests standard suites plus the behaviour the suites do not pin down."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("langchain_core")  # the `langchain` extra; CI installs it
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_tests.integration_tests import (
    EmbeddingsIntegrationTests,
    RetrieversIntegrationTests,
    VectorStoreIntegrationTests,
)
from langchain_tests.unit_tests import EmbeddingsUnitTests

from qwen3_rag.indexers.filters import FilterError
from qwen3_rag.integrations.langchain import (
    Qwen3Embeddings,
    Qwen3Reranker,
    Qwen3Retriever,
    Qwen3VectorStore,
    relevance_from_cosine,
    translate_filter,
)

# -- standard suites
# ----------------------------------------------------------------------------------------------------------


class TestQwen3EmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[Embeddings]:
        return Qwen3Embeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        # a hub id that is never fetched: constructing the adapter must load nothing
        return {"model": "Qwen/Qwen3-Embedding-0.6B", "device": "cpu"}


class TestQwen3EmbeddingsIntegration(EmbeddingsIntegrationTests):
    _embedder: Any = None

    @pytest.fixture(autouse=True)
    def _tiny(self, tiny_embedder: Any) -> None:
        type(self)._embedder = tiny_embedder

    @property
    def embeddings_class(self) -> type[Embeddings]:
        return Qwen3Embeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"embedder": self._embedder}


class TestQwen3VectorStoreStandard(VectorStoreIntegrationTests):
    @pytest.fixture()
    def vectorstore(self, tmp_path: Path) -> Generator[VectorStore, None, None]:  # type: ignore[override]
        store = Qwen3VectorStore(self.get_embeddings(), tmp_path / "index")
        try:
            yield store
        finally:
            store.close()


class TestQwen3VectorStoreMilvusLite(VectorStoreIntegrationTests):
    """The same suite (sync and async) on a Milvus Lite index: the store takes any index location."""

    @pytest.fixture()
    def vectorstore(self, tmp_path: Path) -> Generator[VectorStore, None, None]:  # type: ignore[override]
        pytest.importorskip("milvus_lite", reason="the [milvus] extra is not installed")
        store = Qwen3VectorStore(self.get_embeddings(), f"milvus-lite://{tmp_path / 'lc.db'}/store")
        try:
            yield store
        finally:
            store.close()


class TestQwen3RetrieverStandard(RetrieversIntegrationTests):
    _core: Any = None

    @pytest.fixture(autouse=True)
    def _index(self, corpus_index: Any) -> None:
        from qwen3_rag.pipelines.search import Retriever

        type(self)._core = Retriever(corpus_index)

    @property
    def retriever_constructor(self) -> type[Qwen3Retriever]:
        return Qwen3Retriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"retriever": self._core, "k": 2}

    @property
    def retriever_query_example(self) -> str:
        return "what is the capital of China?"


# -- embeddings
# ----------------------------------------------------------------------------------------------------------


def test_embeddings_use_the_query_instruction_only_on_queries(tiny_embedder: Any) -> None:
    emb = Qwen3Embeddings(embedder=tiny_embedder)
    text = "What is the capital of China?"
    np.testing.assert_allclose(emb.embed_query(text), tiny_embedder.embed_queries([text])[0], atol=1e-6)
    np.testing.assert_allclose(
        emb.embed_documents([text])[0], tiny_embedder.embed_documents([text])[0], atol=1e-6
    )
    assert not np.allclose(emb.embed_query(text), emb.embed_documents([text])[0], atol=1e-3)
    custom = Qwen3Embeddings(embedder=tiny_embedder, instruction="Find code")
    np.testing.assert_allclose(
        custom.embed_query(text), tiny_embedder.embed_queries([text], instruction="Find code")[0], atol=1e-6
    )
    assert emb.embed_documents([]) == []


def test_embeddings_are_lazy_and_build_the_core_embedder_on_first_use(tiny_qwen3_embedding_dir: str) -> None:
    emb = Qwen3Embeddings(model=tiny_qwen3_embedding_dir, device="cpu", model_kwargs={"dtype": "float32"})
    assert emb.embedder is None  # nothing built yet
    vec = emb.embed_query("hello")
    assert emb.embedder is not None and len(vec) == emb.embedder.dim
    assert all(isinstance(x, float) for x in vec)


# -- vector store
# ----------------------------------------------------------------------------------------------------------

DOCS = [
    Document(page_content="FAISS does similarity search", metadata={"topic": "search", "year": 2017}, id="a"),
    Document(page_content="BM25 ranks by keywords", metadata={"topic": "search", "year": 1994}, id="b"),
    Document(page_content="Beijing is the capital of China", metadata={"topic": "geo", "year": 2020}, id="c"),
    Document(page_content="Paris is the capital of France", metadata={"topic": "geo", "year": 2021}, id="d"),
    Document(page_content="Gravity attracts bodies", metadata={"topic": "physics"}, id="e"),
]


@pytest.fixture()
def store(tmp_path: Path) -> Generator[Qwen3VectorStore, None, None]:
    s = Qwen3VectorStore(DeterministicFakeEmbedding(size=16), tmp_path / "lc")
    s.add_documents(DOCS)
    yield s
    s.close()


def _brute_force(store: Qwen3VectorStore, query: str, docs: list[Document]) -> list[str]:
    emb = store.embeddings
    q = np.asarray(emb.embed_query(query))
    q /= np.linalg.norm(q)
    scored = []
    for d in docs:
        v = np.asarray(emb.embed_documents([d.page_content])[0])
        scored.append((-float(q @ (v / np.linalg.norm(v))), d.id))
    return [i for _, i in sorted(scored)]


def test_similarity_search_equals_brute_force(store: Qwen3VectorStore) -> None:
    got = [d.id for d in store.similarity_search("capital", k=5)]
    assert got == _brute_force(store, "capital", DOCS)


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"topic": "geo"}, {"c", "d"}),
        ({"topic": {"$eq": "geo"}}, {"c", "d"}),
        ({"topic": {"$ne": "geo"}}, {"a", "b", "e"}),
        ({"topic": {"$neq": "geo"}}, {"a", "b", "e"}),
        ({"year": {"$gt": 2017}}, {"c", "d"}),
        ({"year": {"$gte": 2017}}, {"a", "c", "d"}),
        ({"year": {"$lt": 2017}}, {"b"}),
        ({"year": {"$lte": 2017}}, {"a", "b"}),
        ({"topic": {"$in": ["geo", "physics"]}}, {"c", "d", "e"}),
        ({"topic": ["geo", "physics"]}, {"c", "d", "e"}),
        ({"topic": {"$nin": ["geo", "physics"]}}, {"a", "b"}),
        ({"$and": [{"topic": "geo"}, {"year": {"$gte": 2021}}]}, {"d"}),
        ({"$or": [{"topic": "physics"}, {"year": 1994}]}, {"b", "e"}),
        ({"$not": {"topic": "search"}}, {"c", "d", "e"}),
        ({"topic": "search", "year": {"$lt": 2000}}, {"b"}),
    ],
)
def test_filters_are_applied_inside_the_search(
    store: Qwen3VectorStore, flt: dict[str, Any], expected: set[str]
) -> None:
    # k equals the number of matches: a post-filter over the unfiltered top-k would come back short
    got = store.similarity_search("capital of China", k=len(expected), filter=flt)
    assert {d.id for d in got} == expected
    assert [d.id for d in got] == _brute_force(
        store, "capital of China", [d for d in DOCS if d.id in expected]
    )


def test_unsupported_filter_operator_is_a_clear_error(store: Qwen3VectorStore) -> None:
    with pytest.raises(FilterError, match=r"\$like.*supported: \$eq"):
        store.similarity_search("x", filter={"topic": {"$like": "geo%"}})
    with pytest.raises(FilterError, match=r"\$exists"):
        translate_filter({"$exists": ["topic"]})


def test_relevance_scores_are_in_unit_interval_and_threshold_works(store: Qwen3VectorStore) -> None:
    scored = store.similarity_search_with_relevance_scores("capital of China", k=5)
    scores = [s for _, s in scored]
    assert all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)
    cos = store.similarity_search_with_score("capital of China", k=5)
    assert [relevance_from_cosine(c) for _, c in cos] == pytest.approx(scores)
    threshold = (scores[1] + scores[2]) / 2
    kept = store.similarity_search_with_relevance_scores("capital of China", k=5, score_threshold=threshold)
    assert [d.id for d, _ in kept] == [d.id for d, _ in scored[:2]]
    retriever = store.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"score_threshold": threshold, "k": 5}
    )
    assert len(retriever.invoke("capital of China")) == 2


def test_relevance_from_cosine_bounds() -> None:
    assert relevance_from_cosine(1.0) == 1.0 and relevance_from_cosine(-1.0) == 0.0
    assert relevance_from_cosine(1.0000002) == 1.0 and relevance_from_cosine(0.0) == 0.5


def test_search_by_vector_and_with_score(store: Qwen3VectorStore) -> None:
    vec = store.embeddings.embed_query("gravity")
    by_vec = store.similarity_search_by_vector(vec, k=3)
    assert [d.id for d in by_vec] == [d.id for d in store.similarity_search("gravity", k=3)]
    with_score = store.similarity_search_with_score_by_vector(vec, k=1, filter={"topic": "geo"})
    assert with_score[0][0].id in {"c", "d"} and -1.0 <= with_score[0][1] <= 1.0


def test_get_by_ids_in_order_missing_skipped(store: Qwen3VectorStore) -> None:
    got = store.get_by_ids(["d", "zzz", "a"])
    assert [d.id for d in got] == ["d", "a"]
    assert got[0] == DOCS[3]


def test_add_updates_existing_id_and_delete_ignores_unknown(store: Qwen3VectorStore) -> None:
    calls: list[int] = []
    emb = store.embeddings
    original = emb.embed_documents

    def counting(texts: list[str]) -> list[list[float]]:
        calls.append(len(texts))
        return original(texts)

    object.__setattr__(emb, "embed_documents", counting)
    store.add_documents([DOCS[0]])  # unchanged: not embedded again
    assert calls == []
    store.add_texts(["Gravity pulls apples down"], [{"topic": "physics", "who": "newton"}], ids=["e"])
    assert calls == [1]
    assert store.get_by_ids(["e"])[0].page_content == "Gravity pulls apples down"
    assert store.index.count().documents == len(DOCS)
    assert store.add_texts(["The first e.", "The last e."], ids=["e", "e"]) == ["e", "e"]  # the last one wins
    assert calls == [1, 1] and store.get_by_ids(["e"])[0].page_content == "The last e."
    assert store.delete(["e", "not-there"]) is True
    assert store.get_by_ids(["e"]) == [] and store.index.count().vectors == len(DOCS) - 1
    store.delete()
    assert store.similarity_search("anything", k=3) == []


def test_ids_from_documents_and_generated(tmp_path: Path) -> None:
    s = Qwen3VectorStore(DeterministicFakeEmbedding(size=8))
    ids = s.add_documents([Document(page_content="x", id="given"), Document(page_content="y")])
    assert ids[0] == "given" and len(ids[1]) == 36
    with pytest.raises(ValueError, match="2 texts but 1 ids"):
        s.add_texts(["p", "q"], ids=["only-one"])
    s.close()


def test_max_marginal_relevance(tmp_path: Path) -> None:
    s = Qwen3VectorStore(DeterministicFakeEmbedding(size=16), tmp_path / "mmr")
    # two exact duplicates: MMR with a strong diversity weight never picks both
    s.add_texts(
        ["capital of China", "capital of China!", "capital of China", "gravity", "bm25"],
        ids=["dup1", "other", "dup2", "g", "b"],
    )
    plain = [d.id for d in s.similarity_search("capital of China", k=2)]
    assert set(plain) == {"dup1", "dup2"}
    diverse = [
        d.id for d in s.max_marginal_relevance_search("capital of China", k=2, fetch_k=5, lambda_mult=0.1)
    ]
    assert len(diverse) == 2 and len({"dup1", "dup2"} & set(diverse)) == 1
    flt = [d.id for d in s.max_marginal_relevance_search("capital", k=2, filter={"$not": {"doc_id": "g"}})]
    assert "g" not in flt
    s.close()


def test_from_texts_save_and_load(tmp_path: Path) -> None:
    emb = DeterministicFakeEmbedding(size=8)
    s = Qwen3VectorStore.from_texts(["alpha", "beta"], emb, metadatas=[{"n": 1}, {"n": 2}], ids=["1", "2"])
    target = s.save(tmp_path / "saved")
    s.close()
    loaded = Qwen3VectorStore.load(target, emb)
    assert loaded.get_by_ids(["2", "1"]) == [
        Document(page_content="beta", metadata={"n": 2}, id="2"),
        Document(page_content="alpha", metadata={"n": 1}, id="1"),
    ]
    assert loaded.similarity_search("alpha", k=1)[0].id == "1"
    loaded.close()
    docs = Qwen3VectorStore.from_documents([Document(page_content="gamma", id="g")], emb, path=tmp_path / "d")
    assert docs.get_by_ids(["g"])[0].page_content == "gamma"
    docs.close()
    from qwen3_rag.indexers.index import IndexMismatchError

    with pytest.raises(IndexMismatchError):
        Qwen3VectorStore.load(target, DeterministicFakeEmbedding(size=12))
    with pytest.raises(FileNotFoundError):
        Qwen3VectorStore.load(tmp_path / "nothing", emb)


def test_store_with_qwen3_embeddings_is_a_core_index(tmp_path: Path, hash_embedder: Any) -> None:
    """With Qwen3Embeddings the index records the real model, so the core retriever can search it."""
    from qwen3_rag.pipelines.search import Retriever

    emb = Qwen3Embeddings(embedder=hash_embedder)
    s = Qwen3VectorStore.from_documents(DOCS, emb, path=tmp_path / "q")
    assert s.index.manifest["model"]["fingerprint"] == hash_embedder.describe()["fingerprint"]
    hits = Retriever(s.index).search("capital of France", k=1, filter={"topic": "geo"})
    assert hits[0].doc_id == s.similarity_search("capital of France", k=1, filter={"topic": "geo"})[0].id
    s.close()


class _SlowEmbedding(DeterministicFakeEmbedding):
    def embed_query(self, text: str) -> list[float]:
        time.sleep(0.3)
        return super().embed_query(text)


def test_async_methods_do_not_block_the_event_loop(tmp_path: Path) -> None:
    s = Qwen3VectorStore(_SlowEmbedding(size=8), tmp_path / "slow")
    s.add_texts(["a", "b"], ids=["a", "b"])

    async def main() -> tuple[list[Document], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.02)
                ticks += 1

        task = asyncio.create_task(ticker())
        docs = await s.asimilarity_search("a", k=1)
        task.cancel()
        return docs, ticks

    docs, ticks = asyncio.run(main())
    assert docs[0].id == "a" and ticks >= 5
    s.close()


# -- retriever and reranker
# --------------------------------------------------------------------------------------------------


def test_retriever_pipeline_filter_hybrid_and_rerank(corpus_index: Any, tiny_reranker: Any) -> None:
    retriever = Qwen3Retriever.from_index(corpus_index, reranker=tiny_reranker, k=3)
    docs = retriever.invoke("capital of China")
    assert len(docs) == 3 and docs[0].id == "beijing"
    assert docs[0].metadata["source"] == "beijing.txt" and "dense" in docs[0].metadata["scores"]
    geo = retriever.invoke("capital", k=5, filter={"topic": {"$eq": "geo"}})
    assert {d.id for d in geo} == {"beijing", "paris"}
    hybrid = Qwen3Retriever(retriever=retriever.retriever, k=2, mode="hybrid").invoke("keyword overlap BM25")
    assert hybrid[0].id == "bm25" and "bm25" in hybrid[0].metadata["scores"]
    reranked = retriever.invoke("capital of China", rerank=True, k=4)
    rel = [d.metadata["relevance_score"] for d in reranked]
    assert rel == sorted(rel, reverse=True) and all(0.0 <= r <= 1.0 for r in rel)
    expected = tiny_reranker.score("capital of China", [d.page_content for d in reranked])
    assert rel == pytest.approx(expected, abs=1e-5)


def test_reranker_in_contextual_compression_retriever(tiny_reranker: Any, corpus_index: Any) -> None:
    from langchain_classic.retrievers import ContextualCompressionRetriever

    base = Qwen3Retriever.from_index(corpus_index, k=5)
    pipeline = ContextualCompressionRetriever(
        base_compressor=Qwen3Reranker(reranker=tiny_reranker, top_n=2), base_retriever=base
    )
    out = pipeline.invoke("capital of China")
    first = base.invoke("capital of China")
    expected = tiny_reranker.rerank("capital of China", [d.page_content for d in first], top_n=2)
    assert [d.page_content for d in out] == [r.document for r in expected]
    assert [d.metadata["relevance_score"] for d in out] == pytest.approx([r.score for r in expected])
    assert [d.page_content for d in asyncio.run(pipeline.ainvoke("capital of China"))] == [
        d.page_content for d in out
    ]


def test_reranker_orders_by_probability_and_keeps_top_n(tiny_reranker: Any) -> None:
    docs = [
        Document(page_content=t, metadata={"i": i}, id=str(i))
        for i, t in enumerate(
            ["Gravity is a force.", "Beijing is the capital of China.", "Paris is in France.", "BM25 ranks."]
        )
    ]
    out = Qwen3Reranker(reranker=tiny_reranker, top_n=2).compress_documents(docs, "capital of China")
    expected = tiny_reranker.rerank("capital of China", [d.page_content for d in docs], top_n=2)
    assert [d.id for d in out] == [str(r.index) for r in expected]
    assert [d.metadata["relevance_score"] for d in out] == pytest.approx([r.score for r in expected])
    assert out[0].metadata["i"] == expected[0].index and "relevance_score" not in docs[0].metadata
    everything = Qwen3Reranker(reranker=tiny_reranker, top_n=None).compress_documents(docs, "capital")
    assert len(everything) == 4
    assert Qwen3Reranker(reranker=tiny_reranker).compress_documents([], "q") == []


def test_reranker_is_lazy(tiny_qwen3_reranker_dir: str) -> None:
    rr = Qwen3Reranker(model=tiny_qwen3_reranker_dir, device="cpu", top_n=1)
    assert rr.reranker is None
    out = rr.compress_documents([Document(page_content="a"), Document(page_content="b")], "q")
    assert len(out) == 1 and rr.reranker is not None


def test_missing_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    monkeypatch.setitem(sys.modules, "langchain_core", None)  # makes `import langchain_core` fail
    monkeypatch.delitem(sys.modules, "qwen3_rag.integrations.langchain", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'qwen3-rag\[langchain\]'"):
        importlib.import_module("qwen3_rag.integrations.langchain")
