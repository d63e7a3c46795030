"""The storage contract (:class:`qwen3_rag.protocols.StorageBackend`): one set of tests every backend must pass.

A backend joins by adding a ``location`` parameter below. Each test builds its index through the public write loop
and checks it against oracles computed from the backend's own public reads (brute-force search over
``get_vectors``, the corpus itself), never against another backend's answers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import fake_backend
import numpy as np
import pytest
from index_helpers import TOPICS, corpus, oracle

from qwen3_rag import Document, Index, IndexMismatchError, ingest_documents
from qwen3_rag.indexers.bm25 import BM25Config
from qwen3_rag.indexers.chunking import Chunker
from qwen3_rag.indexers.filters import FilterError, matches
from qwen3_rag.pipelines.writing import DocumentWriter
from qwen3_rag.protocols import PARTIAL
from qwen3_rag.types import line_spans

fake_backend.register()

@pytest.fixture(params=["local", "fake", "milvus-lite"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "ix")
    if request.param == "milvus-lite":
        pytest.importorskip("milvus_lite", reason="the [milvus] extra is not installed")
        return f"milvus-lite://{tmp_path / 'ix.db'}/ix"
    return f"jsonfake://{tmp_path / 'ix.json'}"


def build(location: str, embedder: Any, docs: list[Document] | None = None) -> Index:
    index = Index.create(location, embedder, chunk_size=12, chunk_overlap=3)
    ingest_documents(corpus() if docs is None else docs, index)
    return index


def test_round_trip_is_exact(location: str, hash_embedder: Any) -> None:
    docs = corpus()
    build(location, hash_embedder, docs).close()
    with Index.open(location, hash_embedder, read_only=True) as index:
        counts = index.count()
        assert counts.documents == len(docs) and counts.chunks == counts.vectors > len(docs)
        assert index.get_documents(["d3", "nope", "d1"]) == [docs[3], docs[1]]
        assert [d for d, _, _ in index.iter_documents()] == sorted(d.id for d in docs)
        for doc in docs[:10]:
            chunks = index.chunks_of(doc.id)
            assert [c.index for c in chunks] == list(range(len(chunks)))
            spans = [(c.start, c.end) for c in chunks]
            assert [c.text for c in chunks] == [doc.text[a:b] for a, b in spans]
            assert [(c.start_line, c.end_line) for c in chunks] == line_spans(doc.text, spans)
            assert all(c.source == doc.source and dict(c.metadata) == dict(doc.metadata) for c in chunks)
        ids = [c.chunk_id for c in index.chunks_of("d5")]
        assert [c.chunk_id for c in index.get_chunks([ids[-1], 10**12, ids[0]])] == [ids[-1], ids[0]]
        assert index.model_info["model"] == "hash-embedder" and index.dim == hash_embedder.dim
        assert (index.chunking.chunk_size, index.chunking.chunk_overlap) == (12, 3)


def test_dense_search_equals_brute_force(location: str, hash_embedder: Any) -> None:
    with build(location, hash_embedder) as index:
        queries = hash_embedder.embed_queries(TOPICS)
        ids, scores = index.search_vectors(queries, k=7)
        assert ids.shape == scores.shape == (len(TOPICS), 7) and ids.dtype == np.int64
        for row, query in enumerate(queries):
            expected = oracle(index, query, 7)
            np.testing.assert_allclose(scores[row], [s for _, s in expected], atol=1e-5)
            # equal scores may trade places at the cut: every id scoring strictly above it must be there
            assert {i for i, s in expected if s > expected[-1][1] + 1e-5} <= set(ids[row].tolist())
        hits = index.search(TOPICS[0], k=3)
        np.testing.assert_allclose([h.score for h in hits], scores[0][:3], atol=1e-5)
        assert hits[0].scores == {"dense": hits[0].score}
        assert hits[0].text == index.get_chunks([hits[0].chunk_id])[0].text


@pytest.mark.parametrize("flt", [{"group": 1}, {"year": {"$gte": 2030}}, {"n": 7},
                                 {"$or": [{"topic": "faiss"}, {"n": {"$in": [3, 5]}}]}, {"group": 99}])
def test_filters_apply_inside_the_search(location: str, hash_embedder: Any, flt: dict[str, Any]) -> None:
    docs = corpus()
    with build(location, hash_embedder, docs) as index:
        wanted = sorted(d.id for d in docs if matches(flt, {"doc_id": d.id, "source": d.source, **d.metadata}))
        assert index.find_documents(flt) == wanted
        allowed = {c.chunk_id for d in wanted for c in index.chunks_of(d)}
        query = hash_embedder.embed_queries(["qwen embedding model"])
        k = 10
        ids, scores = index.search_vectors(query, k, filter=flt)
        got = [i for i in ids[0].tolist() if i >= 0]
        assert len(got) == min(k, len(allowed))  # k hits whenever k chunks match
        assert set(got) <= allowed and ids[0].tolist()[len(got):] == [-1] * (k - len(got))
        np.testing.assert_allclose(scores[0][:len(got)], [s for _, s in oracle(index, query[0], k, allowed)],
                                   atol=1e-5)
        for chunk_id, _ in index.keyword_search(["word7 word8"], 50, filter=flt)[0]:
            assert chunk_id in allowed
        with pytest.raises(FilterError):
            index.search_vectors(query, 5, filter={"group": {"$like": 1}})


def test_upserts_replace_and_unchanged_documents_are_not_rewritten(location: str, hash_embedder: Any) -> None:
    docs = corpus()
    with build(location, hash_embedder, docs) as index:
        old = [c.chunk_id for c in index.chunks_of("d5")]
        embedded = hash_embedder.texts_embedded
        changed = Document(id="d5", text="A completely new text about zebras and giraffes.", metadata={"n": 5})
        report = ingest_documents([*docs[:5], changed, *docs[6:]], index)
        assert (report.added, report.updated, report.unchanged) == (0, 1, len(docs) - 1)
        new = index.chunks_of("d5")
        assert report.chunks_removed == len(old) and report.chunks_added == len(new)
        assert hash_embedder.texts_embedded == embedded + len(new)  # only the changed document was embedded
        assert [c.text for c in new] == [changed.text[c.start:c.end] for c in new] and index.get_chunks(old) == []
        assert not {c.chunk_id for c in new} & set(old)  # ids are not reused for other content
        ids, _ = index.search_vectors(hash_embedder.embed_queries(["zebras giraffes"]), 200)
        assert ids[0][0] in {c.chunk_id for c in new} and not set(old) & set(ids[0].tolist())
        assert index.document_hashes(["d5", "d6", "nope"]) == {"d5": changed.content_hash,
                                                              "d6": docs[6].content_hash}
        assert index.document_states(["d5"]) == {"d5": (changed.content_hash, len(new))}
        todo, stats = index.changed([changed, docs[7], Document(id="fresh", text="x")])
        assert [d.id for d in todo] == ["fresh"] and (stats.added, stats.unchanged) == (1, 2)
        with pytest.raises(ValueError, match="already exists with other content"):
            index.changed([docs[5]], replace=False)


def test_deletes_remove_every_chunk_of_a_document(location: str, hash_embedder: Any) -> None:
    with build(location, hash_embedder) as index:
        gone = [c.chunk_id for d in ("d1", "d2") for c in index.chunks_of(d)]
        before = index.count()
        with index.transaction():
            assert index.delete(["d1", "d2", "missing"]) == 2
        after = index.count()
        assert (after.documents, after.chunks) == (before.documents - 2, before.chunks - len(gone))
        ids, _ = index.search_vectors(hash_embedder.embed_queries(TOPICS), before.chunks)
        assert not set(gone) & set(ids.ravel().tolist())
        assert not {c for c, _ in index.keyword_search(["Document"], 1000)[0]} & set(gone)
        with pytest.raises(KeyError):
            index.get_vectors(gone[:1])


def test_reopen_and_model_mismatch_is_refused(location: str, hash_embedder: Any, plain_tokenizer: Any) -> None:
    build(location, hash_embedder).close()
    other = type(hash_embedder)(plain_tokenizer, dim=16, name="other-model")
    with pytest.raises(IndexMismatchError, match="hash-embedder.*other-model"):
        Index.open(location, other)
    with pytest.raises(FileExistsError):
        Index.create(location, hash_embedder)
    with Index.open(location, hash_embedder) as index:
        assert index.count().documents == 40
        with pytest.raises(ValueError, match="chunk_size 12, not 32"):
            index._check_settings(chunk_size=32)  # noqa: SLF001 - open_or_create's check, without reopening


def test_an_exception_in_a_transaction_rolls_it_back(location: str, hash_embedder: Any) -> None:
    with build(location, hash_embedder) as index:
        before = (index.count(), index.get_documents(["d1"]))
        with pytest.raises(RuntimeError, match="boom"), index.transaction():
            ingest_documents([Document(id="lost", text="never committed")], index)
            index.delete(["d1"])
            raise RuntimeError("boom")
        assert (index.count(), index.get_documents(["d1"])) == before and index.get_documents(["lost"]) == []


CRASH = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, sys.argv[2])
    import fake_backend
    from conftest import HashEmbedder, build_tokenizer
    from qwen3_rag import Document, Index, ingest_documents
    fake_backend.register()
    index = Index.open(sys.argv[1], HashEmbedder(build_tokenizer(append_endoftext=False)))
    with index.transaction():
        ingest_documents([Document(id=f"new{i}", text=f"uncommitted {i}") for i in range(30)], index)
        index.delete(["d0"])
        os._exit(9)  # killed before the commit
""")


def test_a_crash_before_the_commit_leaves_the_last_commit(location: str, hash_embedder: Any, tmp_path: Path) -> None:
    build(location, hash_embedder).close()
    with Index.open(location, hash_embedder, read_only=True) as index:
        before = (index.count(), [index.chunks_of(d) for d, _, _ in index.iter_documents()])
    tests = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(tests).parent), tests])}
    done = subprocess.run([sys.executable, "-c", CRASH, location, tests], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 9, done.stderr
    with Index.open(location, hash_embedder) as index:
        assert (index.count(), [index.chunks_of(d) for d, _, _ in index.iter_documents()]) == before
        assert ingest_documents(corpus(), index).unchanged == 40  # and the next run carries on from there


def test_keyword_search_finds_chunks_that_share_a_term(location: str, hash_embedder: Any) -> None:
    with build(location, hash_embedder) as index:
        results = index.keyword_search(["sqlite durable", "zzz-no-such-term"], 5)
        assert len(results) == 2 and results[1] == []
        found = index.get_chunks([c for c, _ in results[0]])
        assert found and all("sqlite" in c.text.lower() or "durable" in c.text.lower() for c in found)
        scores = [s for _, s in results[0]]
        assert scores == sorted(scores, reverse=True) and scores[0] > 0


def test_vectors_given_with_documents_are_stored_as_unit_rows(location: str, hash_embedder: Any) -> None:
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((3, hash_embedder.dim)).astype(np.float32) * 3
    with Index.create(location, hash_embedder, chunk_size=0, chunk_overlap=0) as index:
        with DocumentWriter(index, chunker="whole") as writer:
            for i, vector in enumerate(raw):
                writer.add(Document(id=f"v{i}", text=f"text {i}"), vector)
        ids = [index.chunks_of(f"v{i}")[0].chunk_id for i in range(3)]
        np.testing.assert_allclose(index.get_vectors(ids), raw / np.linalg.norm(raw, axis=1, keepdims=True),
                                   atol=1e-6)
        with pytest.raises(ValueError):
            index.write([(Document(id="bad", text="t"), index.chunks_of("v0"))], np.zeros((2, index.dim)))


def test_a_read_only_index_refuses_writes(location: str, hash_embedder: Any) -> None:
    build(location, hash_embedder).close()
    with Index.open(location, hash_embedder, read_only=True) as index:
        assert index.read_only
        with pytest.raises((PermissionError, ValueError)):
            ingest_documents([Document(id="x", text="y")], index)
        with pytest.raises(PermissionError):
            index.delete(["d1"])


def test_hybrid_settings_are_stored_with_the_index(location: str, hash_embedder: Any) -> None:
    settings = {"fusion": "convex", "alpha": 0.8, "calibration": {"dataset": "mine", "queries": 40}}
    with build(location, hash_embedder) as index:
        assert index.hybrid_settings is None
        assert index.keyword_config == BM25Config()  # a new index tokenises as the defaults say
        index.set_hybrid_settings(settings)
        assert index.hybrid_settings == settings
        index.hybrid_settings["alpha"] = 0.1  # a copy: the stored settings do not change
        before = stored(index)
    with Index.open(location, hash_embedder, read_only=True) as index:
        assert index.hybrid_settings == settings and Index.read_manifest(location)["hybrid"] == settings
        assert stored(index) == before  # the documents are untouched
        with pytest.raises(PermissionError):
            index.set_hybrid_settings(None)
    with Index.open(location, hash_embedder) as index:
        index.set_hybrid_settings(None)
    with Index.open(location, hash_embedder, read_only=True) as index:
        assert index.hybrid_settings is None and "hybrid" not in index.manifest


LONG = Document(id="long", text=" ".join(f"word{i % 97} and more text {i}." for i in range(150)), source="long.txt",
                metadata={"n": -1, "group": 1})
PARTS_CORPUS = [*corpus(6), LONG, *corpus(4, "after")]


def stored(index: Index) -> tuple[Any, ...]:
    """Everything stored, by document (chunk ids depend on how the writes went)."""
    docs = [d for d, _, _ in index.iter_documents()]
    chunks = {d: [(c.index, c.start, c.end, c.text) for c in index.chunks_of(d)] for d in docs}
    vectors = {d: np.round(index.get_vectors([c.chunk_id for c in index.chunks_of(d)]), 6).tolist() for d in docs}
    listed = sum(len(v) for v in chunks.values())
    ids, _ = index.search_vectors(np.ones((1, index.dim), np.float32) / np.sqrt(index.dim), 10 * listed)
    return index.count(), listed, sorted(int(i) for i in ids[0] if i >= 0) == sorted(
        c.chunk_id for d in docs for c in index.chunks_of(d)), index.document_states(docs), chunks, vectors


def counted_commits(index: Index) -> list[int]:
    """The number of chunks each commit of ``index`` writes, recorded from now on."""
    commits: list[int] = []
    pending = [0]
    write, commit = index.write, index.commit

    def counting_write(items: Any, vectors: Any, **kwargs: Any) -> Any:
        pending[0] += sum(len(chunks) for _, chunks in items)
        return write(items, vectors, **kwargs)

    def counting_commit(**kwargs: Any) -> None:
        if pending[0]:
            commits.append(pending[0])
        pending[0] = 0
        commit(**kwargs)

    index.write, index.commit = counting_write, counting_commit  # type: ignore[method-assign]
    return commits


def test_a_long_document_is_written_in_parts_of_commit_every_chunks(location: str, hash_embedder: Any,
                                                                    tmp_path: Path) -> None:
    with Index.create(f"{location}_whole" if "://" in location else tmp_path / "whole", hash_embedder,
                      chunk_size=12, chunk_overlap=3) as whole:
        ingest_documents(PARTS_CORPUS, whole, commit_every=10_000)
        expected = stored(whole)
    n_long = len(expected[4]["long"])
    assert n_long > 5 * 16
    with Index.create(location, hash_embedder, chunk_size=12, chunk_overlap=3) as index:
        commits = counted_commits(index)
        report = ingest_documents(PARTS_CORPUS, index, commit_every=16)
        assert max(commits) == 16 and sum(commits) == expected[1] == report.chunks_added
        assert len(commits) == -(-expected[1] // 16)  # every commit full but the last: parts fill the batches
        assert report.added == len(PARTS_CORPUS) and stored(index) == expected
    with Index.open(location, hash_embedder) as index:
        assert ingest_documents(PARTS_CORPUS, index, commit_every=16).unchanged == len(PARTS_CORPUS)


def test_a_document_written_in_parts_is_partial_until_its_last_part(location: str, hash_embedder: Any) -> None:
    chunker = Chunker.for_embedder(hash_embedder, 12, 3)
    chunks = chunker.chunk(LONG)
    vectors = hash_embedder.embed_documents([c.text for c in chunks])
    with Index.create(location, hash_embedder, chunk_size=12, chunk_overlap=3) as index:
        index.write([(LONG, chunks[:5])], vectors[:5], complete=False)
        assert index.document_states(["long"]) == {"long": (PARTIAL, 5)}
        index.write([(LONG, chunks[5:9])], vectors[5:9], append=True, complete=False)
        assert index.document_states(["long"]) == {"long": (PARTIAL, 9)}
        todo, stats = index.changed([LONG], replace=False)  # never stored whole: written again, not "replaced"
        assert todo == [LONG] and (stats.added, stats.chunks_removed) == (1, 9)
        index.write([(LONG, chunks[9:])], vectors[9:], append=True)
        assert index.document_states(["long"]) == {"long": (LONG.content_hash, len(chunks))}
        assert [(c.index, c.text) for c in index.chunks_of("long")] == [(c.index, c.text) for c in chunks]
        with pytest.raises(ValueError, match="not stored"):
            index.write([(Document(id="nope", text="x"), chunks[:1])], vectors[:1], append=True)


class _Dies(Exception):
    pass


def test_a_run_stopped_between_parts_writes_the_document_again_whole(location: str, hash_embedder: Any,
                                                                     tmp_path: Path) -> None:
    with Index.create(f"{location}_whole" if "://" in location else tmp_path / "whole", hash_embedder,
                      chunk_size=12, chunk_overlap=3) as whole:
        ingest_documents(PARTS_CORPUS, whole)
        expected = stored(whole)
    calls = [0]
    embed = hash_embedder.embed_documents

    def dies_on_the_eighth_batch(texts: Any) -> Any:  # the sixth holds the first part of the long document
        calls[0] += 1
        if calls[0] == 8:
            raise _Dies()
        return embed(texts)

    with Index.create(location, hash_embedder, chunk_size=12, chunk_overlap=3) as index:
        hash_embedder.embed_documents = dies_on_the_eighth_batch
        with pytest.raises(_Dies):
            ingest_documents(PARTS_CORPUS, index, commit_every=16)
        hash_embedder.embed_documents = embed
        digest, n = index.document_states(["long"])["long"]
        assert digest == PARTIAL and 0 < n < len(expected[4]["long"])  # seven commits in: a part of it stored
        report = ingest_documents(PARTS_CORPUS, index, commit_every=16, replace=False)
        assert (report.added, report.unchanged, report.chunks_removed) == (1 + 4, 6, n)
        assert stored(index) == expected  # no duplicate, no orphan


KILLED = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, sys.argv[2])
    import fake_backend
    from conftest import HashEmbedder, build_tokenizer
    from test_backend_conformance import PARTS_CORPUS
    from qwen3_rag import Index, ingest_documents
    fake_backend.register()
    embedder = HashEmbedder(build_tokenizer(append_endoftext=False))
    embed, calls = embedder.embed_documents, []
    def dies(texts):
        calls.append(1)
        if len(calls) == 8:
            os._exit(9)  # killed between two parts of the long document
        return embed(texts)
    embedder.embed_documents = dies
    with Index.open(sys.argv[1], embedder) as index:
        ingest_documents(PARTS_CORPUS, index, commit_every=16)
""")


def test_a_run_killed_between_parts_writes_the_document_again_whole(location: str, hash_embedder: Any,
                                                                    tmp_path: Path) -> None:
    with Index.create(f"{location}_whole" if "://" in location else tmp_path / "whole", hash_embedder,
                      chunk_size=12, chunk_overlap=3) as whole:
        ingest_documents(PARTS_CORPUS, whole)
        expected = stored(whole)
    Index.create(location, hash_embedder, chunk_size=12, chunk_overlap=3).close()
    tests = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(tests).parent), tests, str(Path(__file__).parent)])}
    done = subprocess.run([sys.executable, "-c", KILLED, location, tests], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 9, done.stderr
    with Index.open(location, hash_embedder) as index:
        assert index.document_states(["long"])["long"][0] == PARTIAL
        assert ingest_documents(PARTS_CORPUS, index, commit_every=16).added == 5
        assert stored(index) == expected
