"""LlamaIndex adapters: embedding, vector store (filters, deletes, persistence) and reranker, alone and inside
VectorStoreIndex, IngestionPipeline, retrievers and query engines (MockLLM, offline)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("llama_index.core")  # the `llamaindex` extra; CI installs it
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.llms import MockLLM
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import NodeRelationship, NodeWithScore, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

from qwen3_rag.indexers.filters import FilterError
from qwen3_rag.integrations.llamaindex import Qwen3Embedding, Qwen3Rerank, Qwen3VectorStore, translate_filters

# -- embedding
# ----------------------------------------------------------------------------------------------------------


def test_embedding_instruction_on_queries_only(tiny_embedder: Any) -> None:
    emb = Qwen3Embedding(embedder=tiny_embedder)
    text = "What is the capital of China?"
    np.testing.assert_allclose(
        emb.get_query_embedding(text), tiny_embedder.embed_queries([text])[0], atol=1e-6
    )
    np.testing.assert_allclose(
        emb.get_text_embedding(text), tiny_embedder.embed_documents([text])[0], atol=1e-6
    )
    assert not np.allclose(emb.get_query_embedding(text), emb.get_text_embedding(text), atol=1e-3)
    got = asyncio.run(emb.aget_query_embedding(text))
    np.testing.assert_allclose(got, emb.get_query_embedding(text), atol=1e-6)


def test_embedding_batches_texts_for_real(hash_embedder: Any) -> None:
    emb = Qwen3Embedding(embedder=hash_embedder, embed_batch_size=4)
    texts = [f"text number {i}" for i in range(10)]
    out = emb.get_text_embedding_batch(texts)
    assert hash_embedder.calls == 3 and hash_embedder.texts_embedded == 10  # ceil(10 / 4) core calls
    np.testing.assert_allclose(out, hash_embedder.embed_documents(texts), atol=1e-6)
    np.testing.assert_allclose(asyncio.run(emb.aget_text_embedding_batch(texts)), out, atol=1e-6)


def test_embedding_is_lazy(tiny_qwen3_embedding_dir: str) -> None:
    emb = Qwen3Embedding(model_name=tiny_qwen3_embedding_dir, device="cpu", model_kwargs={"dtype": "float32"})
    assert emb.embedder is None
    assert len(emb.get_query_embedding("hi")) == emb.core.dim


# -- vector store
# ----------------------------------------------------------------------------------------------------------


def _nodes(hash_embedder: Any, corpus: list[Any]) -> list[TextNode]:
    nodes = []
    for i, (doc_id, text, meta) in enumerate(corpus):
        parent = "doc-search" if meta["topic"] == "search" else f"doc-{doc_id}"
        node = TextNode(id_=doc_id, text=text, metadata=dict(meta, rank=i))
        node.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=parent)
        node.embedding = hash_embedder.embed_documents([text])[0].tolist()
        nodes.append(node)
    return nodes


@pytest.fixture(params=["local", "milvus-lite"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], Any]:
    """Where the stores of a test live: index directories, or collections of one Milvus Lite file."""
    if request.param == "local":
        return lambda name: tmp_path / name
    pytest.importorskip("milvus_lite", reason="the [milvus] extra is not installed")
    return lambda name: f"milvus-lite://{tmp_path / 'li.db'}/{name}"


@pytest.fixture()
def li_store(where: Callable[[str], Any], hash_embedder: Any, corpus: list[Any]) -> Any:
    store = Qwen3VectorStore(where("li"))
    assert store.client is None  # created on the first add, when the dimension is known
    store.add(_nodes(hash_embedder, corpus))
    yield store
    store.close()


def _query(store: Any, emb: Any, text: str, k: int, filters: Any = None, **kw: Any) -> Any:
    q = VectorStoreQuery(
        query_embedding=emb.embed_queries([text])[0].tolist(), similarity_top_k=k, filters=filters, **kw
    )
    return store.query(q)


def _brute(emb: Any, text: str, ids: set[str], corpus: list[Any]) -> list[str]:
    texts = {i: t for i, t, _ in corpus}
    q = emb.embed_queries([text])[0]
    scored = sorted((-float(q @ emb.embed_documents([texts[i]])[0]), i) for i in ids)
    return [i for _, i in scored]


def F(key: str, value: Any, op: FilterOperator = FilterOperator.EQ) -> MetadataFilter:  # noqa: N802
    return MetadataFilter(key=key, value=value, operator=op)


ALL = {"faiss", "bm25", "beijing", "paris", "gravity", "rag"}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (MetadataFilters(filters=[F("topic", "geo")]), {"beijing", "paris"}),
        (MetadataFilters(filters=[F("topic", "geo", FilterOperator.NE)]), ALL - {"beijing", "paris"}),
        (MetadataFilters(filters=[F("year", 2017, FilterOperator.GT)]), {"beijing", "paris", "rag"}),
        (
            MetadataFilters(filters=[F("year", 2017, FilterOperator.GTE)]),
            {"faiss", "beijing", "paris", "rag"},
        ),
        (MetadataFilters(filters=[F("year", 2017, FilterOperator.LT)]), {"bm25", "gravity"}),
        (MetadataFilters(filters=[F("year", 2017, FilterOperator.LTE)]), {"bm25", "gravity", "faiss"}),
        (
            MetadataFilters(filters=[F("topic", ["geo", "physics"], FilterOperator.IN)]),
            {"beijing", "paris", "gravity"},
        ),
        (
            MetadataFilters(filters=[F("topic", ["geo", "physics"], FilterOperator.NIN)]),
            {"faiss", "bm25", "rag"},
        ),
        (
            MetadataFilters(filters=[F("topic", "search"), F("year", 2000, FilterOperator.GT)]),
            {"faiss", "rag"},
        ),
        (
            MetadataFilters(filters=[F("topic", "physics"), F("year", 1994)], condition=FilterCondition.OR),
            {"gravity", "bm25"},
        ),
        (
            MetadataFilters(filters=[F("topic", "search"), F("topic", "geo")], condition=FilterCondition.NOT),
            {"gravity"},
        ),
        (
            MetadataFilters(
                filters=[
                    F("topic", "geo"),
                    MetadataFilters(filters=[F("year", 2021), F("year", 1687)], condition=FilterCondition.OR),
                ]
            ),
            {"paris"},
        ),
    ],
)
def test_query_filters_run_inside_the_search(
    li_store: Any, hash_embedder: Any, corpus: list[Any], filters: MetadataFilters, expected: set[str]
) -> None:
    res = _query(li_store, hash_embedder, "capital of China", len(expected), filters)
    assert res.ids == _brute(hash_embedder, "capital of China", expected, corpus)
    assert [n.node_id for n in res.nodes] == res.ids and len(res.similarities) == len(expected)


def test_unsupported_operator_is_a_clear_error() -> None:
    with pytest.raises(FilterError, match="TEXT_MATCH is not supported"):
        translate_filters(MetadataFilters(filters=[F("topic", "ge", FilterOperator.TEXT_MATCH)]))


def test_query_returns_whole_nodes_with_scores(li_store: Any, hash_embedder: Any, corpus: list[Any]) -> None:
    res = _query(li_store, hash_embedder, "capital of China", 6)
    assert res.ids == _brute(hash_embedder, "capital of China", ALL, corpus)
    node = res.nodes[res.ids.index("beijing")]
    assert node.get_content() == "Beijing is the capital of China."
    assert node.metadata == {"topic": "geo", "year": 2020, "rank": 2}
    assert node.ref_doc_id == "doc-beijing"
    assert res.similarities == sorted(res.similarities, reverse=True)
    assert _query(li_store, hash_embedder, "x", 3, doc_ids=["doc-search"]).ids == _brute(
        hash_embedder, "x", {"faiss", "bm25", "rag"}, corpus
    )
    assert set(_query(li_store, hash_embedder, "x", 5, node_ids=["paris", "rag"]).ids) == {"paris", "rag"}
    with pytest.raises(ValueError, match="default"):
        _query(li_store, hash_embedder, "x", 2, mode=VectorStoreQueryMode.MMR)


def test_delete_by_ref_doc_and_nodes(li_store: Any, hash_embedder: Any) -> None:
    li_store.delete("doc-search")  # the three search nodes
    assert set(_query(li_store, hash_embedder, "search", 6).ids) == {"beijing", "paris", "gravity"}
    li_store.delete("no-such-doc")
    li_store.delete_nodes(["paris"])
    li_store.delete_nodes(filters=MetadataFilters(filters=[F("topic", "physics")]))
    assert _query(li_store, hash_embedder, "search", 6).ids == ["beijing"]
    assert [n.node_id for n in li_store.get_nodes(["beijing", "paris"])] == ["beijing"]
    li_store.clear()
    assert _query(li_store, hash_embedder, "search", 6).ids == []


def test_add_replaces_existing_node(li_store: Any, hash_embedder: Any, corpus: list[Any]) -> None:
    node = TextNode(id_="paris", text="Paris has the Eiffel tower.", metadata={"topic": "geo"})
    node.embedding = hash_embedder.embed_documents([node.text])[0].tolist()
    li_store.add([node])
    assert li_store.get_nodes(["paris"])[0].get_content() == "Paris has the Eiffel tower."
    assert li_store.client.count().documents == len(corpus)
    with pytest.raises(ValueError, match="no embedding"):
        li_store.add([TextNode(id_="x", text="no vector")])
    first, last = (TextNode(id_="twice", text=t) for t in ("The first version.", "The last version."))
    for n in (first, last):
        n.embedding = hash_embedder.embed_documents([n.text])[0].tolist()
    assert li_store.add([first, last]) == ["twice", "twice"]  # one id twice in one call: the last one wins
    assert li_store.get_nodes(["twice"])[0].get_content() == "The last version."
    [chunk] = li_store.client.chunks_of("twice")
    np.testing.assert_allclose(li_store.client.get_vectors([chunk.chunk_id])[0], last.embedding, atol=1e-6)


def test_persist_and_load(li_store: Any, hash_embedder: Any, tmp_path: Path) -> None:
    li_store.persist(str(tmp_path / "copy"))  # a directory: a copy there; Milvus: a commit (the data is in Milvus)
    li_store.persist()  # where it is: a commit
    copied = Path(li_store.path).is_dir()
    assert copied == (tmp_path / "copy").is_dir()
    loaded = Qwen3VectorStore.from_persist_dir(tmp_path / "copy" if copied else li_store.path)
    q = _query(li_store, hash_embedder, "gravity", 3)
    assert _query(loaded, hash_embedder, "gravity", 3).ids == q.ids
    loaded.close()
    with pytest.raises(FileNotFoundError):
        Qwen3VectorStore.from_persist_dir(tmp_path / "nothing")


def test_query_an_index_built_by_the_core(where: Callable[[str], Any], hash_embedder: Any,
                                          corpus: list[Any]) -> None:
    from qwen3_rag import Index, ingest_documents
    from qwen3_rag.types import Document as CoreDocument

    with Index.create(where("core"), hash_embedder, chunk_size=0) as index:
        ingest_documents([CoreDocument(id=i, text=t, source=f"{i}.txt", metadata=m) for i, t, m in corpus], index)
    store = Qwen3VectorStore(where("core"))
    res = _query(store, hash_embedder, "capital of China", 1, MetadataFilters(filters=[F("topic", "geo")]))
    node = res.nodes[0]
    assert node.node_id == "beijing#0" and node.ref_doc_id == "beijing"
    assert node.metadata == {"topic": "geo", "year": 2020, "source": "beijing.txt"}
    store.close()


# -- framework flows
# ----------------------------------------------------------------------------------------------------------


def _documents(corpus: list[Any]) -> list[Document]:
    return [Document(text=t, doc_id=i, metadata=m) for i, t, m in corpus]


def test_vector_store_index_retriever_and_query_engine(
    where: Callable[[str], Any], hash_embedder: Any, tiny_reranker: Any, corpus: list[Any]
) -> None:
    embed = Qwen3Embedding(embedder=hash_embedder)
    store = Qwen3VectorStore(where("vsi"), embed_model=embed)
    index = VectorStoreIndex.from_documents(
        _documents(corpus),
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed,
    )
    retriever = index.as_retriever(similarity_top_k=2)
    hits = retriever.retrieve("capital of China")
    assert hits[0].node.ref_doc_id == "beijing" and len(hits) == 2
    filtered = index.as_retriever(similarity_top_k=5, filters=MetadataFilters(filters=[F("topic", "geo")]))
    assert {h.node.ref_doc_id for h in filtered.retrieve("capital")} == {"beijing", "paris"}

    engine = index.as_query_engine(
        llm=MockLLM(), similarity_top_k=4, node_postprocessors=[Qwen3Rerank(reranker=tiny_reranker, top_n=2)]
    )
    response = engine.query("What is the capital of China?")
    assert len(response.source_nodes) == 2
    scores = [n.score for n in response.source_nodes]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    assert response.source_nodes[0].node.get_content() in str(response)  # MockLLM echoes the prompt

    index.delete_ref_doc("beijing")
    assert "beijing" not in {
        h.node.ref_doc_id for h in index.as_retriever(similarity_top_k=6).retrieve("China")
    }
    store.close()
    reopened = VectorStoreIndex.from_vector_store(
        Qwen3VectorStore(where("vsi"), embed_model=embed), embed_model=embed
    )
    assert len(reopened.as_retriever(similarity_top_k=10).retrieve("capital")) == len(corpus) - 1
    reopened.vector_store.close()


def test_ingestion_pipeline_writes_into_the_store(
    where: Callable[[str], Any], hash_embedder: Any, corpus: list[Any]
) -> None:
    embed = Qwen3Embedding(embedder=hash_embedder)
    store = Qwen3VectorStore(where("ingest"))
    pipeline = IngestionPipeline(
        transformations=[SentenceSplitter(chunk_size=16, chunk_overlap=0), embed], vector_store=store
    )
    long_doc = Document(text=" ".join(t for _, t, _ in corpus), doc_id="all", metadata={"kind": "merged"})
    nodes = pipeline.run(documents=[long_doc])
    assert len(nodes) > 1 and store.client.count().documents == len(nodes)
    index = VectorStoreIndex.from_vector_store(store, embed_model=embed)
    hits = index.as_retriever(similarity_top_k=1).retrieve("Beijing capital China")
    assert "Beijing" in hits[0].node.get_content() and hits[0].node.metadata["kind"] == "merged"
    store.delete("all")
    assert store.client.count().documents == 0
    store.close()


def test_rerank_postprocessor(tiny_reranker: Any) -> None:
    texts = ["Gravity is a force.", "Beijing is the capital of China.", "Paris is in France.", "BM25."]
    nodes = [NodeWithScore(node=TextNode(id_=str(i), text=t), score=0.0) for i, t in enumerate(texts)]
    out = Qwen3Rerank(reranker=tiny_reranker, top_n=2).postprocess_nodes(nodes, query_str="capital of China")
    expected = tiny_reranker.rerank("capital of China", texts, top_n=2)
    assert [n.node.node_id for n in out] == [str(r.index) for r in expected]
    assert [n.score for n in out] == pytest.approx([r.score for r in expected])
    with pytest.raises(ValueError, match="needs the query"):
        Qwen3Rerank(reranker=tiny_reranker).postprocess_nodes(nodes)


def test_missing_extra_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    monkeypatch.setitem(sys.modules, "llama_index.core", None)
    monkeypatch.delitem(sys.modules, "qwen3_rag.integrations.llamaindex", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'qwen3-rag\[llamaindex\]'"):
        importlib.import_module("qwen3_rag.integrations.llamaindex")
