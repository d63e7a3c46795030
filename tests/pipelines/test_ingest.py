"""Ingestion: incremental re-runs, changed and removed documents, bounded commits, a SIGKILL in the middle."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qwen3_rag import Index
from qwen3_rag.pipelines import writing
from qwen3_rag.pipelines.ingest import ingest


def write_corpus(root: Path, n: int = 12) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"note{i:02d}.md").write_text(
            f"# Note {i}\n\nThis note talks about subject {i % 4}.\n\n"
            + "Filler sentence here. " * (i % 5 + 1)
        )
    (root / "records.jsonl").write_text(
        "".join(
            json.dumps({"_id": f"r{i}", "title": f"Record {i}", "text": f"record body {i}", "year": 2020 + i})
            + "\n"
            for i in range(5)
        )
    )
    (root / "blob.txt").write_bytes(b"\x00\x01\x02binary")
    return root


def test_ingest_is_incremental(tmp_path: Path, hash_embedder: Any) -> None:
    src = write_corpus(tmp_path / "corpus")
    ix = tmp_path / "ix"
    report = ingest([src], ix, embedder=hash_embedder, chunk_size=24, chunk_overlap=4, commit_every=7)
    assert (report.added, report.skipped, report.failed) == (17, 1, 0)
    assert report.chunks_added > 17 and report.tokens > 0
    with Index.open(ix, hash_embedder, read_only=True) as index:
        counts = index.count()
        assert (counts.documents, counts.vectors) == (17, counts.chunks)
        assert index.generation >= 2  # several commits
        [hit] = index.search("record body 3", k=1, filter={"year": 2023})
        assert hit.doc_id == "r3" and hit.metadata["title"] == "Record 3"
        assert index.chunks_of("corpus/note01.md")[0].headings == ("Note 1",)

    before = hash_embedder.texts_embedded
    again = ingest([src], ix, embedder=hash_embedder)
    assert hash_embedder.texts_embedded == before, "an unchanged corpus must embed nothing"
    assert (again.added, again.updated, again.unchanged) == (0, 0, 17) and again.embedded_nothing

    (src / "note03.md").write_text("# Note 3\n\nCompletely rewritten about zebras.")
    (src / "note04.md").unlink()
    (src / "new.txt").write_text("A brand new file.")
    with Index.open(ix, read_only=True) as index:
        chunks_before = index.count().chunks
    third = ingest([src], ix, embedder=hash_embedder, prune=True)
    assert (third.added, third.updated, third.unchanged, third.pruned) == (1, 1, 15, 1)
    assert hash_embedder.texts_embedded - before == third.chunks_added  # only the new and changed chunks
    assert third.chunks_added < 5
    with Index.open(ix, read_only=True) as index:
        assert index.get_document("corpus/note04.md") is None
        note3 = index.chunks_of("corpus/note03.md")
        assert "".join(c.text for c in note3).replace("\n", "").startswith("# Note 3Completely")
        counts = index.count()
        assert counts.documents == 17 and counts.vectors == counts.chunks
        assert counts.chunks == chunks_before + third.chunks_added - third.chunks_removed  # pruned chunks count


def test_prune_keeps_documents_of_files_that_failed(tmp_path: Path, hash_embedder: Any) -> None:
    src = write_corpus(tmp_path / "corpus", n=3)
    ix = tmp_path / "ix"
    ingest([src], ix, embedder=hash_embedder)
    (src / "records.jsonl").write_text('{"_id": "r0", "text": "ok"}\nnot json\n')
    report = ingest([src], ix, embedder=hash_embedder, prune=True)
    assert report.failed == 1 and "invalid JSON" in report.failures[0][1]
    assert report.pruned == 0
    assert "failed:" in report.summary()


def test_settings_of_an_existing_index_are_kept(tmp_path: Path, hash_embedder: Any) -> None:
    src = write_corpus(tmp_path / "corpus", n=2)
    ingest([src], tmp_path / "ix", embedder=hash_embedder, chunk_size=32, chunk_overlap=0, index_type="HNSW8")
    with pytest.raises(ValueError, match="chunk_size 32, not 64"):
        ingest([src], tmp_path / "ix", embedder=hash_embedder, chunk_size=64)
    with pytest.raises(FileNotFoundError, match="not found"):
        ingest([tmp_path / "missing"], tmp_path / "ix", embedder=hash_embedder)


CHILD = r'''
import hashlib, re, sys, time
import numpy as np
from qwen3_rag.pipelines.ingest import ingest

class SlowHashEmbedder:
    """Deterministic fake embedder that takes a while, so the parent can kill it mid-run."""
    dim = 16
    tokenizer = None
    model_id = "slow-hash"
    def describe(self):
        return {"model": "slow-hash", "fingerprint": "slow-hash:v1", "pooling": "mean", "dim": 16}
    def embed_documents(self, texts):
        time.sleep(0.05)
        out = np.zeros((len(texts), 16), np.float32)
        for i, t in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            out[i] = np.random.default_rng(seed).standard_normal(16)
        return out / np.linalg.norm(out, axis=1, keepdims=True)
    embed_queries = embed_documents

report = ingest([sys.argv[1]], sys.argv[2], embedder=SlowHashEmbedder(), chunk_size=12, chunk_overlap=2,
                commit_every=int(sys.argv[3]), index_type=sys.argv[4])
print("ADDED", report.added, "UNCHANGED", report.unchanged, flush=True)
'''


def _generation(ix: Path) -> int:
    try:
        conn = sqlite3.connect(f"{(ix / 'store.sqlite').resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        row = conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        conn.close()
        return int(row[0]) if row else 0
    except sqlite3.Error:
        return 0


@pytest.mark.parametrize("spec", ["Flat", pytest.param("HNSW8", marks=pytest.mark.slow)])
def test_sigkill_mid_ingest_then_rerun(tmp_path: Path, spec: str) -> None:
    src = tmp_path / "corpus"
    src.mkdir()
    n_docs = 150
    for i in range(n_docs):
        (src / f"doc{i:03d}.txt").write_text(
            f"Document {i}. " + " ".join(f"w{(i * j) % 97}" for j in range(20))
        )
    ix = tmp_path / "ix"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, str(script), str(src), str(ix), "30", spec]
    kills = 0
    rng = random.Random(0)
    for wait_for in (2, 5):  # kill twice, at different points of the run
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        start_gen = _generation(ix)
        while _generation(ix) < start_gen + wait_for and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.08))  # anywhere in the next batch: embedding, writing or committing
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
    assert kills >= 1, "the child finished before it could be killed; make it slower"
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    added, unchanged = (int(x) for x in out.stdout.split()[1::2])
    assert 0 < unchanged < n_docs and added + unchanged == n_docs  # resumed, did not start over

    with Index.open(ix, read_only=True) as index:
        doc_ids = [d for d, _, _ in index.iter_documents()]
        assert sorted(doc_ids) == sorted(f"corpus/doc{i:03d}.txt" for i in range(n_docs))
        states = index.document_states(doc_ids)
        chunk_ids = {c.chunk_id for d in doc_ids for c in index.chunks_of(d)}
        assert all(len(index.chunks_of(d)) == states[d][1] for d in doc_ids)  # every document whole
        assert {c for c, _ in index.iter_chunks()} == chunk_ids  # and no chunk without its document
        counts = index.count()
        assert counts.vectors == counts.chunks == len(chunk_ids)
        assert set(index.vectors.ids().tolist()) - index.vectors.tombstones == chunk_ids
        some = index.get_chunks(sorted(chunk_ids)[:20])
        vecs = index.get_vectors([c.chunk_id for c in some])
        found, scores = index.search_vectors(vecs, k=1)
        assert np.all(scores[:, 0] > 0.999)  # every chunk finds itself, or a chunk with the same text


def _contents(path: Path) -> list[tuple[str, str, int, int, bytes]]:
    with Index.open(path, read_only=True) as index:
        chunk_ids = [c for c, _ in index.iter_chunks()]
        vectors = index.get_vectors(chunk_ids)
        return [(c.doc_id, c.text, c.start, c.end, v.tobytes())
                for c, v in zip(index.get_chunks(chunk_ids), vectors, strict=True)]


def test_pipelined_ingestion_writes_what_the_sequential_one_does(tmp_path: Path, hash_embedder: Any) -> None:
    src = write_corpus(tmp_path / "corpus", n=30)
    a = ingest([src], tmp_path / "a", embedder=hash_embedder, commit_every=7, chunk_size=16, chunk_overlap=4,
               pipelined=True)
    b = ingest([src], tmp_path / "b", embedder=hash_embedder, commit_every=7, chunk_size=16, chunk_overlap=4,
               pipelined=False)
    assert a.chunks_added == b.chunks_added > 30 and a.tokens == b.tokens
    assert _contents(tmp_path / "a") == _contents(tmp_path / "b")


def test_chunking_runs_while_a_batch_is_embedded(tmp_path: Path, hash_embedder: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The first embedding call only returns once later documents were chunked beside it (no timing involved)."""
    from qwen3_rag.indexers.chunking import Chunker

    src = write_corpus(tmp_path / "corpus", n=30)
    embedding = threading.Event()
    chunked_meanwhile = threading.Event()
    overlapped: list[bool] = []
    tokenizers: set[int] = set()
    real_chunk, real_embed = Chunker.chunk_batch, hash_embedder.embed_documents

    submitted = threading.Event()
    real_submit = writing._Worker.submit

    def submit(self: Any, texts: list[str]) -> Any:
        if self._thread.name == "qwen3-rag-embed":  # noqa: SLF001
            submitted.set()
        return real_submit(self, texts)

    def chunk(self: Chunker, documents: Any, **kwargs: Any) -> Any:
        tokenizers.add(id(self._content._backend))  # noqa: SLF001
        if submitted.is_set() and embedding.wait(timeout=30):  # chunking while the embedder works
            chunked_meanwhile.set()
        return real_chunk(self, documents, **kwargs)

    def embed(texts: list[str]) -> Any:
        if not overlapped:
            embedding.set()
            overlapped.append(chunked_meanwhile.wait(timeout=30))
        return real_embed(texts)

    monkeypatch.setattr(Chunker, "chunk_batch", chunk)
    monkeypatch.setattr(writing._Worker, "submit", submit)
    monkeypatch.setattr(writing, "GROUP_DOCUMENTS", 2)
    monkeypatch.setattr(hash_embedder, "embed_documents", embed)
    ingest([src], tmp_path / "ix", embedder=hash_embedder, commit_every=5, chunk_size=16, chunk_overlap=4,
           pipelined=True)
    assert overlapped == [True]
    # the chunker tokenizes with its own copy of the tokenizer's backend, never the embedder's
    assert tokenizers and id(hash_embedder.tokenizer.backend_tokenizer) not in tokenizers


def test_pipelined_chunking_runs_while_the_previous_group_is_written(tmp_path: Path, hash_embedder: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Pipelined, the next group of documents is chunked in the chunk thread while the calling thread writes: the
    first write only returns once a chunk call started beside it (no timing involved); the index is the same.

    With commit_every=1 the first write happens while the first group's chunks are queued, after the second
    group was handed to the chunk thread; that call waits for the write to begin, so run one after the other
    (chunking before writing) the write would wait in vain and the test fails."""
    from qwen3_rag.indexers.chunking import Chunker
    from qwen3_rag.indexers.local import LocalIndex

    src = write_corpus(tmp_path / "corpus", n=30)
    writing_, chunked_meanwhile = threading.Event(), threading.Event()
    overlapped: list[bool] = []
    chunk_threads: set[str] = set()
    calls: list[int] = []
    real_add, real_chunk = LocalIndex.write, Chunker.chunk_batch

    def add_chunked(self: Index, *args: Any, **kwargs: Any) -> Any:
        if not overlapped:
            writing_.set()
            overlapped.append(chunked_meanwhile.wait(timeout=20))
        return real_add(self, *args, **kwargs)

    def chunk(self: Chunker, documents: Any, **kwargs: Any) -> Any:
        chunk_threads.add(threading.current_thread().name)
        calls.append(1)
        if len(calls) > 1 and writing_.wait(timeout=20):  # every group after the first waits for the first write
            chunked_meanwhile.set()
        return real_chunk(self, documents, **kwargs)

    monkeypatch.setattr(LocalIndex, "write", add_chunked)
    monkeypatch.setattr(Chunker, "chunk_batch", chunk)
    monkeypatch.setattr(writing, "GROUP_DOCUMENTS", 3)
    ingest([src], tmp_path / "a", embedder=hash_embedder, commit_every=1, chunk_size=16, chunk_overlap=4,
           pipelined=True)
    assert overlapped == [True] and chunk_threads == {"qwen3-rag-chunk"}

    monkeypatch.setattr(LocalIndex, "write", real_add)
    monkeypatch.setattr(Chunker, "chunk_batch", real_chunk)
    ingest([src], tmp_path / "b", embedder=hash_embedder, commit_every=1, chunk_size=16, chunk_overlap=4,
           pipelined=False)
    assert _contents(tmp_path / "a") == _contents(tmp_path / "b")


def test_a_chunking_error_in_the_background_reaches_the_caller(tmp_path: Path, hash_embedder: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from qwen3_rag.indexers.chunking import Chunker

    src = write_corpus(tmp_path / "corpus", n=30)
    real_chunk = Chunker.chunk_batch
    calls: list[int] = []

    def chunk(self: Chunker, documents: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("tokenizer crashed")
        return real_chunk(self, documents, **kwargs)

    monkeypatch.setattr(Chunker, "chunk_batch", chunk)
    monkeypatch.setattr(writing, "GROUP_DOCUMENTS", 3)
    with pytest.raises(RuntimeError, match="tokenizer crashed"):
        ingest([src], tmp_path / "ix", embedder=hash_embedder, commit_every=5, chunk_size=16, chunk_overlap=4,
               pipelined=True)
    with Index.open(tmp_path / "ix", read_only=True) as index:
        counts = index.count()
        assert counts.chunks == counts.vectors > 0  # the batches written before the error, each whole
    monkeypatch.setattr(Chunker, "chunk_batch", real_chunk)
    again = ingest([src], tmp_path / "ix", embedder=hash_embedder, commit_every=5, chunk_size=16, chunk_overlap=4)
    assert again.unchanged > 0 and again.added > 0


def test_pipelining_is_on_for_accelerators_only(tmp_path: Path, hash_embedder: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from qwen3_rag.pipelines import ingest as ingest_module

    seen: list[bool] = []
    real_run = ingest_module._run
    monkeypatch.setattr(ingest_module, "_run", lambda *a: seen.append(a[-1]) or real_run(*a))
    src = write_corpus(tmp_path / "corpus", n=3)
    for i, device in enumerate(("cpu", "cuda", None)):
        hash_embedder.device = torch.device(device) if device else None
        ingest([src], tmp_path / f"ix{i}", embedder=hash_embedder)
    assert seen == [False, True, False]


def test_an_embedding_error_stops_the_run_and_keeps_what_was_written(tmp_path: Path, hash_embedder: Any,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_corpus(tmp_path / "corpus", n=30)
    calls = 0
    real_embed = hash_embedder.embed_documents

    def failing(texts: list[str]) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("device lost")
        return real_embed(texts)

    monkeypatch.setattr(hash_embedder, "embed_documents", failing)
    with pytest.raises(RuntimeError, match="device lost"):
        ingest([src], tmp_path / "ix", embedder=hash_embedder, commit_every=5, chunk_size=16, chunk_overlap=4,
               pipelined=True)
    with Index.open(tmp_path / "ix", read_only=True) as index:
        counts = index.count()
        assert counts.chunks == counts.vectors >= 5  # whole batches only, each consistent
    monkeypatch.setattr(hash_embedder, "embed_documents", real_embed)
    again = ingest([src], tmp_path / "ix", embedder=hash_embedder, commit_every=5, chunk_size=16, chunk_overlap=4)
    assert again.unchanged > 0 and again.added > 0


def test_a_real_embedder_is_fed_the_chunkers_token_ids(tmp_path: Path, tiny_embedder: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunker tokenizes every chunk to check its size; those ids, framed by ids_from_content, are what the
    model gets (the chunks are never tokenized again), pipelined or not, and the vectors are the texts' vectors."""
    src = write_corpus(tmp_path / "corpus", n=12)
    tokenized: list[str] = []
    real_tokenize = tiny_embedder.tokenize
    monkeypatch.setattr(tiny_embedder, "tokenize", lambda texts: tokenized.extend(texts) or real_tokenize(texts))
    # chunks alone: the vectors are the chunk texts' (tests/pipelines/test_writing.py covers chunk context)
    a = ingest([src], tmp_path / "a", embedder=tiny_embedder, commit_every=6, chunk_size=16, chunk_overlap=4,
               chunk_context="none", pipelined=True)
    b = ingest([src], tmp_path / "b", embedder=tiny_embedder, commit_every=6, chunk_size=16, chunk_overlap=4,
               chunk_context="none", pipelined=False)
    assert tokenized == [] and a.chunks_added == b.chunks_added > 12 and a.tokens == b.tokens
    contents = _contents(tmp_path / "a")
    assert contents == _contents(tmp_path / "b") and len(contents) > 12
    texts = [text for _, text, _, _, _ in contents]
    stored = np.stack([np.frombuffer(v, dtype=np.float32) for *_, v in contents])
    np.testing.assert_allclose(stored, tiny_embedder.embed_documents(texts), atol=1e-6)

    # a tokenizer whose special tokens are no fixed frame (ids_from_content gives None): the texts are tokenized
    monkeypatch.setattr(tiny_embedder, "ids_from_content", lambda ids: None)
    c = ingest([src], tmp_path / "c", embedder=tiny_embedder, commit_every=6, chunk_size=16, chunk_overlap=4,
               chunk_context="none", pipelined=True)
    assert sorted(tokenized) == sorted(texts) and _contents(tmp_path / "c") == contents and c.chunks_added
