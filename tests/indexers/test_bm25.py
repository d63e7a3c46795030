"""The BM25 index: scoring matches bm25s, add/delete stay in step, persistence without pickle; the spans of a text
that match a query (what the web page highlights)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import pytest
import Stemmer
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen3_rag.indexers.bm25 import BM25Config, BM25Index, matching_spans

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
    index.save(tmp_path / "bm25")
    with np.load(tmp_path / "bm25" / "bm25.npz", allow_pickle=False) as data:
        assert data["chunk_ids"].dtype == np.int64
    loaded = BM25Index.load(tmp_path / "bm25")
    assert loaded.config == index.config and loaded.ids == index.ids
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
    with pytest.raises(ValueError, match="format version 99; this qwen3-rag reads 1, 2"):
        BM25Index.load(tmp_path)
    with pytest.raises(ValueError, match="unknown stemmer"):
        BM25Index(BM25Config(stemmer="klingon"))


def test_identifiers_give_their_parts_and_prose_stays_as_it_was() -> None:
    index = BM25Index()
    # the words, then the parts of the identifiers among them (BM25 counts terms: their order does not matter)
    assert index.tokenize("parse_json_file(path)") == ["parse_json_fil", "path", "pars", "json", "file"]
    assert index.tokenize("writeBoolean __init__") == ["writeboolean", "__init__", "write", "boolean", "init"]
    # a run of capitals stays whole (SNPs, URLs, HTTPServer); one-letter parts are dropped
    assert index.tokenize("SNPs HTTPServer iPhone x_ray") == ["snps", "httpserver", "iphon", "x_ray", "phone", "ray"]
    prose = "The cat sat on the mat; Dogs bark (loudly) at 7 o'clock."
    assert index.tokenize(prose) == BM25Index(BM25Config(identifiers="none")).tokenize(prose)
    assert BM25Index(BM25Config(identifiers="none")).tokenize("parse_json_file writeBoolean") == [
        "parse_json_fil", "writeboolean"]
    # the lower-cased words are those of the whole text even where lower case is longer (U+0130)
    assert index.tokenize("İstanbul_Hotel") == BM25Index(BM25Config(identifiers="none")).tokenize(
        "İstanbul_Hotel") + ["stanbul", "hotel"]


def test_a_question_in_words_finds_the_code_that_names_them() -> None:
    code = ["def write_boolean(stream, value): stream.put(value)",
            "def readConfigFile(path): return open(path).read()",
            "def sum_of_squares(numbers): return sum(n * n for n in numbers)"]
    for config, found in ((BM25Config(), [[1], [2], [3]]), (BM25Config(identifiers="none"), [[], [], [3]])):
        index = BM25Index(config)
        index.add([1, 2, 3], code)
        hits = index.search_batch(["write a boolean", "the config file", "the squares of numbers"], k=1)
        assert [[c for c, _ in h] for h in hits] == found
    assert matching_spans(code[1], "the config file") == [(4, 18)]  # the identifier is what matched


def test_an_index_written_before_identifier_splitting_keeps_identifiers_whole() -> None:
    """A version-1 file has no ``identifiers`` setting: it was tokenised with identifiers whole, so its queries
    must be too, or a query's parts would match what the stored chunks never had."""
    assert BM25Config.from_dict({}).identifiers == "none" and BM25Config().identifiers == "split"
    old = BM25Index(BM25Config(identifiers="none"))
    old.add([1, 2], ["call parse_config_file first", "the config file is read at start"])
    with np.load(io.BytesIO(old.to_bytes()), allow_pickle=False) as arrays:
        files = dict(arrays)
    manifest = json.loads(files["manifest"].tobytes())
    del manifest["config"]["identifiers"]
    manifest["format_version"] = 1
    files["manifest"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **files)
    loaded = BM25Index.from_bytes(buffer.getvalue())
    assert loaded.config.identifiers == "none"
    assert [c for c, _ in loaded.search("parse_config_file")] == [1]  # not the prose note through "config file"
    with pytest.raises(ValueError, match="identifiers must be 'split' or 'none'"):
        BM25Index(BM25Config(identifiers="camel"))  # type: ignore[arg-type]


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
    assert sorted(index._docs[2].tolist()) == sorted(index._docs[1].tolist() * 2)  # noqa: SLF001


def test_matching_spans_are_the_words_whose_terms_the_query_has() -> None:
    text = "Logs are ROTATED nightly; the log host keeps Ｌｏｇｓ for a week."
    spans = matching_spans(text, "how are logs rotated?")
    assert [text[a:b] for a, b in spans] == ["Logs", "ROTATED", "log", "Ｌｏｇｓ"]  # stemmed, any case, NFKC
    assert matching_spans(text, "how are the") == []  # stop words match nothing
    assert matching_spans(text, "rotated", BM25Config(stemmer=None)) == [(9, 16)]
    assert matching_spans("rotation", "rotated", BM25Config(stemmer=None)) == []
    chinese = "中国的首都是北京。"
    assert [chinese[a:b] for a, b in matching_spans(chinese, "北京")] == ["北京"]
    assert [chinese[a:b] for a, b in matching_spans(chinese, "首都", BM25Config(cjk="none"))] == []
    assert matching_spans(chinese, chinese[:-1], BM25Config(cjk="none")) == [(0, 8)]


@settings(max_examples=200, deadline=None)
@given(text=st.lists(_ALPHABET, max_size=60).map("".join), query=st.lists(_ALPHABET, max_size=12).map("".join))
def test_matching_spans_cover_exactly_the_shared_terms(text: str, query: str) -> None:
    """Spans are ordered and disjoint; outside CJK, a word is inside a span exactly when one of its BM25 terms is
    one of the query's."""
    from qwen3_rag.indexers import bm25

    spans = matching_spans(text, query)
    bounds = [offset for span in spans for offset in span]
    assert bounds == sorted(bounds) and all(a < b for a, b in spans) and len(set(bounds[::2])) == len(spans)
    wanted = set(BM25Index().tokenize(query))
    starts = {a for a, _ in spans}
    for match in bm25._TOKEN.finditer(text):
        if bm25._CJK_RUN.match(match.group()[0]):
            continue
        assert (match.start() in starts) == bool(set(BM25Index().tokenize(match.group())) & wanted)


def test_a_local_index_reports_the_settings_its_bm25_file_holds(tmp_path: Path, hash_embedder: Any) -> None:
    from qwen3_rag import Document, Index, ingest_documents

    with Index.create(tmp_path / "ix", hash_embedder, chunk_size=0) as index:
        ingest_documents([Document(id="code", text="call parse_config_file() first"),
                          Document(id="prose", text="the config file is read at start")], index)
        index.keyword_index(BM25Config(identifiers="none"))  # rebuilt with these settings, published at close
    with Index.open(tmp_path / "ix", hash_embedder, read_only=True) as index:
        assert index.keyword_config.identifiers == "none"
        [hits] = index.keyword_search(["parse_config_file"], 5)
        assert [c.doc_id for c in index.get_chunks([i for i, _ in hits])] == ["code"]
    with Index.create(tmp_path / "dense-only", hash_embedder, chunk_size=0, bm25=False) as index:
        assert index.keyword_config == BM25Config()  # what a first keyword search would build
