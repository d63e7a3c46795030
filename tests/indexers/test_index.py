"""The index directory: round trip, exact search, filters, upsert/delete on every type, durability,
refusals."""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qwen3_rag.indexers.chunking import Chunker
from qwen3_rag.indexers.filters import FilterError
from qwen3_rag.indexers.index import Index, IndexCounts, IndexLockedError, IndexMismatchError, WriteStats
from qwen3_rag.types import Document

SPECS = ["Flat", "HNSW16", "IVF4,Flat", "IVF4,PQ8"]
TOPICS = [
    "faiss vectors search",
    "sqlite durable store",
    "qwen embedding model",
    "chunk tokens text",
    "metadata filter query",
    "python code tests",
]


def corpus(n: int = 60, prefix: str = "d") -> list[Document]:
    docs = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        text = f"Document {i} is about {topic}. " + " ".join(
            f"word{(i * 7 + j) % 50}" for j in range(10 + i % 20)
        )
        docs.append(
            Document(
                id=f"{prefix}{i}",
                text=text,
                source=f"src/{prefix}{i}.txt",
                metadata={
                    "n": i,
                    "group": i % 3,
                    "topic": topic.split()[0],
                    **({"year": 2000 + i} if i % 4 else {}),
                },
            )
        )
    return docs


def brute_force(index: Index, q: np.ndarray, k: int, allowed: set[int] | None = None) -> list[int]:
    ids, vecs = [], []
    for i, v in index._store.iter_vectors(index.dim):  # noqa: SLF001 - the reference reads the truth directly
        ids.extend(i.tolist())
        vecs.append(v)
    sims = np.concatenate(vecs) @ q
    order = [ids[j] for j in np.argsort(-sims, kind="stable") if allowed is None or ids[j] in allowed]
    return order[:k]


def test_round_trip_and_flat_equals_numpy(tmp_path: Path, hash_embedder: Any) -> None:
    index = Index.create(tmp_path / "ix", hash_embedder, chunk_size=16, chunk_overlap=4)
    stats = index.upsert(corpus())
    assert stats.added == 60 and stats.chunks_added == index.count().chunks
    queries = hash_embedder.embed_queries([t for t in TOPICS])
    ids, scores = index.search_vectors(queries, k=7)
    for row, q in enumerate(queries):
        expected = brute_force(index, q, 7)
        # equal scores may swap places: compare scores, then the id sets of strictly separated prefixes
        ref_scores = np.sort(queries[row] @ np.stack([v for _, v in _vectors(index, expected)]).T)[::-1]
        np.testing.assert_allclose(scores[row], ref_scores, rtol=1e-5, atol=1e-5)
    before = [index.search(t, k=5) for t in TOPICS]
    counts = index.count()
    index.close()

    reopened = Index.open(tmp_path / "ix", hash_embedder, read_only=True)
    assert reopened.count() == counts
    assert [reopened.search(t, k=5) for t in TOPICS] == before
    hit = before[0][0]
    doc = reopened.get_document(hit.doc_id)
    assert doc is not None and doc.text[hit.start : hit.end] == hit.text
    assert hit.source == f"src/{hit.doc_id}.txt" and hit.metadata["n"] == int(hit.doc_id[1:])
    assert [c.chunk_id for c in reopened.get_chunks([hit.chunk_id, 10**9])] == [hit.chunk_id]
    assert sum(1 for _ in reopened.iter_chunks(batch_size=7)) == counts.chunks
    reopened.close()


def _vectors(index: Index, ids: list[int]) -> list[tuple[int, np.ndarray]]:
    got, vecs = index._store.vectors_of(ids, index.dim)  # noqa: SLF001
    by_id = dict(zip(got.tolist(), vecs, strict=True))
    return [(i, by_id[i]) for i in ids]


@pytest.mark.parametrize("spec", SPECS)
def test_filtered_search_returns_k_when_k_match(tmp_path: Path, hash_embedder: Any, spec: str) -> None:
    index = Index.create(tmp_path / "ix", hash_embedder, chunk_size=12, chunk_overlap=0, index_type=spec)
    index.upsert(corpus(120))
    q = hash_embedder.embed_queries(["qwen embedding model"])
    for flt, check in [
        ({"group": 1}, lambda md: md["group"] == 1),
        ({"year": {"$gte": 2100}}, lambda md: md.get("year", 0) >= 2100),
        (
            {"$or": [{"topic": "faiss"}, {"n": {"$in": [3, 5]}}]},
            lambda md: md["topic"] == "faiss" or md["n"] in (3, 5),
        ),
        ({"n": 7}, lambda md: md["n"] == 7),
        (lambda md: md["n"] % 10 == 0, lambda md: md["n"] % 10 == 0),
    ]:
        allowed = set(index.matching_ids(flt).tolist())
        k = 10
        ids, scores = index.search_vectors(q, k, filter=flt)
        got = [i for i in ids[0].tolist() if i >= 0]
        assert len(got) == min(k, len(allowed)), (flt, len(allowed))
        assert set(got) <= allowed
        for hit in index.hits(ids[0], scores[0]):
            assert check(hit.metadata | {"n": hit.metadata["n"]})
        if spec == "Flat":
            assert got == brute_force(index, q[0], k, allowed) or np.allclose(
                sorted(scores[0][: len(got)]), sorted(scores[0][: len(got)])
            )
    assert index.search_vectors(q, 5, filter={"group": 99})[0].tolist() == [[-1] * 5]
    with pytest.raises(FilterError, match="unknown operator"):
        index.search_vectors(q, 5, filter={"group": {"$like": 1}})
    index.close()


@pytest.mark.parametrize("spec", SPECS)
def test_upsert_and_delete(tmp_path: Path, hash_embedder: Any, spec: str) -> None:
    index = Index.create(tmp_path / "ix", hash_embedder, chunk_size=40, chunk_overlap=4, index_type=spec)
    docs = corpus(80)
    index.upsert(docs)
    old_ids = [c.chunk_id for c in index.chunks_of("d5")]
    n_embedded = hash_embedder.texts_embedded
    stats = index.upsert(docs)  # unchanged: nothing embedded
    assert stats.unchanged == 80 and hash_embedder.texts_embedded == n_embedded
    changed = Document(id="d5", text="A completely new text about zebras and giraffes.", metadata={"n": 5})
    stats = index.upsert([changed])
    assert (stats.updated, stats.chunks_removed) == (1, len(old_ids))
    new_chunks = index.chunks_of("d5")
    assert [c.text for c in new_chunks] == ["A completely new text about zebras and giraffes."]
    assert min(c.chunk_id for c in new_chunks) > max(old_ids)  # ids are never reused
    assert index.get_chunks(old_ids) == []
    q = hash_embedder.embed_queries(["zebras giraffes"])
    # This is about what upsert stores, not about recall: HNSW may link a lone new vector (here an outlier, far
    # from every other) to a single neighbour off the greedy path, so search the whole graph
    index.ef_search = len(index)
    ids, _ = index.search_vectors(q, 3)
    # PQ scores are approximate: the new chunk must be near the top, the exact types must rank it first
    assert new_chunks[0].chunk_id in (ids[0].tolist() if "PQ" in spec else ids[0][:1].tolist())
    assert not set(old_ids) & set(index.search_vectors(q, 200)[0][0].tolist())

    assert index.delete(["d5", "d6", "missing"]) == 2
    counts = index.count()
    assert counts.vectors == counts.chunks and counts.documents == 78
    ids, _ = index.search_vectors(q, 200)
    alive = set(index._store.all_chunk_ids().tolist())  # noqa: SLF001
    assert set(ids[0][ids[0] >= 0].tolist()) <= alive
    index.close()
    with Index.open(tmp_path / "ix", hash_embedder) as again:
        assert again.count() == counts
        assert not again.has_document("d5")
        with pytest.raises(ValueError, match="use upsert"):
            again.add([Document(id="d7", text="different")])


def test_hnsw_compaction_and_ivf_training(tmp_path: Path, hash_embedder: Any) -> None:
    index = Index.create(tmp_path / "h", hash_embedder, chunk_size=0, chunk_overlap=0, index_type="HNSW8")
    index.upsert(corpus(40))
    index.delete([f"d{i}" for i in range(8)])  # 20%: tombstones stay
    assert index.vectors.tombstones and index.count().vectors == 32
    ids, _ = index.search_vectors(hash_embedder.embed_queries(["faiss vectors"]), k=30)
    alive = set(index._store.all_chunk_ids().tolist())  # noqa: SLF001
    assert len(set(ids[0].tolist())) == 30 and set(ids[0].tolist()) <= alive  # k live hits despite tombstones
    index.delete([f"d{i}" for i in range(8, 14)])  # past 25%: compacted
    assert not index.vectors.tombstones and index.vectors.ntotal == 26
    index.close()

    ivf = Index.create(tmp_path / "i", hash_embedder, chunk_size=0, chunk_overlap=0, index_type="IVF2,Flat")
    ivf.upsert(corpus(50, "a"))
    assert ivf.manifest["index"]["effective"] == "Flat"  # 50 < 39 * 2: exact until trained
    ivf.upsert(corpus(50, "b"))
    assert ivf.manifest["index"]["effective"] == "IVF2,Flat"
    assert ivf.count().vectors == 100
    ivf.close()
    with Index.open(tmp_path / "i", read_only=True) as reader:
        assert reader.manifest["index"]["effective"] == "IVF2,Flat"


def test_model_mismatch_refused(tmp_path: Path, hash_embedder: Any, plain_tokenizer: Any) -> None:
    Index.create(tmp_path / "ix", hash_embedder, chunk_size=16, chunk_overlap=0).close()
    other = type(hash_embedder)(plain_tokenizer, dim=16, name="other-model")
    with pytest.raises(IndexMismatchError, match="hash-embedder.*other-model"):
        Index.open(tmp_path / "ix", other)
    with pytest.raises(ValueError, match="chunk_size 16, not 32"):
        Index.open_or_create(tmp_path / "ix", hash_embedder, chunk_size=32)
    with pytest.raises(FileExistsError):
        Index.create(tmp_path / "ix", hash_embedder)
    with pytest.raises(FileNotFoundError, match="no index at"):
        Index.open(tmp_path / "nothing")


def test_stale_or_missing_faiss_file_is_rebuilt(tmp_path: Path, hash_embedder: Any) -> None:
    index = Index.create(tmp_path / "ix", hash_embedder, chunk_size=16, chunk_overlap=0)
    index.upsert(corpus(30))
    expected = index.search("faiss vectors search", k=5)
    index.upsert(corpus(10, "extra"))
    index.commit()
    index.close()
    files = sorted(tmp_path.joinpath("ix").glob("vectors.*.faiss"))
    newest = max(files, key=lambda p: int(p.name.split(".")[1]))
    older = [f for f in files if f != newest]
    newest.unlink()  # as if killed between the store commit and the FAISS write
    if older:
        older[0].rename(newest)  # or a stale file under the right name: detected by its count
    with Index.open(tmp_path / "ix", hash_embedder) as again:
        assert again.count().vectors == again.count().chunks
        assert again.search("faiss vectors search", k=5)[:1] == expected[:1]


def test_one_writer_many_readers(tmp_path: Path, hash_embedder: Any) -> None:
    writer = Index.create(tmp_path / "ix", hash_embedder, chunk_size=16, chunk_overlap=0)
    writer.upsert(corpus(10))
    with pytest.raises(IndexLockedError, match="another process"):
        Index.open(tmp_path / "ix", hash_embedder)
    reader = Index.open(tmp_path / "ix", hash_embedder, read_only=True)
    assert reader.count().documents == 10
    with writer.batch():
        writer.upsert(corpus(5, "new"))
        assert reader.count(vectors=False).documents == 10  # uncommitted work is invisible
    assert reader.refresh() and reader.count().documents == 15
    with pytest.raises(PermissionError):
        reader.delete(["d1"])
    reader.close()
    writer.close()


def test_batch_rolls_back_on_error(tmp_path: Path, hash_embedder: Any) -> None:
    index = Index.create(tmp_path / "ix", hash_embedder, chunk_size=16, chunk_overlap=0)
    index.upsert(corpus(10))
    with pytest.raises(RuntimeError), index.batch():
        index.upsert(corpus(5, "lost"))
        index.delete(["d1"])
        raise RuntimeError("boom")
    counts = index.count()
    assert counts.documents == 10 and counts.vectors == counts.chunks
    assert index.has_document("d1") and not index.has_document("lost0")
    index.close()


def test_sidecar_sees_every_commit(tmp_path: Path, hash_embedder: Any) -> None:
    calls: list[tuple[int, set[int], set[int]]] = []

    class Recorder:
        name = "recorder"

        def on_commit(self, index: Index, generation: int, added: Any, removed: Any) -> None:
            calls.append((generation, set(added), set(removed)))

    index = Index.create(tmp_path / "ix", hash_embedder, chunk_size=16, chunk_overlap=0)
    index.register_sidecar(Recorder())
    index.upsert(corpus(3))
    first = {c.chunk_id for c in index.chunks_of("d0")}
    index.delete(["d0"])
    assert [g for g, _, _ in calls] == [1, 2] and calls[0][0] == 1
    assert first <= calls[0][1] and calls[1][2] == first
    assert index.sidecar_dir("recorder").is_dir()
    index.close()


def test_no_pickle_anywhere() -> None:
    root = Path(__file__).resolve().parents[2] / "qwen3_rag"
    for path in [*root.joinpath("indexers").glob("*.py"), root / "pipelines" / "ingest.py"]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = {
            a.name
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for a in node.names
        } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not names & {"pickle", "cPickle", "dill", "joblib", "cloudpickle"}, path
        assert "allow_pickle=True" not in path.read_text(encoding="utf-8"), path


def test_strings_get_content_hash_ids(tmp_path: Path, hash_embedder: Any) -> None:
    with Index.create(tmp_path / "ix", hash_embedder, chunk_size=16, chunk_overlap=0) as index:
        stats = index.add(["first text", "second text", {"text": "third", "metadata": {"k": 1}}])
        assert stats.added == 3
        assert index.add(["first text"]).unchanged == 1
        ids = [d for d, _, _ in index.iter_documents()]
        assert len(ids) == 3 and all(len(i) == 32 for i in ids)
    assert os.listdir(tmp_path / "ix")


def test_create_killed_halfway_is_not_an_index(tmp_path: Path, hash_embedder: Any) -> None:
    from qwen3_rag.indexers.store import Store

    (tmp_path / "ix").mkdir()
    Store(tmp_path / "ix" / "store.sqlite").close()  # schema written, manifest never committed
    assert not Index.exists(tmp_path / "ix")
    with Index.open_or_create(tmp_path / "ix", hash_embedder, chunk_size=16, chunk_overlap=0) as index:
        assert index.upsert(corpus(3)).added == 3
    assert Index.exists(tmp_path / "ix")


def test_get_vectors_in_order_and_missing_ids(tmp_path: Path, hash_embedder: Any) -> None:
    with Index.create(tmp_path / "ix", hash_embedder, chunk_size=16, chunk_overlap=0) as index:
        index.upsert(corpus(3))
        ids = [c.chunk_id for c in index.chunks_of("d2")] + [c.chunk_id for c in index.chunks_of("d0")]
        vecs = index.get_vectors(ids)
        assert vecs.shape == (len(ids), index.dim) and vecs.dtype == np.float32
        texts = [c.text for c in index.get_chunks(ids)]
        np.testing.assert_allclose(vecs, hash_embedder.embed_documents(texts), atol=1e-6)
        assert index.get_vectors([]).shape == (0, index.dim)
        gone = index.chunk_ids("d1")
        index.delete(["d1"])
        with pytest.raises(KeyError, match=str(gone[0])):
            index.get_vectors([ids[0], gone[0]])


def test_a_reader_follows_the_writer_when_its_faiss_file_is_written(tmp_path: Path, hash_embedder: Any) -> None:
    writer = Index.create(tmp_path / "ix", hash_embedder, chunk_size=16, chunk_overlap=0)
    writer.upsert(corpus(3))
    reader = Index.open(tmp_path / "ix", hash_embedder, read_only=True)
    probe = "zebras quietly crossing a frozen lake"
    assert all(h.doc_id != "zebra" for h in reader.search(probe, k=3))
    with writer.batch(flush_vectors=False):  # a bulk load's intermediate commit: no FAISS file yet
        writer.upsert([Document(id="zebra", text=probe)])
    before = reader.generation
    assert all(h.doc_id != "zebra" for h in reader.search(probe, k=3)) and reader.generation == before
    writer.close()  # writes the FAISS file of the last commit
    assert reader.search(probe, k=1)[0].doc_id == "zebra" and reader.generation == before + 1
    reader.close()


def test_another_max_length_is_warned_about(tmp_path: Path, hash_embedder: Any, caplog: Any) -> None:
    Index.create(tmp_path / "ix", hash_embedder, chunk_size=16, chunk_overlap=0).close()
    hash_embedder.describe = lambda: {**type(hash_embedder).describe(hash_embedder), "max_length": 256}
    with caplog.at_level("WARNING"), Index.open(tmp_path / "ix", hash_embedder):
        pass
    assert "max_length 512" in caplog.text and "--max-length 512" in caplog.text


def test_add_feeds_the_embedder_the_chunkers_token_ids(tmp_path: Path, tiny_embedder: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Index.add chunks documents in groups and gives a real Embedder the ids the chunker made: it never tokenizes
    a chunk again, and the stored vectors are the chunk texts' vectors. Without a fixed frame of special tokens
    (ids_from_content gives None) the texts are embedded instead, to the same vectors."""
    docs = corpus(80)
    calls: list[str] = []
    for name in ("tokenize", "embed_documents"):
        real = getattr(tiny_embedder, name)
        monkeypatch.setattr(tiny_embedder, name,
                            lambda texts, real=real, name=name: calls.append(name) or real(texts))

    def contents(path: Path) -> tuple[list[str], np.ndarray]:
        with Index.create(path, tiny_embedder, chunk_size=12, chunk_overlap=3) as index:
            stats = index.add(docs)
            assert stats.added == 80 and stats.chunks_added > 80
            chunk_ids = [c for c, _ in index.iter_chunks()]
            return [c.text for c in index.get_chunks(chunk_ids)], index.get_vectors(chunk_ids)

    texts, stored = contents(tmp_path / "ids")
    assert calls == []
    monkeypatch.setattr(tiny_embedder, "ids_from_content", lambda ids: None)
    texts_b, stored_b = contents(tmp_path / "texts")
    assert "embed_documents" in calls and texts_b == texts
    monkeypatch.undo()
    np.testing.assert_allclose(stored, tiny_embedder.embed_documents(texts), atol=1e-6)
    np.testing.assert_allclose(stored_b, stored, atol=1e-6)
    # the same chunks as chunking one document at a time
    chunker = Chunker.for_embedder(tiny_embedder, chunk_size=12, chunk_overlap=3)
    assert sorted(texts) == sorted(c.text for d in docs for c in chunker.chunk(d))


def test_add_chunked_writes_many_documents_as_add_chunks_does_one(tmp_path: Path, hash_embedder: Any) -> None:
    docs = corpus(1200)  # more than one IN (...) query's worth of ids
    chunker = Chunker(chunk_size=12, chunk_overlap=0)
    batch = [(d, chunker.chunk(d)) for d in docs]
    vectors = hash_embedder.embed_documents([c.text for _, chunks in batch for c in chunks])
    with Index.create(tmp_path / "one", hash_embedder, chunk_size=12, chunk_overlap=0) as one, \
            Index.create(tmp_path / "many", hash_embedder, chunk_size=12, chunk_overlap=0) as many:
        pos = 0
        with one.batch():
            for doc, chunks in batch:
                one.add_chunks(doc, chunks, vectors[pos:pos + len(chunks)])
                pos += len(chunks)
        per_doc = many.add_chunked(batch, vectors)
        assert [len(ids) for ids in per_doc] == [len(chunks) for _, chunks in batch]
        assert sum(per_doc, []) == list(range(len(vectors)))
        assert many.count() == one.count()
        assert many.chunks_of("d7") == one.chunks_of("d7") and many.get_document("d7") == one.get_document("d7")
        np.testing.assert_array_equal(many.get_vectors(per_doc[7]), one.get_vectors(per_doc[7]))
        assert many.matching_ids({"group": 3}).tolist() == one.matching_ids({"group": 3}).tolist()

        # replacing: the old chunks of every rewritten document go, in one write (over several IN queries)
        old = list(range(len(vectors)))
        rewritten = [Document(id=d.id, text=f"new text of {d.id}") for d in docs]
        replaced = [(d, chunker.chunk(d)) for d in rewritten]
        many.add_chunked(replaced, hash_embedder.embed_documents([d.text for d in rewritten]))
        assert many.get_chunks(old) == [] and many.count().chunks == many.count().vectors == len(docs)
        assert many.chunks_of("d1100")[0].text == "new text of d1100"
        new_ids = [many.chunks_of(i)[0].chunk_id for i in ("d1100", "d1")]
        assert many.chunk_texts([new_ids[0], -5, new_ids[1]]) == [(new_ids[0], "new text of d1100"),
                                                                  (new_ids[1], "new text of d1")]
        replaced = replaced[:2]

        with pytest.raises(ValueError, match="appears twice"):
            many.add_chunked([replaced[0], replaced[0]], np.zeros((2, many.dim)))
        with pytest.raises(ValueError, match="one vector per chunk"):
            many.add_chunked(replaced, np.zeros((3, many.dim)))
        with pytest.raises(ValueError, match="dimensions"):
            many.add_chunked(replaced, np.zeros((2, many.dim + 1)))
        assert many.chunks_of("d1")[0].text == "new text of d1"  # nothing was written by the refused calls


def test_a_failed_write_loses_nothing_and_a_write_of_nothing_commits_nothing(tmp_path: Path,
                                                                            hash_embedder: Any) -> None:
    with Index.create(tmp_path / "ix", hash_embedder, chunk_size=0, chunk_overlap=0) as index:
        index.add(corpus(4))
        generation, counts = index.generation, index.count()
        assert index.upsert(corpus(4)).unchanged == 4 and index.add([]).added == 0
        assert index.generation == generation  # no new commit, so no FAISS file rewritten, no sidecar rebuilt
        good = Document(id="d0", text="a valid change")
        bad = Document(id="d1", text="metadata JSON cannot sort", metadata={1: "x", "b": 2})
        with pytest.raises(TypeError):
            index.upsert([good, bad])
        pairs = [(d, index.chunker.chunk(d)) for d in (good, bad)]
        with pytest.raises(TypeError):  # outside any batch too
            index.add_chunked(pairs, hash_embedder.embed_documents([good.text, bad.text]))
        index.delete(["d3"])  # the next commit must not carry the failed write's deletes
        assert index.count() == IndexCounts(counts.documents - 1, counts.chunks - 1, counts.vectors - 1)
        assert index.get_document("d0") == corpus(4)[0] and index.has_document("d1")


def test_changed_and_delete_look_up_many_documents_at_once(tmp_path: Path, hash_embedder: Any) -> None:
    with Index.create(tmp_path / "ix", hash_embedder, chunk_size=0, chunk_overlap=0) as index:
        index.add(corpus(1100))
        hashes = index.document_hashes(["d0", "d1099", "nope"])
        assert hashes == {"d0": index.document_hash("d0"), "d1099": index.document_hash("d1099")}
        new = corpus(1102)
        new[5] = Document(id="d5", text="changed")
        todo, stats = index.changed(new)
        assert [d.id for d in todo] == ["d5", "d1100", "d1101"]
        assert (stats.added, stats.updated, stats.unchanged, stats.chunks_removed) == (2, 1, 1099, 1)
        with pytest.raises(ValueError, match="use upsert"):
            index.changed(new, replace=False)
        total = WriteStats(added=1)
        total.add(stats)
        assert (total.added, total.updated) == (3, 1)
        assert index.delete([f"d{i}" for i in range(0, 1100, 2)] + ["d0", "nope"]) == 550
        assert index.count().documents == 550 and not index.has_document("d1098") and index.has_document("d1099")
