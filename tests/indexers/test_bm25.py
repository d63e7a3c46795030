"""The BM25 index: scoring matches bm25s, add/delete stay in step, persistence without pickle."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import bm25s
import numpy as np
import pytest
import Stemmer
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen3_rag.indexers.bm25 import BM25Config, BM25Index

TEXTS = [
    "The cat sat on the mat and purred.",
    "Dogs bark at cats running in the garden.",
    "Stock markets fell sharply on Monday.",
    "A cat and a dog became friends.",
    "Quantum computers use qubits to compute.",
    "Markets rallied after the central bank cut rates.",
]
QUERIES = ["cats", "market rates", "dog friends", "qubit computing"]


def test_scores_equal_bm25s_reference() -> None:
    index = BM25Index()
    index.add(list(range(100, 100 + len(TEXTS))), TEXTS)
    stemmer = Stemmer.Stemmer("english")
    ref = bm25s.BM25()
    tokens = bm25s.tokenize(TEXTS, stopwords="en", stemmer=stemmer, show_progress=False)
    ref.index(tokens, show_progress=False)
    for query in QUERIES:
        expected = ref.get_scores(
            bm25s.tokenize([query], stopwords="en", stemmer=stemmer, show_progress=False, return_ids=False)[0]
        )
        got = dict(index.search(query, k=len(TEXTS)))
        want = {100 + i: float(s) for i, s in enumerate(expected) if s > 0}
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-5)


def _same(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    return [c for c, _ in a] == [c for c, _ in b] and [s for _, s in a] == pytest.approx([s for _, s in b])


def _rebuilt(index: BM25Index, docs: dict[int, str]) -> BM25Index:
    fresh = BM25Index(index.config)
    fresh.add(list(docs), list(docs.values()))
    return fresh


def test_add_delete_upsert_stay_in_step() -> None:
    docs = {i: t for i, t in enumerate(TEXTS)}
    index = BM25Index()
    index.add(list(docs), list(docs.values()))
    index.search("cats")  # build, then change
    assert index.delete([1, 42]) == 1
    del docs[1]
    index.add([3], ["Rates and markets, not cats."])  # upsert of an existing id
    docs[3] = "Rates and markets, not cats."
    index.add([7], ["cats cats cats"])
    docs[7] = "cats cats cats"
    assert len(index) == len(docs) and index.ids == sorted(docs)
    fresh = _rebuilt(index, docs)
    for query in QUERIES:
        assert _same(index.search(query, k=10), fresh.search(query, k=10))
    assert all(chunk_id != 1 for chunk_id, _ in index.search("dogs bark", k=10))


def test_filter_k_and_empty_cases() -> None:
    index = BM25Index()
    assert index.search("anything") == []
    index.add(list(range(len(TEXTS))), TEXTS)
    assert [c for c, _ in index.search("cat", k=10, allowed_ids={3, 4})] == [3]
    assert index.search("cat", allowed_ids=set()) == []
    assert index.search("zzzz unknownword") == []
    assert len(index.search("cat", k=1)) == 1
    with pytest.raises(ValueError, match="positive"):
        index.search("cat", k=0)
    with pytest.raises(ValueError, match="one id per text"):
        index.add([1, 2], ["x"])


def test_ties_broken_by_chunk_id() -> None:
    index = BM25Index()
    index.add([5, 2, 9], ["apple pie", "apple pie", "apple pie"])
    assert [c for c, _ in index.search("apple", k=3)] == [2, 5, 9]


def test_chinese_is_tokenised_into_characters_and_bigrams() -> None:
    index = BM25Index()
    assert index.tokenize("叶绿体DNA") == ["叶", "绿", "体", "叶绿", "绿体", "dna"]
    index.add([1, 2], ["叶绿体有自己的DNA。", "光合作用发生在叶片中。"])
    assert index.search("叶绿体", k=2)[0][0] == 1
    assert BM25Index(BM25Config(cjk="bigram")).tokenize("叶绿体") == ["叶绿", "绿体"]


def test_save_load_roundtrip_without_pickle(tmp_path: Path) -> None:
    index = BM25Index(BM25Config(k1=1.2, b=0.5))
    index.add(list(range(len(TEXTS))), TEXTS)
    index.delete([2])
    index.generation = 7
    index.save(tmp_path / "bm25")
    with np.load(tmp_path / "bm25" / "bm25.npz", allow_pickle=False) as data:
        assert data["chunk_ids"].dtype == np.int64
    loaded = BM25Index.load(tmp_path / "bm25")
    assert loaded.config == index.config and loaded.generation == 7 and loaded.ids == index.ids
    for query in QUERIES:
        assert _same(loaded.search(query), index.search(query))
    loaded.add([50], ["new market text"])  # the loaded vocabulary keeps growing correctly
    assert loaded.search("market")[0][0] in {5, 50}


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no BM25 index"):
        BM25Index.load(tmp_path)
    index = BM25Index()
    index.save(tmp_path)
    manifest = np.frombuffer(b'{"format_version": 99}', dtype=np.uint8)
    np.savez(tmp_path / "bm25.npz", manifest=manifest)
    with pytest.raises(ValueError, match="format version 99"):
        BM25Index.load(tmp_path)
    with pytest.raises(ValueError, match="unknown stemmer"):
        BM25Index(BM25Config(stemmer="klingon"))


def test_sidecar_follows_the_index_and_rebuilds_when_behind(tmp_path: Path, hash_embedder: object) -> None:
    from qwen3_rag.indexers.bm25 import BM25Sidecar
    from qwen3_rag.indexers.index import Index
    from qwen3_rag.types import Document

    def fresh(index: Index) -> list[int]:
        return sorted(c for c, _ in index.iter_chunks())

    with Index.create(tmp_path / "ix", hash_embedder, chunk_size=0) as index:
        sidecar = BM25Sidecar.attach(index)
        assert BM25Sidecar.attach(index) is sidecar  # not registered twice
        index.upsert([Document(id=f"d{i}", text=t) for i, t in enumerate(TEXTS)])
        index.upsert([Document(id="d0", text="A brand new zebra text.")])  # update: new chunk id
        index.delete(["d1"])
        assert sidecar.bm25.ids == fresh(index) and sidecar.bm25.generation == index.generation
        assert sidecar.bm25.search("zebra")[0][0] == index.chunks_of("d0")[0].chunk_id
        saved = BM25Index.load(index.sidecar_dir("bm25"))
        assert saved.ids == fresh(index) and saved.generation == index.generation
    # a commit without the sidecar leaves the saved BM25 index behind; attaching rebuilds it
    with Index.open(tmp_path / "ix", hash_embedder) as index:
        index.delete(["d2"])
        sidecar = BM25Sidecar.attach(index)
        assert sidecar.bm25.ids == fresh(index) and sidecar.bm25.generation == index.generation
        replaced = BM25Sidecar.attach(index, BM25Config(k1=1.2))  # new settings: rebuilt, the old one retires
        assert replaced.bm25.config.k1 == 1.2 and sidecar.retired
        index.delete(["d3"])
        assert replaced.bm25.ids == fresh(index)
        assert BM25Index.load(index.sidecar_dir("bm25")).config.k1 == 1.2


def test_bulk_load_writes_bm25_once_and_a_kill_is_rebuilt(tmp_path: Path, hash_embedder: object,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from qwen3_rag.indexers.bm25 import BM25Sidecar
    from qwen3_rag.indexers.index import Index
    from qwen3_rag.pipelines.ingest import ingest

    src = tmp_path / "corpus.jsonl"
    src.write_text("".join(f'{{"id": "d{i}", "text": "{TEXTS[i % len(TEXTS)]} number {i}"}}\n' for i in range(40)))
    saves: list[int] = []
    original_save = BM25Index.save

    def counting_save(self: BM25Index, path: str | Path) -> None:
        saves.append(self.generation)
        original_save(self, path)

    monkeypatch.setattr(BM25Index, "save", counting_save)
    ingest([src], tmp_path / "ix", embedder=hash_embedder, commit_every=4)
    with Index.open(tmp_path / "ix", read_only=True) as index:
        generation = index.generation
        assert generation >= 10  # many commits ...
        assert saves == [0, generation]  # ... one save when attached, one when the run closed the index
        saved = BM25Index.load(index.sidecar_dir("bm25"))
        assert saved.generation == generation and saved.ids == sorted(c for c, _ in index.iter_chunks())

    # killed in the middle of a bulk load: the store holds what was committed, the BM25 file is behind,
    # and attaching rebuilds it from the store
    child = tmp_path / "child.py"
    child.write_text(KILLED_CHILD)
    more = tmp_path / "more.jsonl"
    more.write_text("".join(f'{{"id": "m{i}", "text": "zebra {i}"}}\n' for i in range(20)))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, str(child), str(more), str(tmp_path / "ix")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 137, out.stderr
    with Index.open(tmp_path / "ix", hash_embedder) as index:
        # the killed run committed its first batch (and maybe the second, which was being written beside the
        # embedding of the third)
        assert index.generation in (generation + 1, generation + 2)
        assert BM25Index.load(index.sidecar_dir("bm25")).generation == generation
        sidecar = BM25Sidecar.attach(index)
        assert sidecar.bm25.generation == index.generation
        assert sidecar.bm25.ids == sorted(c for c, _ in index.iter_chunks())
        assert len(sidecar.bm25.search("zebra", k=20)) == 4 * (index.generation - generation)


KILLED_CHILD = r'''
import os, sys
sys.path.insert(0, os.path.join(os.environ["PYTHONPATH"], "tests"))
from conftest import HashEmbedder, build_tokenizer
from qwen3_rag.pipelines.ingest import ingest

class DyingEmbedder(HashEmbedder):
    """The test's embedder, except that the process dies (no close, no flush) while embedding a third batch."""
    def embed_documents(self, texts):
        if self.calls == 2:
            os._exit(137)
        return super().embed_documents(texts)

ingest([sys.argv[1]], sys.argv[2], embedder=DyingEmbedder(build_tokenizer(append_endoftext=False)), commit_every=4)
'''


_ALPHABET = st.sampled_from(["a", "Z", "é", "_", "7", " ", ".", "-", "\n", "北", "京", "あ", "한", "ω", "\u0301", "🙂",
                             "\uf900", "\u3000", "١"])


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(max_size=80), st.lists(_ALPHABET, max_size=60).map("".join)))
def test_words_follow_the_rule(text: str) -> None:
    """Words are CJK runs, or runs of two or more word characters without CJK (the rule written with a look-ahead
    per character, as first implemented), and indexing by the cached word path equals encoding the terms."""
    import re

    from qwen3_rag.indexers import bm25

    cjk = bm25._CJK_RANGES
    rule = re.compile(f"[{cjk}]+|(?:(?![{cjk}])\\w){{2,}}")
    assert bm25._TOKEN.findall(text) == rule.findall(text)
    index = BM25Index()
    index.add([1, 2], [text, text + " " + text])
    vocab = index._vocab  # noqa: SLF001
    assert index._docs[1].tolist() == [vocab[t] for t in index.tokenize(text)]  # noqa: SLF001
    assert index._docs[2].tolist() == index._docs[1].tolist() * 2  # noqa: SLF001
