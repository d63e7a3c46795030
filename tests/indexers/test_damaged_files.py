"""Damaged index files never give a different answer.

Each file of an index is damaged in many random (seeded) ways: bytes flipped or zeroed at random offsets and lengths,
the file cut short, junk appended, emptied, swapped for the file of another index of the same generation. After
each, a reader answers exactly as the undamaged index did, or raises :class:`IndexDamagedError` naming the file and
what to do: never a raw SQLite error, never a different answer. The files derived from the store are checksummed
and rebuilt, so they must always answer; the store itself may only refuse.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from index_helpers import TOPICS, corpus

from qwen3_rag import Index, IndexDamagedError, ingest_documents
from qwen3_rag.cli import main

SEED = 15
DERIVED_MUTATIONS = 100
STORE_MUTATIONS = 60

Mutation = Callable[[bytes, random.Random], bytes]


def _flip(data: bytes, rng: random.Random) -> bytes:
    n = rng.choice([1, 1, 2, 4, 8, 64, 512])
    at = rng.randrange(max(1, len(data) - n))
    out = bytearray(data)
    for i in range(at, min(len(data), at + n)):
        out[i] ^= rng.randrange(1, 256)
    return bytes(out)


def _zero(data: bytes, rng: random.Random) -> bytes:
    n = rng.choice([16, 512, 4096])
    at = rng.randrange(max(1, len(data) - n))
    return data[:at] + bytes(min(n, len(data) - at)) + data[at + n:]


def _truncate(data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


def _append(data: bytes, rng: random.Random) -> bytes:
    return data + rng.randbytes(rng.randrange(1, 5000))


MUTATIONS: list[Mutation] = [_flip, _flip, _flip, _zero, _truncate, _append, lambda data, rng: b""]


def mutations(n: int, data: bytes, foreign: bytes | None, seed: int) -> list[tuple[str, bytes]]:
    """``n`` damaged versions of ``data`` (one of them ``foreign``, another index's file, when given)."""
    rng = random.Random(seed)
    out = [("foreign", foreign)] if foreign is not None else []
    while len(out) < n:
        mutate = rng.choice(MUTATIONS)
        damaged = mutate(data, rng)
        if damaged != data:
            out.append((getattr(mutate, "__name__", "empty").strip("_"), damaged))
    return out


def answers(index: Index, embedder: Any) -> list[Any]:
    """Everything a reader can be asked: dense and keyword searches, filtered ones, documents by id."""
    queries = embedder.embed_queries(TOPICS)
    out: list[Any] = []
    for flt in (None, {"group": 1}, {"year": {"$gte": 2010}}):
        ids, scores = index.search_vectors(queries, 8, filter=flt)
        out.append([[(h.chunk_id, round(h.score, 5), h.text, h.doc_id, h.source, dict(h.metadata), h.start_line)
                     for h in index.hits(i, s)] for i, s in zip(ids, scores, strict=True)])
        out.append([[(c, round(s, 5)) for c, s in row] for row in index.keyword_search(TOPICS, 8, filter=flt)])
    out.append(index.find_documents({"topic": "faiss"}))
    out.append([(d.id, d.text, d.source, dict(d.metadata)) for d in index.get_documents(["d1", "d7", "d20"])])
    out.append(index.count())
    return out


def build(path: Path, embedder: Any, spec: str, reverse: bool = False) -> list[Any]:
    docs = corpus(30)
    with Index.create(path, embedder, chunk_size=12, chunk_overlap=0, index_type=spec) as index:
        ingest_documents(docs[::-1] if reverse else docs, index)
    with Index.open(path, embedder, read_only=True) as reader:
        return answers(reader, embedder)


@pytest.fixture()
def one_thread() -> Iterator[None]:
    """FAISS on one thread: a hundred rebuilds of a tiny index are quicker without thread start-ups."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def assert_same_or_refused(path: Path, embedder: Any, expected: list[Any], damage: str, refusals: list[str]) -> None:
    try:
        with Index.open(path, embedder, read_only=True) as reader:
            got = answers(reader, embedder)
    except IndexDamagedError as exc:
        refusals.append(str(exc))
        return
    assert got == expected, f"a damaged file ({damage}) changed the answers"


@pytest.mark.parametrize(("spec", "name"), [("HNSW8", "vectors"), ("IVF2,Flat", "vectors"), ("HNSW8", "bm25")])
def test_a_damaged_derived_file_never_changes_an_answer(tmp_path: Path, hash_embedder: Any, caplog: Any, spec: str,
                                                        name: str, one_thread: Any) -> None:
    expected = build(tmp_path / "ix", hash_embedder, spec)
    build(tmp_path / "other", hash_embedder, spec, reverse=True)  # same generation, other chunk ids and vectors
    path = next((tmp_path / "ix").glob(f"{name}.*"))
    assert path.name == f"{name}.1.{path.suffix[1:]}"
    original = path.read_bytes()
    foreign = next((tmp_path / "other").glob(f"{name}.*")).read_bytes()
    refusals: list[str] = []
    with caplog.at_level("WARNING"):
        for damage, data in mutations(DERIVED_MUTATIONS, original, foreign, SEED):
            path.write_bytes(data)
            assert_same_or_refused(tmp_path / "ix", hash_embedder, expected, damage, refusals)
    assert refusals == []  # a derived file is rebuilt from the store: it always answers
    assert caplog.text.count(f"rebuilding {name}") == DERIVED_MUTATIONS


def test_a_damaged_store_answers_the_same_or_says_it_is_damaged(tmp_path: Path, hash_embedder: Any,
                                                               one_thread: Any) -> None:
    expected = build(tmp_path / "ix", hash_embedder, "HNSW8")
    path = tmp_path / "ix" / "store.sqlite"
    assert not Path(f"{path}-wal").exists()  # the writer folded its log in: the file holds every commit
    original = path.read_bytes()
    refusals: list[str] = []
    for damage, data in mutations(STORE_MUTATIONS, original, None, SEED):
        path.write_bytes(data)
        for extra in (Path(f"{path}-wal"), Path(f"{path}-shm")):
            extra.unlink(missing_ok=True)
        assert_same_or_refused(tmp_path / "ix", hash_embedder, expected, damage, refusals)
    assert refusals, "no mutation was noticed"
    for message in refusals:
        assert str(path) in message and "build the index again in a new directory" in message, message
    path.write_bytes(original)
    assert_same_or_refused(tmp_path / "ix", hash_embedder, expected, "none", refusals := [])
    assert not refusals


def test_a_damaged_store_is_one_line_on_the_command_line(tmp_path: Path, minilm_embedder: Any, capsys: Any) -> None:
    with Index.create(tmp_path / "ix", minilm_embedder, chunk_size=16, chunk_overlap=0) as index:
        ingest_documents(corpus(6), index)
    with sqlite3.connect(tmp_path / "ix" / "store.sqlite") as conn:  # a value changed behind the store's back
        conn.execute("UPDATE chunks SET start_line = start_line + 1 WHERE id = 3")
    conn.close()
    assert main(["info", str(tmp_path / "ix")]) == 0  # the manifest and the counts are sound
    capsys.readouterr()
    assert main(["query", str(tmp_path / "ix"), "faiss vectors", "--hybrid", "-k", "20"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qwen3-rag: error: ") and err.count("\n") == 1, err
    assert "store.sqlite' is damaged: chunk 3 does not match its checksum" in err
