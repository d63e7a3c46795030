"""Chunk invariants: offsets reproduce the text, no chunk over the limit, nothing lost, boundaries
preferred."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from qwen3_rag.indexers.chunking import PAGE_STARTS_KEY, Chunker, ChunkingConfig, regex_token_spans
from qwen3_rag.types import Document

WORDS = [
    "alpha",
    "beta",
    "Gamma",
    "delta.",
    "epsilon,",
    "zeta!",
    "eta?",
    "\n",
    "\n\n",
    "  ",
    "北京是中国的首都。",
    "naïve",
    "🙂",
    "x" * 30,
    "3.14",
    "# Heading",
    "- item",
    "```",
    "été",
]

texts = st.one_of(
    st.lists(st.sampled_from(WORDS), min_size=0, max_size=120).map(lambda ws: " ".join(ws)),
    st.text(min_size=0, max_size=400),
)


def check(chunker: Chunker, doc: Document, count: Any) -> None:
    """Offsets reproduce the text, chunks fit, and every character the tokenizer sees lands in some chunk."""
    chunks = chunker.chunk(doc)
    for i, c in enumerate(chunks):
        assert c.index == i
        assert doc.text[c.start : c.end] == c.text
        assert c.text and c.text == c.text.strip()
        assert c.doc_id == doc.id
        if chunker.chunk_size:
            assert count(c.text) <= chunker.chunk_size, (c.text, count(c.text))
    starts = [c.start for c in chunks]
    assert starts == sorted(starts)
    # nothing is lost: every character of every token is inside some chunk (characters a tokenizer drops, like
    # control characters for WordPiece, are invisible to the model and may fall between chunks)
    covered = [False] * len(doc.text)
    for c in chunks:
        for p in range(c.start, c.end):
            covered[p] = True
    for s, e in chunker._many_spans([doc.text])[0]:  # noqa: SLF001
        assert all(covered[p] or doc.text[p].isspace() for p in range(s, e)), (s, e)


@settings(max_examples=150, deadline=None)
@given(text=texts, size=st.integers(4, 40), overlap_frac=st.sampled_from([0.0, 0.25, 0.5]))
def test_invariants_word_tokenizer(text: str, size: int, overlap_frac: float) -> None:
    chunker = Chunker(size, int(size * overlap_frac))
    check(chunker, Document(id="d", text=text), lambda t: len(regex_token_spans(t)))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts, size=st.integers(4, 40), overlap_frac=st.sampled_from([0.0, 0.25]))
def test_invariants_byte_level_bpe(plain_tokenizer: Any, text: str, size: int, overlap_frac: float) -> None:
    chunker = Chunker(size, int(size * overlap_frac), tokenizer=plain_tokenizer)

    def count(t: str) -> int:
        return len(plain_tokenizer(t, add_special_tokens=False)["input_ids"])

    check(chunker, Document(id="d", text=text), count)


@pytest.fixture(scope="module")
def minilm_tokenizer(minilm_path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts, size=st.integers(4, 40))
def test_invariants_wordpiece(minilm_tokenizer: Any, text: str, size: int) -> None:
    chunker = Chunker(size, size // 4, tokenizer=minilm_tokenizer)

    def count(t: str) -> int:
        return len(minilm_tokenizer(t, add_special_tokens=False)["input_ids"])

    check(chunker, Document(id="d", text=text), count)


def test_short_document_stays_whole_and_zero_disables() -> None:
    doc = Document(id="d", text="  One short paragraph. Two sentences.  ")
    [chunk] = Chunker(64, 8).chunk(doc)
    assert chunk.text == "One short paragraph. Two sentences."
    long = Document(id="d", text="word " * 1000)
    assert len(Chunker(0, 0).chunk(long)) == 1
    assert len(Chunker(100, 10).chunk(long)) > 10
    assert Chunker(10, 0).chunk(Document(id="e", text=" \n\t ")) == []


def test_prefers_paragraph_then_sentence_boundaries() -> None:
    para1 = "First paragraph sentence one. Sentence two is here."
    para2 = "Second paragraph starts. And goes on for a while longer."
    chunks = Chunker(20, 0).chunk(Document(id="d", text=para1 + "\n\n" + para2))
    assert [c.text for c in chunks] == [para1, para2]
    text = "Alpha beta gamma delta. Epsilon zeta eta theta iota kappa. Lambda mu nu."
    chunks = Chunker(12, 0).chunk(Document(id="d", text=text))
    assert chunks[0].text == "Alpha beta gamma delta. Epsilon zeta eta theta iota kappa."


def test_overlap_repeats_tail_of_previous_chunk() -> None:
    text = " ".join(f"w{i}" for i in range(100))
    chunks = Chunker(20, 5).chunk(Document(id="d", text=text))
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.start < b.start < a.end  # they overlap
        assert len(regex_token_spans(text[b.start : a.end])) <= 5


def test_pages_and_markdown_headings() -> None:
    pages = ["Page one text. " * 10, "Page two text. " * 10]
    text = "\n\n".join(pages)
    doc = Document(
        id="p", text=text, source="x.pdf", metadata={PAGE_STARTS_KEY: [0, len(pages[0]) + 2], "format": "pdf"}
    )
    chunks = Chunker(16, 0).chunk(doc)
    assert chunks[0].page == 1 and chunks[-1].page == 2
    assert all(PAGE_STARTS_KEY not in c.metadata for c in chunks)
    md = (
        "# Guide\n\nIntro text here.\n\n## Install\n\nRun pip install.\n\n"
        "```\n# not a heading\n```\n\n## Use\n\nCall it."
    )
    chunks = Chunker(6, 0).chunk(Document(id="m", text=md, source="guide.md"))
    by_text = {c.text: c.headings for c in chunks}
    assert by_text["Run pip install."] == ("Guide", "Install")
    assert by_text["Call it."] == ("Guide", "Use")


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="chunk_size must be >= 0"):
        ChunkingConfig(-1, 0)
    with pytest.raises(ValueError, match="at most half"):
        ChunkingConfig(10, 8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(texts, min_size=1, max_size=6), size=st.integers(4, 40),
       overlap_frac=st.sampled_from([0.0, 0.25]), kind=st.sampled_from(["bpe", "words"]))
def test_chunk_many_equals_chunk(plain_tokenizer: Any, batch: list[str], size: int, overlap_frac: float,
                                 kind: str) -> None:
    chunker = Chunker(size, int(size * overlap_frac), tokenizer=plain_tokenizer if kind == "bpe" else None)
    docs = [Document(id=f"d{i}", text=t, source="a.md" if i % 2 else "a.txt") for i, t in enumerate(batch)]
    singles = [chunker.chunk(d) for d in docs]
    counts = [chunker.count_tokens(d.text) if d.text.strip() else 0 for d in docs]
    assert chunker.chunk_many(docs) == singles
    batch_out = chunker.chunk_batch(docs, token_ids=True)
    assert batch_out.chunks == singles and batch_out.doc_tokens == counts
    if kind == "words":
        assert batch_out.token_ids is None
    else:  # the ids of each chunk's own text, as the model's tokenizer gives them
        assert batch_out.token_ids == [
            [plain_tokenizer(c.text, add_special_tokens=False)["input_ids"] for c in chunks] for chunks in singles
        ]


def test_chunk_many_recuts_a_document_whose_chunk_tokenizes_longer(plain_tokenizer: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """When a chunk's own text counts more tokens than its share of the document, that document is cut again."""
    chunker = Chunker(8, 2, tokenizer=plain_tokenizer)
    docs = [Document(id=str(i), text=" ".join(f"{WORDS[j % 4]}{i}. " for j in range(30))) for i in range(4)]
    real_many = Chunker._many_ids
    inflate = {"on": False}

    def many(self: Chunker, batch: list[str]) -> list[list[int]]:
        out = real_many(self, batch)
        # pretend the chunk texts of document 2 tokenize with 20 extra tokens
        return [s + [0] * 20 if inflate["on"] and t in doc2_chunks else s for t, s in zip(batch, out, strict=True)]

    doc2_chunks = {c.text for c in chunker.chunk(docs[2])}
    expected = [chunker.chunk(d) for d in docs]
    recut: list[str] = []
    real_bounds = Chunker._bounds

    def bounds(self: Chunker, text: str, spans: Any, *, verify: bool, layout: Any = None) -> Any:
        if verify:
            recut.append(text)
        return real_bounds(self, text, spans, verify=verify, layout=layout)

    monkeypatch.setattr(Chunker, "_many_ids", many)
    monkeypatch.setattr(Chunker, "_bounds", bounds)
    inflate["on"] = True
    assert chunker.chunk_many(docs) == expected
    assert recut == [docs[2].text]


def _reference_boundary_levels(text: str, groups: list[tuple[int, int]]) -> list[int]:
    """The boundary rules written out character by character (the first implementation, kept as the oracle)."""
    import re

    sentence_end = re.compile(r"[.!?;:\u3002\uff01\uff1f\uff1b\u2026][\"')\]\u201d\u2019]*$")
    levels = [0] * (len(groups) + 1)
    prev_start, prev_end = groups[0] if groups else (0, 0)
    for i in range(1, len(groups)):
        start, end = groups[i]
        lead_end = start
        while lead_end < end and text[lead_end].isspace():
            lead_end += 1
        gap = text[prev_end:lead_end] if lead_end > prev_end else ""
        prev = text[prev_start:prev_end].rstrip()
        if gap:
            nl = gap.count("\n")
            if nl >= 2 or (nl and text.startswith("#", lead_end)):
                levels[i] = 4
            elif nl:
                levels[i] = 3
            else:
                levels[i] = 2 if prev and sentence_end.search(prev) else 1
        elif prev.endswith(("\u3002", "\uff01", "\uff1f")):
            levels[i] = 2
        prev_start, prev_end = start, end
    return levels


BOUNDARY_WORDS = [*WORDS, "end.", 'said."', "(ok.)", "”", "’", "!", "。", "；", "…", "\u3000", "\xa0", "\t", "#",
                  "\n#", " \n \n ", "\u2028", "a", "é", "。」"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.sampled_from(BOUNDARY_WORDS), min_size=0, max_size=60),
       joiner=st.sampled_from(["", " ", "\n"]), free=st.text(max_size=200), kind=st.sampled_from(["bpe", "words"]))
def test_boundary_levels_match_the_character_rules(plain_tokenizer: Any, words: list[str], joiner: str, free: str,
                                                    kind: str) -> None:
    from qwen3_rag.indexers.chunking import _boundary_levels, _merge_spans

    text = joiner.join(words) + free
    chunker = Chunker(8, 0, tokenizer=plain_tokenizer if kind == "bpe" else None)
    groups, _ = _merge_spans(chunker._many_spans([text])[0])  # noqa: SLF001
    assert _boundary_levels(text, groups) == _reference_boundary_levels(text, [tuple(g) for g in groups.tolist()])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.tuples(st.lists(st.sampled_from(BOUNDARY_WORDS), max_size=20),
                                st.sampled_from(["", " ", "\n"]), st.text(max_size=40)), max_size=6))
@example(parts=[(["One", "line."], " ", "\n"), (["#", "Heading"], " ", " "), (["\u3002"], "", "\n \n"),
                ([")", "x."], "", ""), ([], "", "")])
def test_one_scan_over_many_texts_equals_one_scan_each(plain_tokenizer: Any,
                                                       parts: list[tuple[list[str], str, str]]) -> None:
    """The boundary levels of texts scanned together (ingestion's groups) equal the character rules per text,
    whatever the neighbouring texts end or start with."""
    from qwen3_rag.indexers.chunking import _boundary_levels_many, _merge_spans

    texts = [joiner.join(words) + free for words, joiner, free in parts]
    chunker = Chunker(8, 0, tokenizer=plain_tokenizer)
    groups = [_merge_spans(spans)[0] for spans in chunker._many_spans(texts)]  # noqa: SLF001
    assert _boundary_levels_many(texts, groups) == [
        _reference_boundary_levels(t, [tuple(g) for g in gs.tolist()]) for t, gs in zip(texts, groups, strict=True)]


def test_layouts_scan_in_slices_of_group_chars(plain_tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from qwen3_rag.indexers import chunking

    texts = [f"Text {i}. " + " ".join(WORDS[: 3 + i % 5]) + "\n\n# Part\nmore words here" for i in range(12)]
    spans = Chunker(8, 0, tokenizer=plain_tokenizer)._many_spans(texts)  # noqa: SLF001
    together = chunking._layouts(texts, spans)  # noqa: SLF001
    scans: list[int] = []
    real = chunking._boundary_levels_many  # noqa: SLF001
    monkeypatch.setattr(chunking, "_boundary_levels_many", lambda t, g: scans.append(len(t)) or real(t, g))
    monkeypatch.setattr(chunking, "GROUP_CHARS", 3 * len(texts[0]))
    sliced = chunking._layouts(texts, spans)  # noqa: SLF001
    assert len(scans) > 3 and sum(scans) == len(texts)
    assert [(g.tolist(), c, lv) for g, c, lv in sliced] == [(g.tolist(), c, lv) for g, c, lv in together]
    # spans outside their text (no tokenizer gives them) are clipped, never read into the next text
    levels = chunking._boundary_levels_many(["a", "b c"], [np.array([[0, 1], [2, 3]]), np.zeros(0)])  # noqa: SLF001
    assert levels == [[0, 0, 0], [0]]


def test_space_table_is_str_isspace() -> None:
    from qwen3_rag.indexers.chunking import _SPACES

    assert _SPACES == [c for c in range(0x110000) if chr(c).isspace()]


@pytest.mark.parametrize("which", ["plain", "appending", "minilm", "qwen3", "qwen3-split-special"])
def test_content_tokenizer_equals_the_wrapper(which: str, request: pytest.FixtureRequest) -> None:
    """The chunker's own backend copy gives the ids and offsets of ``tokenizer(text, add_special_tokens=False)``,
    whatever truncation the shared tokenizer was last left with."""
    from transformers import AutoTokenizer

    from qwen3_rag.indexers.chunking import _ContentTokenizer

    if which in ("plain", "appending"):
        tok = request.getfixturevalue(f"{which}_tokenizer")
    else:  # loaded here: this test leaves truncation set on it, which save_pretrained would write out
        tok = AutoTokenizer.from_pretrained(request.getfixturevalue("minilm_path" if which == "minilm"
                                                                    else "real_tokenizer_dir"),
                                            split_special_tokens=which == "qwen3-split-special")
    texts = ["", "x", " leading and trailing  ", "北京是中国的首都。🙂 naïve", "line\n\nbreak\t#h", "word " * 3000,
             "<|endoftext|> inside", "[CLS] [SEP] [UNK]"]
    tok(["warm"], truncation=True, max_length=5)  # leaves truncation set on the shared backend
    own = _ContentTokenizer(tok)
    want = tok(texts, add_special_tokens=False, return_offsets_mapping=True)
    assert own.ids(texts) == want["input_ids"]
    assert own.spans(texts) == [list(map(tuple, o)) for o in want["offset_mapping"]]


def test_the_tokenizer_copy_is_made_on_first_use(plain_tokenizer: Any) -> None:
    """Opening an index makes a Chunker; only chunking pays for its tokenizer copy (search never chunks)."""
    chunker = Chunker(8, 2, tokenizer=plain_tokenizer)
    assert chunker._content_tokenizer is None  # noqa: SLF001
    assert chunker.chunk(Document(id="d", text="alpha beta gamma delta"))
    assert chunker._content_tokenizer is not None  # noqa: SLF001
    with pytest.raises(TypeError, match="fast tokenizer"):
        Chunker(8, 2, tokenizer=object())


def test_a_text_that_tokenizes_longer_once_stripped_is_cut(real_tokenizer: Any) -> None:
    """" understanding is" is 2 Qwen3 tokens, but "understanding is" is 3: as one chunk of at most 2 tokens it would
    break the limit, so it is cut like a longer text, by chunk() and chunk_batch() alike."""
    tok = real_tokenizer
    chunker = Chunker(2, 0, tokenizer=tok)
    doc = Document(id="d", text=" understanding is")
    chunks = chunker.chunk(doc)
    assert [c.text for c in chunks] == ["understanding", "is"]
    assert all(chunker.count_tokens(c.text) <= 2 for c in chunks)
    batch = chunker.chunk_batch([doc, Document(id="e", text="is it")], token_ids=True)
    assert batch.chunks == [chunks, chunker.chunk(Document(id="e", text="is it"))]
    assert batch.token_ids == [[tok(c.text, add_special_tokens=False)["input_ids"] for c in cs] for cs in batch.chunks]
