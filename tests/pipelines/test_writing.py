"""The one write loop (DocumentWriter / ingest_documents): what is embedded, what is skipped, what a failure keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from index_helpers import corpus

from qwen3_rag import Chunker, Document, DocumentWriter, Index, ingest_documents


def test_strings_and_dicts_become_documents_with_content_hash_ids(tmp_path: Path, hash_embedder: Any) -> None:
    with Index.create(tmp_path / "ix", hash_embedder, chunk_size=16, chunk_overlap=0) as index:
        report = ingest_documents(["first text", "second text", {"text": "third", "metadata": {"k": 1}}], index)
        assert report.added == 3
        assert ingest_documents(["first text"], index, replace=False).unchanged == 1
        ids = [d for d, _, _ in index.iter_documents()]
        assert len(ids) == 3 and all(len(i) == 32 for i in ids)
        with pytest.raises(TypeError, match="expected a Document"):
            ingest_documents([42], index)  # type: ignore[list-item]


def test_replace_false_refuses_a_changed_document(tmp_path: Path, hash_embedder: Any) -> None:
    with Index.create(tmp_path / "ix", hash_embedder, chunk_size=16, chunk_overlap=0) as index:
        ingest_documents(corpus(3), index)
        with pytest.raises(ValueError, match="already exists with other content"):
            ingest_documents([Document(id="d1", text="different")], index, replace=False)
        with pytest.raises(ValueError, match="appears twice"):
            ingest_documents([Document(id="x", text="a"), Document(id="x", text="b")], index)


def test_a_real_embedder_is_fed_the_chunkers_token_ids(tmp_path: Path, tiny_embedder: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The write loop gives a real Embedder the ids the chunker made: it never tokenizes a chunk again, and the
    stored vectors are the chunk texts' vectors. Without a fixed frame of special tokens (ids_from_content gives
    None) the texts are embedded instead, to the same vectors."""
    docs = corpus(80)
    calls: list[str] = []
    for name in ("tokenize", "embed_documents"):
        real = getattr(tiny_embedder, name)
        monkeypatch.setattr(tiny_embedder, name, lambda texts, real=real, name=name: calls.append(name) or real(texts))

    def contents(path: Path) -> tuple[list[str], np.ndarray]:
        with Index.create(path, tiny_embedder, chunk_size=12, chunk_overlap=3) as index:
            report = ingest_documents(docs, index)
            assert report.added == 80 and report.chunks_added > 80
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
    chunker = Chunker.for_embedder(tiny_embedder, chunk_size=12, chunk_overlap=3)
    assert sorted(texts) == sorted(c.text for d in docs for c in chunker.chunk(d))  # one document at a time


def test_a_failed_write_keeps_every_batch_before_it(tmp_path: Path, hash_embedder: Any) -> None:
    with Index.create(tmp_path / "ix", hash_embedder, chunk_size=0, chunk_overlap=0) as index:
        ingest_documents(corpus(4), index)
        generation, counts = index.generation, index.count()
        assert ingest_documents(corpus(4), index).unchanged == 4 and ingest_documents([], index).added == 0
        assert index.generation == generation  # a write of nothing commits nothing
        bad = Document(id="d1", text="metadata JSON cannot hold", metadata={"x": float("nan")})
        with pytest.raises(ValueError, match="'d1'.*NaN"):
            ingest_documents([Document(id="d0", text="a valid change"), bad], index)
        assert index.count() == counts and index.get_documents(["d0"]) == corpus(4)[:1]  # the batch is whole
        with DocumentWriter(index, commit_every=1) as writer:  # one commit per document
            writer.add(Document(id="ok", text="committed first"))
            with pytest.raises(ValueError, match="NaN"):
                writer.add(bad)
                writer.close()
        assert index.get_documents(["ok"]) and index.get_documents(["d1"]) == corpus(4)[1:2]


def test_whole_document_chunks_keep_the_text_exactly(tmp_path: Path, hash_embedder: Any) -> None:
    text = "  leading and trailing spaces\nand a second line  \n"
    with Index.create(tmp_path / "ix", hash_embedder, chunk_size=0, chunk_overlap=0) as index:
        with DocumentWriter(index, chunker="whole") as writer:
            writer.add(Document(id="w", text=text))
        [chunk] = index.chunks_of("w")
        assert (chunk.text, chunk.start, chunk.end, chunk.start_line, chunk.end_line) == (text, 0, len(text), 1, 2)


def test_the_report_counts_what_was_done(tmp_path: Path, hash_embedder: Any) -> None:
    seen: list[int] = []
    with Index.create(tmp_path / "ix", hash_embedder, chunk_size=12, chunk_overlap=0) as index:
        with DocumentWriter(index, commit_every=5, on_progress=lambda n, _: seen.append(n)) as writer:
            writer.add_all(corpus(10))
        report = writer.report
        assert (report.added, report.chunks_added) == (10, index.count().chunks) and sum(seen) == 10
        assert report.tokens > 0 and report.seconds > 0 and set(report.timings) >= {"chunk", "embed", "index"}
        duplicates: list[str] = []
        with DocumentWriter(index, on_duplicate=lambda doc, reason: duplicates.append(reason)) as writer:
            writer.add_all([corpus(1)[0], corpus(1)[0]])
        assert writer.report.unchanged == 1 and "duplicate document id 'd0'" in duplicates[0]


@pytest.mark.parametrize("pipelined", [False, True])
def test_no_commit_holds_more_than_commit_every_chunks(tmp_path: Path, hash_embedder: Any, pipelined: bool) -> None:
    """Whatever the documents' lengths, each commit writes at most ``commit_every`` chunks, and the index holds what
    one commit of everything holds."""
    rng = np.random.default_rng(7)
    docs = [Document(id=f"r{i}", text=" ".join(f"w{j % 50}" for j in range(int(rng.integers(1, 400)))))
            for i in range(25)]
    with Index.create(tmp_path / "one", hash_embedder, chunk_size=8, chunk_overlap=2) as one:
        ingest_documents(docs, one, commit_every=100_000)
        expected = {d.id: [(c.index, c.text) for c in one.chunks_of(d.id)] for d in docs}
    for trial, commit_every in enumerate(int(n) for n in rng.integers(1, 60, size=4)):
        with Index.create(tmp_path / f"t{trial}", hash_embedder, chunk_size=8, chunk_overlap=2) as index:
            sizes = commit_sizes(index)
            ingest_documents(docs, index, commit_every=commit_every, pipelined=pipelined)
            assert max(sizes) <= commit_every and sum(sizes) == sum(map(len, expected.values()))
            assert {d.id: [(c.index, c.text) for c in index.chunks_of(d.id)] for d in docs} == expected


def commit_sizes(index: Any) -> list[int]:
    """The chunks each commit of a local index writes, recorded from now on."""
    sizes: list[int] = []
    write = index.write

    def counting(items: Any, vectors: Any, **kwargs: Any) -> Any:
        if not index._store.in_transaction:  # the first write of a commit
            sizes.append(0)
        sizes[-1] += sum(len(chunks) for _, chunks in items)
        return write(items, vectors, **kwargs)

    index.write = counting
    return sizes
