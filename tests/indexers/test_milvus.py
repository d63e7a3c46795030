"""The Milvus backend beyond the shared contract (tests/indexers/test_backend_conformance.py runs that on Milvus
Lite): locations and tokens, filters compiled to Milvus expressions against the Python semantics, text and
metadata Milvus must hold exactly, keyword analysis, an interrupted commit, and kill -9 during
``qwen3-rag index``. Milvus Lite runs in-process on loopback TCP; one Lite file serves a module, one collection a
test."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("milvus_lite", reason="the [milvus] extra is not installed")

from qwen3_rag import Document, Index, IndexMismatchError, ingest_documents  # noqa: E402
from qwen3_rag.indexers import milvus, milvus_connection  # noqa: E402
from qwen3_rag.indexers.bm25 import BM25Config  # noqa: E402
from qwen3_rag.indexers.filters import FilterError, matches, milvus_fields, to_milvus  # noqa: E402
from qwen3_rag.indexers.index import redact_location  # noqa: E402
from qwen3_rag.indexers.manifest import IndexLockedError  # noqa: E402
from qwen3_rag.indexers.milvus import TOKEN_VARIABLE, MilvusIndex, MilvusLocation  # noqa: E402
from qwen3_rag.indexers.milvus_store import MilvusStore  # noqa: E402

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lite_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("milvus") / "shared.db"


@pytest.fixture()
def where(lite_file: Path, request: pytest.FixtureRequest) -> str:
    """A fresh collection in the module's Lite file."""
    name = re.sub(r"[^A-Za-z0-9]+", "_", request.node.name).strip("_")[:60]
    return f"milvus-lite://{lite_file}/{name}"


# -- locations and tokens ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("location", "uri", "collection", "public"), [
    ("milvus-lite://data/rag.db/docs", "data/rag.db", "docs", "milvus-lite://data/rag.db/docs"),
    ("milvus-lite:///abs/dir/rag.db/docs", "/abs/dir/rag.db", "docs", "milvus-lite:///abs/dir/rag.db/docs"),
    ("milvus://localhost:19530/docs", "http://localhost:19530", "docs", "milvus://localhost:19530/docs"),
    ("milvus://db.example/docs", "http://db.example:19530", "docs", "milvus://db.example:19530/docs"),
    ("milvuss://db.example:443/docs", "https://db.example:443", "docs", "milvuss://db.example:443/docs"),
    ("milvus://h:1/c?secure=true&db=prod", "https://h:1", "c", "milvus://h:1/c?db=prod&secure=true"),
    ("MILVUS://[::1]:19530/_x1", "http://[::1]:19530", "_x1", "milvus://[::1]:19530/_x1"),
])
def test_locations_parse(location: str, uri: str, collection: str, public: str,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    loc = MilvusLocation.parse(location)
    assert (loc.uri, loc.collection, loc.public, loc.token) == (uri, collection, public, "")
    assert MilvusLocation.parse(loc.public) == loc


@pytest.mark.parametrize(("location", "message"), [
    ("milvus-lite://data/rag/docs", "FILE.db/COLLECTION"),
    ("milvus-lite://rag.db", "FILE.db/COLLECTION"),
    ("milvus://h:19530/a/b", "cannot name a Milvus index"),
    ("milvus://h:19530/", "cannot name a Milvus index"),
    ("milvus://h:19530/my-docs", "cannot name a Milvus index"),
    ("milvus://h:19530/a__documents", "cannot name a Milvus index"),
    ("milvus://h:19530/" + "x" * 250, "cannot name a Milvus index"),
    ("milvus://h:19530/c?tokn=x", "unknown option tokn"),
    ("milvus://h:19530/c?secure=maybe", "secure= must be true or false"),
    ("milvus://:19530/c", "names no host"),
    ("milvus://h:port/c", "invalid port"),
])
def test_bad_locations_say_what_is_expected(location: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MilvusLocation.parse(location)


SECRET = "s3cr3t-t0ken"


@pytest.mark.parametrize("location", [
    f"milvus://h:19530/docs?token={SECRET}",
    f"milvus://root:{SECRET}@h:19530/docs",
    f"milvuss://h/docs?db=x&token={SECRET}",
])
def test_the_token_is_used_but_never_shown(location: str, monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    loc = MilvusLocation.parse(location)
    assert SECRET in loc.token
    assert SECRET not in loc.public + repr(loc) + str(loc) + redact_location(location)
    with pytest.raises(ValueError) as err:
        MilvusLocation.parse(location.replace("docs", "bad-name"))
    assert SECRET not in str(err.value)
    with pytest.raises(ValueError) as err:
        MilvusLocation.parse(location + "&nope=1" if "?" in location else location + "?nope=1")
    assert SECRET not in str(err.value)
    # a server that cannot be reached: the error and the logs name the server, never the token
    monkeypatch.setattr(MilvusLocation, "uri", property(lambda self: "http://127.0.0.1:9"))
    monkeypatch.setattr(milvus_connection, "CONNECT_TIMEOUT", 0.5)
    with caplog.at_level(logging.DEBUG), pytest.raises(ConnectionError, match="cannot connect to Milvus at") as err:
        Index.open(location)
    assert SECRET not in str(err.value) and SECRET not in caplog.text


def test_the_token_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, SECRET)
    assert MilvusLocation.parse("milvus://h:19530/docs").token == SECRET
    assert MilvusLocation.parse("milvus://h:19530/docs?token=other").token == "other"
    assert MilvusLocation.parse("milvus-lite://x.db/docs").token == ""


def test_a_missing_lite_file_is_no_index_and_is_not_created(tmp_path: Path, hash_embedder: Any) -> None:
    location = f"milvus-lite://{tmp_path / 'none' / 'x.db'}/docs"
    assert not Index.exists(location)
    with pytest.raises(FileNotFoundError, match="no index at"):
        Index.open(location, hash_embedder)
    with pytest.raises(FileNotFoundError):
        Index.read_manifest(location)
    assert not (tmp_path / "none").exists()


# -- the model record ----------------------------------------------------------------------------------------


def test_another_model_or_dimension_is_refused(where: str, hash_embedder: Any, plain_tokenizer: Any) -> None:
    with Index.create(where, hash_embedder, chunk_size=0) as index:
        ingest_documents([Document(id="a", text="some text")], index)
        assert isinstance(index, MilvusIndex) and repr(index) == f"MilvusIndex({where!r}, model='hash-embedder')"
    wider = type(hash_embedder)(plain_tokenizer, dim=48)  # same name, other dimension
    with pytest.raises(IndexMismatchError, match="dimension differ"):
        Index.open(where, wider)
    assert Index.read_manifest(where)["model"]["model"] == "hash-embedder"
    with Index.open(where, read_only=True) as index:
        assert index.embedder is None and index.count().documents == 1
        with pytest.raises(IndexMismatchError):
            index.embedder = wider


def test_a_foreign_collection_is_not_taken_over(lite_file: Path, hash_embedder: Any) -> None:
    from pymilvus import MilvusClient

    location = f"milvus-lite://{lite_file}/foreign"
    with Index.create(location.replace("foreign", "holder"), hash_embedder):  # keeps the Lite server up
        client = MilvusClient(str(lite_file))
        client.create_collection("foreign", dimension=4)
        client.insert("foreign", [{"id": 1, "vector": [0.1, 0.2, 0.3, 0.4]}])
        with pytest.raises(FileExistsError, match="not\\s+a qwen3-rag index"):
            Index.create(location, hash_embedder)
        assert client.query("foreign", filter="id >= 0", output_fields=["count(*)"])[0]["count(*)"] == 1
        client.close()


def test_pq_is_refused_on_lite(where: str, hash_embedder: Any) -> None:
    with pytest.raises(ValueError, match="Milvus Lite has no PQ index"):
        Index.create(where, hash_embedder, index_type="IVF16,PQ8")


# -- filters: Milvus expressions agree with the Python semantics --------------------------------------------

ODD_KEYS = ['a"b', "' OR 1=1 --", "a[0]", "é", "a\nb", "x", "doc_id", "or"]
ODD_SCALARS = [0, 1, -1, 2, 2**53, 2**53 + 1, 2**63 - 1, -(2**63), 0.0, -0.0, 0.5, 1.0, 2.0**53, 1e300, -1e300,
               True, False, "", "a", "b", 'a"b', "' OR 1=1 --", 'x") or ("1"=="1', "\\", "é", "北京", "🙂", "\n",
               "a\tb", "null", "true", "1"]
POOL_VALUES = [*ODD_SCALARS, None, [1, "a"], {"k": 1}]
FILTER_VALUES = [*ODD_SCALARS, 2**53 + 2, -(2**63) + 1, 1.5, -0.5, 9.5, 2.0**63, -(2.0**64), 1e-300, "é\n", "B"]


def _pool(n: int = 90) -> list[Document]:
    rng = random.Random(13)
    docs = []
    for i in range(n):
        keys = rng.sample(ODD_KEYS, rng.randint(0, 4))
        docs.append(Document(id=f"d{i:02d}", text=f"document number {i}", source=f"s{i % 3}",
                             metadata={k: rng.choice(POOL_VALUES) for k in keys}))
    return docs


@pytest.fixture(scope="module")
def pool_index(lite_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from conftest import HashEmbedder, build_tokenizer

    embedder = HashEmbedder(build_tokenizer(append_endoftext=False))
    index = Index.create(f"milvus-lite://{lite_file}/filter_pool", embedder, chunk_size=0)
    ingest_documents(_pool(), index)
    yield index
    index.close()


@st.composite
def milvus_filters(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    """Random filters over the pool's fields: comparisons, sets, and $and / $or / $not / several keys nested."""
    kind = draw(st.sampled_from(["field", "set"] + (["and", "or", "not", "keys"] if depth < 3 else [])))
    name = draw(st.sampled_from([*ODD_KEYS, "source", "missing"]))
    if kind == "field":
        op = draw(st.sampled_from([None, "$eq", "$ne", "$gt", "$gte", "$lt", "lte"]))
        value = draw(st.sampled_from(FILTER_VALUES))
        return {name: value if op is None else {op: value}}
    if kind == "set":
        return {name: {draw(st.sampled_from(["$in", "nin"])): draw(st.lists(st.sampled_from(FILTER_VALUES),
                                                                             min_size=1, max_size=4))}}
    parts = draw(st.lists(milvus_filters(depth + 1), min_size=1, max_size=2 if kind == "keys" else 3))
    if kind == "not":
        return {"$not": parts[0]}
    return {k: v for part in parts for k, v in part.items()} if kind == "keys" else {f"${kind}": parts}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flt=milvus_filters())
def test_milvus_filters_agree_with_python(pool_index: Any, flt: dict[str, Any]) -> None:
    docs = _pool()
    expected = sorted(d.id for d in docs if matches(flt, {"doc_id": d.id, "source": d.source, **d.metadata}))
    assert pool_index.find_documents(flt) == expected
    ids, _ = pool_index.search_vectors(pool_index.embedder.embed_queries(["document"]), 200, filter=flt)
    found = pool_index.get_chunks([i for i in ids[0].tolist() if i >= 0])
    assert sorted(c.doc_id for c in found) == expected  # inside the search: every match, nothing else


@pytest.mark.parametrize(("flt", "md", "expected"), [
    ({"n": 1}, {"n": True}, False),  # booleans only equal booleans
    ({"n": True}, {"n": 1}, False),
    ({"n": 2**53 + 1}, {"n": 2.0**53}, False),  # an integer meets a float exactly
    ({"n": {"$lt": 2**53 + 1}}, {"n": 2.0**53}, True),
    ({"n": {"$gt": 2**63 - 1}}, {"n": 2.0**63}, True),
    ({"n": {"$lte": -(2**63)}}, {"n": -(2**63)}, True),
    ({"n": {"$gt": 1.5}}, {"n": 2}, True),
    ({"n": {"$gt": "1"}}, {"n": 2}, False),  # no comparison across types
    ({"n": {"$ne": "x"}}, {"n": [1]}, True),
    ({"n": {"$ne": "x"}}, {}, False),  # a missing field never matches a comparison
    ({"$not": {"n": "x"}}, {}, True),  # but a negated filter does
    ({"$or": [{"$not": {}}, {"k": {"$nin": ["x"]}}]}, {"k": "y"}, True),
])
def test_filter_semantics_on_milvus(where: str, hash_embedder: Any, flt: dict[str, Any], md: dict[str, Any],
                                    expected: bool) -> None:
    assert matches(flt, md) is expected
    with Index.create(where, hash_embedder, chunk_size=0) as index:
        ingest_documents([Document(id="doc", text="text", metadata=md)], index)
        assert index.find_documents(flt) == (["doc"] if expected else [])


def test_field_names_and_values_are_data_never_expression() -> None:
    expr = to_milvus({"' OR 1=1 --": 'x"] or true or fmeta["', 'a"b': {"$in": ["\\", "\n"]}})
    assert "1=1" not in expr and "OR" not in expr  # field names appear only as hex digits
    assert r'"x\"] or true or fmeta[\""' in expr and r'"\\"' in expr and r'"\n"' in expr
    assert milvus_fields({"é": "v", "n": None, "l": [1]}) == {"t": True, "pc3a9": True, "sc3a9": "v", "p6c": True}
    with pytest.raises(FilterError, match="unknown operator"):
        to_milvus({"a": {"$like": "x"}})


def test_a_callable_filter_is_evaluated_here(pool_index: Any) -> None:
    wanted = sorted(d.id for d in _pool() if d.metadata.get("x") == 1)
    assert pool_index.find_documents(lambda md: md.get("x") == 1) == wanted
    ids, _ = pool_index.search_vectors(pool_index.embedder.embed_queries(["document"]), 100,
                                       filter=lambda md: md.get("x") == 1)
    assert sorted(c.doc_id for c in pool_index.get_chunks([i for i in ids[0] if i >= 0])) == wanted
    assert pool_index.keyword_search(["document"], 5, filter=lambda md: False) == [[]]


def test_an_approximate_index_still_returns_k_filtered_hits(where: str, hash_embedder: Any) -> None:
    docs = [Document(id=f"d{i}", text=f"common words {i}", metadata={"rare": i % 50 == 0}) for i in range(400)]
    with Index.create(where, hash_embedder, chunk_size=0, index_type="HNSW8") as index:
        ingest_documents(docs, index)
        ids, _ = index.search_vectors(hash_embedder.embed_queries(["common words"]), 10, filter={"rare": True})
        assert {c.doc_id for c in index.get_chunks(ids[0][ids[0] >= 0])} == {f"d{i}" for i in range(0, 400, 50)}


def test_a_huge_k_is_cut_and_more_than_one_milvus_search_is_searched_here(where: str, hash_embedder: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    docs = [Document(id=f"d{i}", text=f"Document {i} words {i % 7}", metadata={"odd": i % 2 == 1})
            for i in range(60)]
    with Index.create(where, hash_embedder, chunk_size=0) as index:
        ingest_documents(docs, index)
        query = hash_embedder.embed_queries(["document words 3", "words 5"])
        ids, scores = index.search_vectors(query, 10**9)  # padded to k, this would be 16 GB
        assert ids.shape == scores.shape == (2, 60) and (ids >= 0).all()
        assert 0 < len(index.keyword_search(["Document"], 10**9)[0]) <= 60
        for k in (0, -1, 2.5):
            with pytest.raises(ValueError, match="k must be an int >= 1"):
                index.search_vectors(query, k)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="k must be an int >= 1"):
                index.keyword_search(["Document"], k)  # type: ignore[arg-type]
        by_milvus = index.search_vectors(query, 35, filter={"odd": True})
        monkeypatch.setattr(milvus, "MAX_WINDOW", 20)  # k above what one Milvus search returns: exact, here
        by_numpy = index.search_vectors(query, 35, filter={"odd": True})
        np.testing.assert_array_equal(by_numpy[0][:, 30:], -1)
        np.testing.assert_allclose(by_numpy[1], by_milvus[1], atol=1e-5)
        assert [set(row[row >= 0].tolist()) for row in by_numpy[0]] == [set(row[row >= 0].tolist())
                                                                         for row in by_milvus[0]]


# -- what Milvus must hold exactly -----------------------------------------------------------------------------


def test_long_texts_and_odd_metadata_round_trip(where: str, hash_embedder: Any) -> None:
    text = ("Ünïcödé 🙂 北京 " * 3000) + "\x01 end"  # longer than one Milvus string (65,535 bytes)
    metadata = {"big": 2**63 - 1, "small": -(2**63), "float": 0.1, "neg0": -0.0, "nested": {"a": [1, None, "x"]},
                'quo"te': "new\nline", "empty": "", "list": [], "none": None}
    doc = Document(id="doc/ü 1", text=text, source="src/ü.txt", metadata=metadata)
    with Index.create(where, hash_embedder, chunk_size=0) as index:
        ingest_documents([doc], index)
    with Index.open(where, hash_embedder, read_only=True) as index:
        assert index.get_documents([doc.id]) == [doc]
        [chunk] = index.chunks_of(doc.id)
        assert chunk.text == text and dict(chunk.metadata) == metadata and chunk.source == doc.source
        assert index.document_states([doc.id]) == {doc.id: (doc.content_hash, 1)}


def test_a_value_milvus_cannot_hold_is_refused_naming_the_document(where: str, hash_embedder: Any) -> None:
    with Index.create(where, hash_embedder, chunk_size=0) as index:
        with pytest.raises(ValueError, match="document 'big'.*JSON field holds"):
            ingest_documents([Document(id="big", text="t", metadata={"blob": "x" * 70_000})], index)
        with pytest.raises(ValueError, match="the id of document"):
            ingest_documents([Document(id="i" * 20_000, text="t")], index)
        assert index.count().documents == 0


# -- keyword search ------------------------------------------------------------------------------------------


def test_keyword_search_analyses_text_like_the_local_index(where: str, hash_embedder: Any, tmp_path: Path) -> None:
    docs = [Document(id="en", text="The rankings were computed by ranking functions."),
            Document(id="zh", text="北京是中国的首都。"),
            Document(id="de", text="Größenordnung der Straße"),
            Document(id="code", text="call parse_config_file() then x_ray")]
    queries = ["ranked", "中国首都", "straße", "parse_config_file", "xray x_ray", "the of", "config"]
    with Index.create(where, hash_embedder, chunk_size=0) as milvus, \
            Index.create(tmp_path / "local", hash_embedder, chunk_size=0) as local:
        found = []
        for index in (milvus, local):
            ingest_documents(docs, index)
            results = index.keyword_search(queries, 5)
            found.append([[c.doc_id for c in index.get_chunks([i for i, _ in hits])] for hits in results])
        scores = [s for hits in milvus.keyword_search(queries, 5) for _, s in hits]
    # stop words match nothing; an identifier's parts match
    assert found[0] == found[1] == [["en"], ["zh"], ["de"], ["code"], ["code"], [], ["code"]]
    assert scores and all(s > 0 for s in scores)  # positive, as BM25 scores are (Milvus Lite negates them)


def test_an_index_from_before_identifier_splitting_searches_as_it_was_written(
        where: str, hash_embedder: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A version-1 index stored identifiers whole; its queries must be tokenised so too (otherwise the query's
    parts would find prose the stored identifiers never matched), and an unknown version is refused."""
    docs = [Document(id="code", text="call parse_config_file() first"),
            Document(id="prose", text="the config file is read at start")]
    @dataclasses.dataclass(frozen=True)
    class BeforeSplitting(BM25Config):
        identifiers: Literal["split", "none"] = "none"

    monkeypatch.setattr(milvus, "BM25Config", BeforeSplitting)
    with Index.create(where, hash_embedder, chunk_size=0) as index:
        ingest_documents(docs, index)
        manifest = index._store.get_meta("manifest")  # noqa: SLF001
    monkeypatch.undo()
    manifest["format_version"] = 1
    del manifest["index"]["bm25_config"]["identifiers"]
    with Index.open(where, hash_embedder) as index:
        index._store.set_meta("manifest", manifest)  # noqa: SLF001
    with Index.open(where, hash_embedder) as index:
        [hits] = index.keyword_search(["parse_config_file"], 5)
        assert [c.doc_id for c in index.get_chunks([i for i, _ in hits])] == ["code"]
        ingest_documents([Document(id="more", text="then write_boolean")], index)
        assert index.keyword_search(["boolean"], 5) == [[]]  # new chunks are written the old way too
    manifest["format_version"] = 99
    with Index.open(where, hash_embedder) as index:
        index._store.set_meta("manifest", manifest)  # noqa: SLF001
    with pytest.raises(milvus.IndexDamagedError, match="format version 99; this qwen3-rag reads versions 1, 2"):
        Index.open(where, hash_embedder)


# -- interrupted writes ----------------------------------------------------------------------------------------


def test_an_interrupted_commit_is_repaired_by_the_next_writer(where: str, hash_embedder: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    docs = [Document(id=f"d{i}", text=f"document {i} " * 30) for i in range(6)]
    with Index.create(where, hash_embedder, chunk_size=8, chunk_overlap=0) as index:
        ingest_documents(docs[:3], index)
    before = _contents(where)
    real = MilvusStore.upsert

    def dies_before_the_document_rows(self: MilvusStore, collection: str, rows: Any) -> None:
        if collection == self.documents:
            raise RuntimeError("killed")
        real(self, collection, rows)

    index = Index.open(where, hash_embedder)
    monkeypatch.setattr(MilvusStore, "upsert", dies_before_the_document_rows)
    with pytest.raises(RuntimeError, match="killed"):
        ingest_documents([*docs[:2], Document(id="d2", text="changed"), *docs[3:]], index)
    monkeypatch.setattr(MilvusStore, "upsert", real)
    assert index.count().documents == 2  # d2 was being replaced: without its row it is reported as changed
    index._closed = True  # noqa: SLF001 - as if the process had died here
    from qwen3_rag.indexers.milvus_connection import disconnect as _disconnect

    _disconnect(index._loc, index._store.client)  # noqa: SLF001
    with Index.open(where, hash_embedder) as index:  # the next writer removes what the journal names
        counts = index.count()
        assert counts.chunks == sum(len(index.chunks_of(d)) for d, _, _ in index.iter_documents())
        todo, _ = index.changed(docs[:3])
        assert [d.id for d in todo] == ["d2"]
        ingest_documents(docs[:3], index)
    assert _contents(where) == before


def _contents(location: str) -> list[tuple[Any, ...]]:
    with Index.open(location, read_only=True) as index:
        doc_ids = [d for d, _, _ in index.iter_documents()]
        docs = index.get_documents(doc_ids)
        chunks = [c for d in doc_ids for c in index.chunks_of(d)]
        vectors = index.get_vectors([c.chunk_id for c in chunks])
        counts = index.count()
    assert counts.chunks == len(chunks)  # no chunk without its document
    return [*((d.id, d.text, d.source, d.metadata) for d in docs),
            *((c.chunk_id, c.doc_id, c.index, c.text, c.start, c.end, c.start_line, c.end_line, v.tobytes())
              for c, v in zip(chunks, vectors, strict=True))]


def test_a_second_process_is_refused_while_the_lite_file_is_open(tmp_path: Path, hash_embedder: Any) -> None:
    location = f"milvus-lite://{tmp_path / 'locked.db'}/docs"
    Index.create(location, hash_embedder).close()
    holder = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(TESTS)!r})
        from qwen3_rag import Index
        index = Index.open({location!r}, read_only=True)
        print("open", flush=True)
        time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), str(TESTS)])}
    proc = subprocess.Popen([sys.executable, "-c", holder], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
        with pytest.raises(IndexLockedError, match="another process"):
            Index.open(location, hash_embedder)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    with Index.open(location, hash_embedder) as index:  # released with the process
        assert index.count().documents == 0


# -- the command line on a Milvus URI ---------------------------------------------------------------------------

NOTES = {"ops.md": "# Ops\n\nLogs are rotated daily at midnight.",
         "deploy.md": "# Deploys\n\nDeploys go out on Tuesdays after the tests pass.",
         "cats.txt": "Cats purr when they are happy and sleep most of the day."}


def _beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": t}) + "\n"
                                               for k, t in NOTES.items()))
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "when are logs rotated"}\n'
                                        '{"_id": "q2", "text": "why do cats purr"}\n')
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\tops.md\t1\nq2\tcats.txt\t1\n")
    return root


def test_the_cli_indexes_shows_searches_prunes_and_evaluates_a_milvus_uri(
        tmp_path: Path, tiny_qwen3_embedding_dir: str, capsys: pytest.CaptureFixture[str]) -> None:
    from qwen3_rag.cli import main

    model = tiny_qwen3_embedding_dir
    src = tmp_path / "notes"
    src.mkdir()
    for name, text in NOTES.items():
        (src / name).write_text(text)
    loc = f"milvus-lite://{tmp_path / 'cli.db'}/notes"
    assert main(["index", str(src), "--index", loc, "--model", model, "--no-progress"]) == 0
    assert "3 added" in capsys.readouterr().out
    assert main(["info", loc, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["path"], info["documents"], info["chunks"], info["model"]) == (loc, 3, 3, model)
    assert info["format_version"] == milvus.FORMAT_VERSION and "pymilvus" in info["versions"]
    assert main(["query", loc, "rotating logs", "--bm25", "-k", "3", "--json"]) == 0
    [hit] = json.loads(capsys.readouterr().out)  # the one note that shares a term (stemmed)
    assert hit["source"] == str(src / "ops.md") and set(hit["scores"]) == {"bm25"}
    assert main(["query", loc, "when are logs rotated", "--hybrid", "-k", "3", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 3
    assert main(["query", loc, "when are logs rotated", "-k", "3", "--filter", "format=text", "--json"]) == 0
    assert [h["source"] for h in json.loads(capsys.readouterr().out)] == [str(src / "cats.txt")]
    (src / "deploy.md").unlink()
    assert main(["index", str(src), "--index", loc, "--prune", "--no-progress"]) == 0
    assert "0 added, 0 updated, 2 unchanged, 0 skipped, 0 failed, 1 pruned" in capsys.readouterr().out

    data = _beir(tmp_path / "beir")
    metrics = []
    for where in (f"milvus-lite://{tmp_path / 'eval.db'}/beir", str(tmp_path / "local")):
        out = tmp_path / f"metrics-{len(metrics)}.json"
        assert main(["eval", "--dataset", str(data), "--model", model, "--chunk-size", "0", "--index", where,
                     "--modes", "dense,bm25,hybrid", "--json", str(out), "--no-progress"]) == 0
        metrics.append(json.loads(out.read_text()))
    assert metrics[0]["dense"] == pytest.approx(metrics[1]["dense"])  # the same vectors, the same ranking
    assert all(m["recall@100"] == 1.0 for m in metrics[0].values())


# -- kill -9 during `qwen3-rag index` --------------------------------------------------------------------------

CHILD = r'''
import sys, time
sys.path.insert(0, sys.argv[3])
from conftest import HashEmbedder
from qwen3_rag.indexers import milvus_store
from qwen3_rag.pipelines import ingest as ingest_module
from qwen3_rag.cli import main

class SlowHashEmbedder(HashEmbedder):
    """Slow enough to be killed mid-run; says when it embeds."""
    def embed_documents(self, texts):
        print("EMBED", flush=True)
        time.sleep(0.05)
        return super().embed_documents(texts)

upsert = milvus_store.MilvusStore.upsert
def announced(self, collection, rows):
    if collection == self.documents and rows:
        print("ROWS", flush=True)  # the chunks are written, the documents' rows not yet
        time.sleep(0.2)
    upsert(self, collection, rows)

milvus_store.MilvusStore.upsert = announced
ingest_module.load_embedder = lambda *a, **k: SlowHashEmbedder(None, dim=16)
sys.exit(main(["index", sys.argv[1], "--index", sys.argv[2], "--chunk-size", "12", "--chunk-overlap", "2",
               "--commit-every", "30", "--no-progress"]))
'''


def _run_until(cmd: list[str], env: dict[str, str], marker: str, count: int, delay: float) -> bool:
    """Start the child, kill -9 it ``delay`` s after its ``count``-th ``marker`` line; True if it was killed."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        seen += line.strip() == marker
        if seen >= count:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
            return proc.returncode == -signal.SIGKILL
    proc.communicate(timeout=60)
    return False


def test_kill_9_during_cli_index_then_a_rerun_equals_a_clean_run(tmp_path: Path) -> None:
    src = tmp_path / "corpus"
    src.mkdir()
    for i in range(120):
        (src / f"doc{i:03d}.txt").write_text(f"Document {i}. " + " ".join(f"w{(i * j) % 97}" for j in range(20)))
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent)}
    killed_loc = f"milvus-lite://{tmp_path / 'rag.db'}/killed"
    cmd = [sys.executable, str(script), str(src), killed_loc, str(TESTS)]
    rng = random.Random(0)
    kill_points = [("EMBED", 2, rng.uniform(0, 0.1)),  # while embedding or writing a batch
                   ("ROWS", 2, 0.05),  # in a commit: chunks written, the documents' rows not
                   ("EMBED", 4, rng.uniform(0, 0.1))]
    kills = sum(_run_until(cmd, env, marker, count, delay) for marker, count, delay in kill_points)
    assert kills == 3, "the child finished before it could be killed; make it slower"
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    added, unchanged = (int(n) for n in re.search(r"(\d+) added, \d+ updated, (\d+) unchanged", rerun.stdout).groups())
    assert 0 < unchanged < 120 and added + unchanged == 120  # resumed, did not start over
    clean_loc = f"milvus-lite://{tmp_path / 'rag.db'}/clean"
    clean = subprocess.run([sys.executable, str(script), str(src), clean_loc, str(TESTS)], env=env,
                           capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr
    killed, fresh = _contents(killed_loc), _contents(clean_loc)
    assert len(fresh) > 240 and killed == fresh  # the same documents, chunks (ids too) and vectors
    with Index.open(killed_loc, read_only=True) as index:
        ids, scores = index.search_vectors(index.get_vectors([row[0] for row in killed[120:140]]), k=1)
        assert np.all(scores[:, 0] > 0.999)  # and every chunk is found by search
