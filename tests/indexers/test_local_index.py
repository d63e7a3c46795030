"""The local index (FAISS + SQLite in one directory): every index type, the files derived from the store (published,
checksummed, caught up, rebuilt when damaged), readers beside a writer, the lock, the format upgrade, refusals.
What every backend must do is in test_backend_conformance.py."""

from __future__ import annotations

import ast
import json
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from index_helpers import TOPICS, all_chunk_ids, corpus, oracle

from qwen3_rag import Document, Index, IndexDamagedError, IndexLockedError, ingest_documents
from qwen3_rag.indexers.local import LocalIndex

SPECS = ["Flat", "HNSW16", "IVF4,Flat", "IVF4,PQ8"]


def create(path: Path, embedder: Any, spec: str = "Flat", chunk_size: int = 12, **kwargs: Any) -> LocalIndex:
    index = Index.create(path, embedder, chunk_size=chunk_size, chunk_overlap=0, index_type=spec, **kwargs)
    assert isinstance(index, LocalIndex)
    return index


def derived_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.startswith(("vectors.", "bm25.")))


@pytest.mark.parametrize("spec", SPECS)
def test_filtered_search_returns_k_on_every_index_type(tmp_path: Path, hash_embedder: Any, spec: str) -> None:
    with create(tmp_path / "ix", hash_embedder, spec) as index:
        ingest_documents(corpus(120), index)
        query = hash_embedder.embed_queries(["qwen embedding model"])
        for flt in ({"group": 1}, {"n": 7}, {"$or": [{"topic": "faiss"}, {"n": {"$in": [3, 5]}}]},
                    lambda md: md["n"] % 10 == 0):
            allowed = {c.chunk_id for d in index.find_documents(flt) for c in index.chunks_of(d)}
            ids, _ = index.search_vectors(query, 10, filter=flt)
            got = [i for i in ids[0].tolist() if i >= 0]
            assert len(got) == min(10, len(allowed)) and set(got) <= allowed, (spec, flt)


@pytest.mark.parametrize("spec", SPECS)
def test_upsert_and_delete_on_every_index_type(tmp_path: Path, hash_embedder: Any, spec: str) -> None:
    with create(tmp_path / "ix", hash_embedder, spec, chunk_size=40) as index:
        ingest_documents(corpus(80), index)
        old = [c.chunk_id for c in index.chunks_of("d5")]
        changed = Document(id="d5", text="A completely new text about zebras and giraffes.", metadata={"n": 5})
        ingest_documents([changed], index)
        new = index.chunks_of("d5")
        query = hash_embedder.embed_queries(["zebras giraffes"])
        index.ef_search = len(index)  # about what upsert stores, not recall: HNSW searches its whole graph
        ids, _ = index.search_vectors(query, 3)
        # PQ scores are approximate: the new chunk is near the top; the exact types rank it first
        assert new[0].chunk_id in (ids[0].tolist() if "PQ" in spec else ids[0][:1].tolist())
        assert not set(old) & set(index.search_vectors(query, 200)[0][0].tolist())
        with index.transaction():
            assert index.delete(["d5", "d6", "missing"]) == 2
        counts = index.count()
        ids, _ = index.search_vectors(query, 200)
        assert set(ids[0][ids[0] >= 0].tolist()) <= set(all_chunk_ids(index))
    with Index.open(tmp_path / "ix", hash_embedder) as again:
        assert again.count() == counts and again.get_documents(["d5"]) == []


def test_hnsw_tombstones_compaction_and_ivf_training(tmp_path: Path, hash_embedder: Any) -> None:
    with create(tmp_path / "h", hash_embedder, "HNSW8", chunk_size=0) as index:
        ingest_documents(corpus(40), index)
        assert len(index.vectors) == 40  # built; from now on every commit catches it up
        index.delete([f"d{i}" for i in range(8)])  # 20%: tombstones stay
        assert index.vectors.tombstones and index.count().vectors == 32
        ids, _ = index.search_vectors(hash_embedder.embed_queries(["faiss vectors"]), k=30)
        assert len(set(ids[0].tolist())) == 30 and set(ids[0].tolist()) <= set(all_chunk_ids(index))
        index.delete([f"d{i}" for i in range(8, 14)])  # past 25%: compacted
        assert not index.vectors.tombstones and index.vectors.ntotal == 26
    with Index.open(tmp_path / "h", hash_embedder) as reopened:  # tombstones come back from the store
        assert reopened.count().vectors == 26

    with create(tmp_path / "i", hash_embedder, "IVF2,Flat", chunk_size=0) as ivf:
        ingest_documents(corpus(50, "a"), ivf)
        assert ivf.manifest["index"]["effective"] == "Flat"  # 50 < 39 * 2: exact until trained
        ingest_documents(corpus(50, "b"), ivf)
        assert ivf.manifest["index"]["effective"] == "IVF2,Flat" and ivf.vectors.is_trained
    with Index.open(tmp_path / "i", read_only=True) as reader:
        assert reader.manifest["index"]["effective"] == "IVF2,Flat" and len(reader) == 100


def test_an_exact_index_keeps_no_vector_file_and_old_files_go(tmp_path: Path, hash_embedder: Any) -> None:
    with create(tmp_path / "flat", hash_embedder) as index:
        ingest_documents(corpus(20), index)
        ingest_documents(corpus(5, "more"), index)
    assert derived_files(tmp_path / "flat") == ["bm25.2.npz"]  # the vectors live once, in the store
    create(tmp_path / "hnsw", hash_embedder, "HNSW8").close()
    for part in ("a", "b", "c"):
        with Index.open(tmp_path / "hnsw", hash_embedder) as index:
            ingest_documents(corpus(10, part), index)
            generation = index.generation
        assert derived_files(tmp_path / "hnsw") == [f"bm25.{generation}.npz", f"vectors.{generation}.faiss"]


def _search_all(index: Index, embedder: Any) -> list[list[tuple[int, float]]]:
    ids, scores = index.search_vectors(embedder.embed_queries(TOPICS), 10)
    keyword = index.keyword_search(TOPICS, 10)
    return [list(zip(i.tolist(), np.round(s, 5).tolist(), strict=True)) for i, s in zip(ids, scores, strict=True)] + \
        [[(c, round(s, 5)) for c, s in row] for row in keyword]


@pytest.mark.parametrize("damage", ["flip", "truncate", "foreign", "delete"])
@pytest.mark.parametrize("name", ["vectors", "bm25"])
def test_a_damaged_derived_file_is_rebuilt_never_trusted(tmp_path: Path, hash_embedder: Any, caplog: Any,
                                                         name: str, damage: str) -> None:
    with create(tmp_path / "ix", hash_embedder, "HNSW8") as index:
        ingest_documents(corpus(30), index)
        expected = _search_all(index, hash_embedder)
    with create(tmp_path / "other", hash_embedder, "HNSW8") as other:  # same generation, other content
        ingest_documents(corpus(30)[::-1], other)
    path = next((tmp_path / "ix").glob(f"{name}.*"))
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 3]))
    elif damage == "foreign":
        shutil.copy(next((tmp_path / "other").glob(f"{name}.*")), path)
    else:
        path.unlink()
    with caplog.at_level("WARNING"), Index.open(tmp_path / "ix", hash_embedder, read_only=True) as reader:
        assert _search_all(reader, hash_embedder) == expected
    assert f"rebuilding {name}" in caplog.text
    with Index.open(tmp_path / "ix", hash_embedder) as writer:  # a writer publishes a good file again
        assert _search_all(writer, hash_embedder) == expected
    record = _records(tmp_path / "ix")[name]
    assert (tmp_path / "ix" / record["file"]).stat().st_size == record["size"]
    caplog.clear()
    with caplog.at_level("WARNING"), Index.open(tmp_path / "ix", hash_embedder, read_only=True) as reader:
        assert _search_all(reader, hash_embedder) == expected
    assert "rebuilding" not in caplog.text


def _records(path: Path) -> dict[str, Any]:
    with sqlite3.connect(path / "store.sqlite") as conn:
        return dict(json.loads(conn.execute("SELECT value FROM meta WHERE key = 'derived'").fetchone()[0]))


def test_a_reader_sees_the_last_commit_while_a_writer_updates(tmp_path: Path, hash_embedder: Any) -> None:
    """A bulk load commits without publishing files; a reader open beside it answers from the last commit every
    time: k passages, each one stored now, none deleted."""
    writer = create(tmp_path / "ix", hash_embedder, "HNSW8")
    ingest_documents(corpus(30), writer)
    reader = Index.open(tmp_path / "ix", hash_embedder, read_only=True)
    query = hash_embedder.embed_queries(["zebras crossing a frozen lake"])
    for round_ in range(6):
        with writer.transaction(publish=False):  # delete and re-add, as an update of changed files does
            writer.delete([f"d{round_}", f"d{round_ + 10}"])
            ingest_documents([Document(id=f"z{round_}", text=f"zebras crossing a frozen lake {round_}")], writer)
        ids, scores = reader.search_vectors(query, 10)
        expected = oracle(writer, query[0], 10)  # brute force over what the writer committed
        np.testing.assert_allclose(scores[0], [s for _, s in expected], atol=1e-5)
        assert {i for i, s in expected if s > expected[-1][1] + 1e-5} <= set(ids[0].tolist())
        hits = reader.hits(ids[0], scores[0])
        assert len(hits) == 10 and all(h.text == writer.get_chunks([h.chunk_id])[0].text for h in hits)
        assert reader.keyword_search(["zebras"], 20)[0][0][0] in all_chunk_ids(writer)
    reader.close()
    writer.close()


def test_searches_beside_a_writing_thread_always_succeed(tmp_path: Path, hash_embedder: Any) -> None:
    with create(tmp_path / "ix", hash_embedder) as writer:
        ingest_documents(corpus(40), writer)
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with Index.open(tmp_path / "ix", hash_embedder) as w:
                n = 0
                while not stop.is_set() and n < 200:
                    with w.transaction(publish=n % 5 == 0):
                        w.delete([f"d{n % 40}"])
                        ingest_documents([corpus(40)[n % 40]], w)
                    n += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        with Index.open(tmp_path / "ix", hash_embedder, read_only=True) as reader:
            for _ in range(60):
                hits = reader.search("qwen embedding model", k=10)
                assert len(hits) == 10
    finally:
        stop.set()
        thread.join()
    assert not errors


def test_one_writer_many_readers(tmp_path: Path, hash_embedder: Any) -> None:
    writer = create(tmp_path / "ix", hash_embedder)
    ingest_documents(corpus(10), writer)
    with pytest.raises(IndexLockedError, match="another process"):
        Index.open(tmp_path / "ix", hash_embedder)
    reader = Index.open(tmp_path / "ix", hash_embedder, read_only=True)
    assert reader.count().documents == 10
    with writer.transaction():
        ingest_documents(corpus(5, "new"), writer)
        assert reader.count().documents == 10  # uncommitted work is invisible
    assert reader.count().documents == 15 and len(reader.search("document", k=1000)) == len(writer)
    reader.close()
    writer.close()


def test_a_copy_without_its_wal_files_is_searched_read_only(tmp_path: Path, hash_embedder: Any) -> None:
    with create(tmp_path / "ix", hash_embedder) as index:
        ingest_documents(corpus(10), index)
        expected = index.search("faiss vectors", k=3)
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "ix", copy, ignore=shutil.ignore_patterns("*-wal", "*-shm", ".lock"))
    with Index.open(copy, hash_embedder, read_only=True) as reader:
        assert reader.search("faiss vectors", k=3) == expected
    assert not any(p.name.endswith(("-wal", "-shm")) for p in copy.iterdir())  # a reader writes nothing


def test_create_refuses_a_folder_that_is_not_an_index(tmp_path: Path, hash_embedder: Any) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.tmp").write_text("keep me")
    (folder / "manifest.json").write_text('{"mine": true}')
    with pytest.raises(FileExistsError, match="not empty and is not an index.*notes.tmp"):
        Index.create(folder, hash_embedder)
    assert (folder / "notes.tmp").read_text() == "keep me" and json.loads((folder / "manifest.json").read_text())
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        Index.create(tmp_path / "file", hash_embedder)


def test_create_killed_halfway_is_not_an_index(tmp_path: Path, hash_embedder: Any) -> None:
    from qwen3_rag.indexers.store import Store

    (tmp_path / "ix").mkdir()
    Store(tmp_path / "ix" / "store.sqlite").close()  # schema written, manifest never committed
    assert not Index.exists(tmp_path / "ix")
    with Index.open_or_create(tmp_path / "ix", hash_embedder, chunk_size=16, chunk_overlap=0) as index:
        assert ingest_documents(corpus(3), index).added == 3
    assert Index.exists(tmp_path / "ix")


V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE documents (doc_id TEXT PRIMARY KEY, source TEXT NOT NULL, content_hash TEXT NOT NULL, text TEXT NOT NULL,
    metadata TEXT NOT NULL, fmeta TEXT NOT NULL, n_chunks INTEGER NOT NULL, updated_at REAL NOT NULL);
CREATE INDEX documents_source ON documents(source);
CREATE TABLE chunks (id INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, position INTEGER NOT NULL, text TEXT NOT NULL,
    start_char INTEGER NOT NULL, end_char INTEGER NOT NULL, page INTEGER, headings TEXT NOT NULL, vector BLOB NOT NULL);
CREATE INDEX chunks_doc ON chunks(doc_id, position);
"""


def test_a_format_1_index_is_upgraded_on_open(tmp_path: Path, hash_embedder: Any) -> None:
    """An index written by the first format (chunk texts stored twice, no lines) opens for writing, is upgraded in
    one transaction and then reads exactly as if written now."""
    with create(tmp_path / "now", hash_embedder) as index:
        ingest_documents([*corpus(6), Document(id="u", text="é\x00😀 line one\nline two ünïcode\nthree")], index)
        docs = [d for d, _, _ in index.iter_documents()]
        chunks = [index.chunks_of(d) for d in docs]
        manifest = index.manifest
    old = tmp_path / "old"
    old.mkdir()
    with sqlite3.connect(old / "store.sqlite") as conn:
        conn.executescript(V1_SCHEMA)
        stored = {**{k: v for k, v in manifest.items() if k not in ("counts", "generation")}, "format_version": 1}
        for key, value in (("manifest", stored), ("generation", 3), ("next_id", 10**6)):
            conn.execute("INSERT INTO meta VALUES (?, ?)", (key, json.dumps(value)))
        with Index.open(tmp_path / "now", read_only=True) as now:
            for doc in now.get_documents(docs):
                conn.execute("INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
                             (doc.id, doc.source, doc.content_hash, doc.text, json.dumps(dict(doc.metadata)),
                              json.dumps({"doc_id": doc.id, "source": doc.source, **doc.metadata}),
                              len(now.chunks_of(doc.id))))
                for c in now.chunks_of(doc.id):
                    conn.execute("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                 (c.chunk_id, c.doc_id, c.index, c.text, c.start, c.end, c.page,
                                  json.dumps(list(c.headings)), now.get_vectors([c.chunk_id])[0].tobytes()))
    with pytest.raises(Exception, match="format 1"):
        Index.open(old, hash_embedder, read_only=True)
    with Index.open(old, hash_embedder) as upgraded:
        assert [upgraded.chunks_of(d) for d in docs] == chunks
        assert upgraded.manifest["format_version"] == 3 and upgraded.search("faiss", k=3)


def test_a_format_2_index_gains_its_checksums_on_open(tmp_path: Path, hash_embedder: Any) -> None:
    """A store written before rows carried checksums is upgraded by its first writer and then reads exactly as
    before, checked."""
    with create(tmp_path / "ix", hash_embedder, "HNSW8") as index:
        ingest_documents(corpus(12), index)
        index.delete(["d3"])
        expected = _search_all(index, hash_embedder)
        chunks = [index.chunks_of(f"d{i}") for i in range(12)]
    with sqlite3.connect(tmp_path / "ix" / "store.sqlite") as conn:
        for table, columns in (("meta", ["crc"]), ("documents", ["crc", "tcrc", "fcrc", "chunk_ids"]),
                               ("chunks", ["crc", "vcrc"]), ("removals", ["crc"])):
            for column in columns:
                conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.execute("CREATE INDEX chunks_doc ON chunks(doc_id, position)")
        manifest = json.loads(conn.execute("SELECT value FROM meta WHERE key = 'manifest'").fetchone()[0])
        conn.execute("UPDATE meta SET value = ? WHERE key = 'manifest'",
                     (json.dumps({**manifest, "format_version": 2}),))
    with pytest.raises(IndexDamagedError, match="format 2; open it once for writing"):
        Index.open(tmp_path / "ix", hash_embedder, read_only=True)
    with Index.open(tmp_path / "ix", hash_embedder) as upgraded:
        assert upgraded.manifest["format_version"] == 3
    with Index.open(tmp_path / "ix", hash_embedder, read_only=True) as reader:
        assert _search_all(reader, hash_embedder) == expected
        assert [reader.chunks_of(f"d{i}") for i in range(12)] == chunks


def test_another_max_length_is_warned_about(tmp_path: Path, hash_embedder: Any, caplog: Any) -> None:
    create(tmp_path / "ix", hash_embedder).close()
    hash_embedder.describe = lambda: {**type(hash_embedder).describe(hash_embedder), "max_length": 256}
    with caplog.at_level("WARNING"), Index.open(tmp_path / "ix", hash_embedder):
        pass
    assert "max_length 512" in caplog.text and "use max_length=512" in caplog.text


def test_no_pickle_anywhere() -> None:
    root = Path(__file__).resolve().parents[2] / "qwen3_rag"
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {a.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                 for a in node.names}
        names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not names & {"pickle", "cPickle", "dill", "joblib", "cloudpickle"}, path
        assert "allow_pickle=True" not in path.read_text(encoding="utf-8"), path


def test_a_huge_k_is_cut_at_what_the_index_holds(tmp_path: Path, hash_embedder: Any) -> None:
    with create(tmp_path / "ix", hash_embedder, "HNSW8") as index:
        ingest_documents(corpus(10), index)
        query = hash_embedder.embed_queries(["faiss"])
        ids, scores = index.search_vectors(query, 10**9)  # padded to k, this would be 12 GB
        assert ids.shape == scores.shape == (1, len(index)) and (ids >= 0).all()
        assert 0 < len(index.keyword_search(["Document"], 10**9)[0]) <= len(index)  # only chunks with the term
        assert index.search_vectors(query, 10_000)[0].shape == (1, 10_000)  # up to there: padded to k
        for k in (0, -1, 2.5):
            with pytest.raises(ValueError, match="k must be an int >= 1"):
                index.search_vectors(query, k)  # type: ignore[arg-type]
