"""A full disk: a clear DiskFullError, nothing half-written left behind, the last commit intact, and once space is
freed the same run again gives exactly what a clean build gives."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from index_helpers import TOPICS, corpus

from qwen3_rag import Index, ingest_documents
from qwen3_rag.cli import main
from qwen3_rag.indexers import DiskFullError
from qwen3_rag.protocols import PARTIAL

DOCS = corpus(40)


def contents(path: Path, embedder: Any) -> list[Any]:
    """What an index holds and answers, by document and text (chunk ids depend on the history of writes)."""
    with Index.open(path, embedder, read_only=True) as index:
        docs = sorted(d for d, _, _ in index.iter_documents())
        chunks = {d: [(c.index, c.text, c.start, c.end, c.start_line) for c in index.chunks_of(d)] for d in docs}
        vectors = {d: np.round(index.get_vectors([c.chunk_id for c in index.chunks_of(d)]), 6).tolist() for d in docs}
        # HNSW is approximate and orders equal scores by how its graph was built: rank every chunk, compare each
        # ranking in a canonical order
        index.ef_search = 10_000  # type: ignore[attr-defined]
        dense = [sorted((-round(h.score, 5), h.doc_id, h.text) for h in index.search(q, k=len(index)))
                 for q in TOPICS]
        keyword = [[(index.get_chunks([c])[0].text, round(s, 5)) for c, s in row]
                   for row in index.keyword_search(TOPICS, 8)]
        return [index.count(), docs, chunks, vectors, dense, keyword, index.get_documents(docs)]


def stray_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture()
def clean(tmp_path: Path, hash_embedder: Any) -> list[Any]:
    with Index.create(tmp_path / "clean", hash_embedder, chunk_size=12, chunk_overlap=0, index_type="HNSW8") as index:
        ingest_documents(DOCS, index, commit_every=16)
    return contents(tmp_path / "clean", hash_embedder)


def test_sqlite_out_of_space_is_a_disk_full_error_and_a_rerun_recovers(tmp_path: Path, hash_embedder: Any,
                                                                       clean: list[Any]) -> None:
    path = tmp_path / "ix"
    with Index.create(path, hash_embedder, chunk_size=12, chunk_overlap=0, index_type="HNSW8") as index:
        ingest_documents(DOCS[:10], index, commit_every=16)
    index = Index.open(path, hash_embedder)
    pages = index._store.conn.execute("PRAGMA page_count").fetchone()[0]  # type: ignore[attr-defined]
    index._store.conn.execute(f"PRAGMA max_page_count = {pages + 12}")  # type: ignore[attr-defined]
    with pytest.raises(DiskFullError, match=r"no space left to write .*store.sqlite.*free some space and run the "
                                            r"same command again \(committed work is kept\)") as caught:
        with index:
            ingest_documents(DOCS, index, commit_every=16)
    assert caught.value.errno == errno.ENOSPC and "rollback" not in str(caught.value)
    assert stray_files(path) == []
    with Index.open(path, hash_embedder, read_only=True) as reader:  # the last commit, as it was
        stored = reader.count()
        assert 10 <= stored.documents < len(DOCS)
        whole = 0
        for doc_id, _, digest in reader.iter_documents():
            chunks = [(c.index, c.text, c.start, c.end, c.start_line) for c in reader.chunks_of(doc_id)]
            if digest == PARTIAL:  # a long document cut at a commit: its first parts, marked to be written again
                assert 0 < len(chunks) < len(clean[2][doc_id]) and chunks == clean[2][doc_id][:len(chunks)]
            else:
                whole += 1
                assert digest == reader.get_documents([doc_id])[0].content_hash and chunks == clean[2][doc_id]
    with Index.open(path, hash_embedder) as index:  # space freed: the same run again
        report = ingest_documents(DOCS, index, commit_every=16)
    assert report.unchanged == whole and report.added == len(DOCS) - whole
    assert contents(path, hash_embedder) == clean


def test_a_derived_file_that_cannot_be_written_is_a_disk_full_error(tmp_path: Path, hash_embedder: Any,
                                                                    clean: list[Any], monkeypatch: Any) -> None:
    path = tmp_path / "ix"
    with Index.create(path, hash_embedder, chunk_size=12, chunk_overlap=0, index_type="HNSW8") as index:
        ingest_documents(DOCS[:10], index, commit_every=16)
    published = sorted(p.name for p in path.iterdir())

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(DiskFullError, match=r"no space left to write .*(vectors|bm25)\.\d+\.(faiss|npz)"):
        with Index.open(path, hash_embedder) as index:
            ingest_documents(DOCS, index, commit_every=16)
    monkeypatch.undo()
    assert stray_files(path) == [] and sorted(p.name for p in path.iterdir()) == published
    with Index.open(path, hash_embedder, read_only=True) as reader:  # the store committed every document
        assert reader.count().documents == len(DOCS)
    with Index.open(path, hash_embedder) as index:  # space freed: the run again publishes the files
        assert ingest_documents(DOCS, index).unchanged == len(DOCS)
    assert contents(path, hash_embedder) == clean
    assert len([p for p in path.iterdir() if p.name.startswith(("vectors.", "bm25."))]) == 2


def test_a_full_disk_is_one_line_on_the_command_line(tmp_path: Path, minilm_path: str, monkeypatch: Any,
                                                     capsys: Any) -> None:
    (tmp_path / "docs").mkdir()
    for n in range(3):
        (tmp_path / "docs" / f"{n}.txt").write_text(f"Document {n} about disks that fill up.\n")

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    code = main(["index", str(tmp_path / "docs"), "--index", str(tmp_path / "ix"), "--model", minilm_path,
                 "--index-type", "HNSW8", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("qwen3-rag: error: no space left to write") and err.count("\n") == 1, err
    monkeypatch.undo()
    assert stray_files(tmp_path / "ix") == []
    assert main(["index", str(tmp_path / "docs"), "--index", str(tmp_path / "ix"), "--device", "cpu"]) == 0
    assert "0 added" in capsys.readouterr().out
