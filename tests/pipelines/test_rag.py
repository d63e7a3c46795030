"""RAG context building within a token budget, citations, and answering with any LLM."""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from typing import Any

import pytest

from qwen3_rag.pipelines.rag import answer, approx_token_count, build_context, cite
from qwen3_rag.types import Hit


def _hit(n: int, text: str, page: int | None = None) -> Hit:
    return Hit(chunk_id=n, doc_id=f"doc{n}", text=text, score=1.0 / (n + 1), source=f"src/{n}.md", page=page)


HITS = [_hit(0, "Logs are rotated nightly by logrotate."), _hit(1, "Backups run at 2am.", page=3),
        _hit(2, " ".join(["filler"] * 200))]


def words(text: str) -> int:
    return len(text.split())


def test_numbered_passages_with_sources() -> None:
    ctx = build_context(HITS[:2], max_tokens=1000, tokens=words)
    assert ctx.text == ("[1] src/0.md\nLogs are rotated nightly by logrotate.\n\n"
                        "[2] src/1.md, page 3\nBackups run at 2am.")
    assert ctx.hits == HITS[:2] and not ctx.truncated
    assert ctx.sources == ["[1] src/0.md", "[2] src/1.md, page 3"]
    assert ctx.tokens == words(ctx.text)


def test_budget_truncates_the_passage_that_does_not_fit() -> None:
    ctx = build_context(HITS, max_tokens=100, tokens=words)
    assert ctx.truncated and len(ctx.hits) == 3
    assert words(ctx.text) <= 100
    assert ctx.text.endswith(" ...")
    # too little room left for a useful passage: it is left out
    ctx = build_context(HITS, max_tokens=100, tokens=words, min_passage_tokens=90)
    assert ctx.truncated and len(ctx.hits) == 2 and "filler" not in ctx.text


def test_budget_holds_for_every_size_and_default_counter() -> None:
    for budget in range(5, 120, 7):
        ctx = build_context(HITS, max_tokens=budget, tokens=words, min_passage_tokens=1)
        assert words(ctx.text) <= budget
        ctx = build_context(HITS, max_tokens=budget, min_passage_tokens=1)
        assert approx_token_count(ctx.text) <= budget + 1  # joined tokens may merge by one at a seam


def test_token_counters() -> None:
    class Tok:
        def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
            return [0] * (len(text.split()) + (2 if add_special_tokens else 0))

    class Emb:
        def count_tokens(self, texts: list[str]) -> list[int]:
            return [len(t) for t in texts]

    tok = Tok()
    counted = build_context(HITS[:1], 1000, tokens=lambda t: len(tok.encode(t, add_special_tokens=False)))
    assert counted.tokens == words(build_context(HITS[:1], 1000).text)
    assert build_context(HITS[:1], 1000, tokens=Emb()).tokens == len("[1] src/0.md\n") + len(HITS[0].text)
    assert approx_token_count("北京是中国的首都") == 8
    with pytest.raises(TypeError, match="tokens must be"):
        build_context(HITS, 100, tokens=3)
    with pytest.raises(ValueError, match="max_tokens"):
        build_context(HITS, 0)


def test_cite() -> None:
    assert cite(HITS[1]) == "src/1.md, page 3"
    assert cite(replace(HITS[0], start_line=4, end_line=9)) == "src/0.md, lines 4-9"
    assert cite(replace(HITS[0], start_line=4, end_line=4)) == "src/0.md, line 4"
    assert cite(HITS[0]) == "src/0.md"  # lines unknown
    assert cite(Hit(chunk_id=1, doc_id="x", text="", score=0.0)) == "x"


class FakeRetriever:
    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}

    def search(self, query: str, k: int = 10, **kwargs: Any) -> list[Hit]:
        self.kwargs = {"k": k, **kwargs}
        return HITS[:k]


def test_answer_with_plain_callable() -> None:
    prompts: list[str] = []

    def llm(prompt: str) -> str:
        prompts.append(prompt)
        return " Nightly [1]. "

    retriever = FakeRetriever()
    result = answer("When are logs rotated?", retriever, llm, k=2, hybrid=True)
    assert result.text == "Nightly [1]."
    assert retriever.kwargs == {"k": 2, "hybrid": True}
    assert "[1] src/0.md" in prompts[0] and "Question: When are logs rotated?" in prompts[0]
    assert result.context.hits == HITS[:2]


def test_answer_with_chat_model_and_hit_list() -> None:
    @dataclass
    class Message:
        content: Any

    class Chat:
        def invoke(self, prompt: str) -> Message:
            return Message(content=[{"type": "text", "text": "Backups at 2am [2]."}])

    result = answer("When do backups run?", HITS[:2], Chat())
    assert result.text == "Backups at 2am [2]."
    with pytest.raises(TypeError, match="chat model"):
        answer("q", HITS, llm=42)
    with pytest.raises(ValueError, match="placeholders"):
        answer("q", HITS, llm=str, prompt="no placeholders")


def test_rag_and_search_import_no_langchain() -> None:
    import subprocess

    code = ("import sys, qwen3_rag.pipelines.rag, qwen3_rag.pipelines.search, "
            "qwen3_rag.pipelines.evaluation; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('langchain', 'langchain_core')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- small-to-big: passages widened to their neighbouring chunks -------------------------------------------------

LONG = "\n".join(f"Line {i} says fact number {i} about the system." for i in range(1, 41))


@pytest.fixture()
def long_index(tmp_path: Any, hash_embedder: Any) -> Any:
    from qwen3_rag import Document, Index, ingest_documents

    index = Index.create(tmp_path / "ix", hash_embedder, chunk_size=24, chunk_overlap=6)
    ingest_documents([Document(id="long", text=LONG, source="ops.md"),
                      Document(id="short", text="A short note.", source="note.md")], index)
    yield index
    index.close()


def _hits(index: Any, *positions: int) -> list[Hit]:
    chunks = index.chunks_of("long")
    return [chunks[p].to_hit(1.0 - n / 10) for n, p in enumerate(positions)]


def _passages(ctx: Any) -> list[str]:
    return [part.split("\n", 1)[1] for part in ctx.text.split("\n\n")]


def test_neighbours_widen_a_hit_to_an_exact_slice_with_its_lines(long_index: Any) -> None:
    from qwen3_rag.types import line_spans

    chunks = long_index.chunks_of("long")
    assert len(chunks) >= 8
    ctx = build_context(_hits(long_index, 4), 10_000, tokens=words, index=long_index, neighbours=2)
    [hit] = ctx.hits
    assert (hit.start, hit.end) == (chunks[2].start, chunks[6].end)
    assert _passages(ctx) == [LONG[hit.start:hit.end]] and hit.text == LONG[hit.start:hit.end]
    first, last = line_spans(LONG, [(hit.start, hit.end)])[0]
    assert (hit.start_line, hit.end_line) == (first, last) and ctx.sources == [f"[1] ops.md, lines {first}-{last}"]
    assert ctx.tokens == words(ctx.text) and not ctx.truncated
    # at the start of the document only the following chunks are added
    [hit] = build_context(_hits(long_index, 0), 10_000, tokens=words, index=long_index, neighbours=1).hits
    assert (hit.start, hit.end) == (0, chunks[1].end)


def test_neighbouring_passages_never_repeat_text(long_index: Any) -> None:
    chunks = long_index.chunks_of("long")
    short = long_index.chunks_of("short")[0].to_hit(0.05)
    for positions in [(3, 5), (5, 3), (3, 4), (2, 6, 4)]:
        ctx = build_context([*_hits(long_index, *positions), short], 10_000, tokens=words, index=long_index,
                            neighbours=2)
        spans = sorted((h.start, h.end) for h in ctx.hits if h.doc_id == "long")
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False))  # disjoint
        assert all(p == LONG[h.start:h.end]
                   for p, h in zip(_passages(ctx), ctx.hits, strict=True) if h.doc_id == "long")
        assert ctx.hits[-1] == short and _passages(ctx)[-1] == "A short note."
        # together the passages cover the chunks around the hits, nothing outside them
        assert spans[0][0] == chunks[max(0, min(positions) - 2)].start
        assert spans[-1][1] == chunks[min(len(chunks) - 1, max(positions) + 2)].end
    overlapping = build_context(_hits(long_index, 3, 4), 10_000, tokens=words, index=long_index, neighbours=1)
    assert len(overlapping.hits) == 1  # overlapping chunks are one passage


def test_neighbours_spend_only_the_budget_left_best_hit_first(long_index: Any) -> None:
    hits = _hits(long_index, 2, 6)
    plain = build_context(hits, 10_000, tokens=words)
    second, grown = build_context(hits[1:], 10_000, tokens=words).tokens, 0
    for budget in range(plain.tokens, plain.tokens + 120, 5):
        ctx = build_context(hits, budget, tokens=words, index=long_index, neighbours=2)
        assert words(ctx.text) == ctx.tokens <= budget and len(ctx.hits) == 2
        assert all(p == LONG[h.start:h.end] for p, h in zip(_passages(ctx), ctx.hits, strict=True))
        # the first passage grows first: as far as it would with the budget the second one leaves it
        alone = build_context(hits[:1], budget - second, tokens=words, index=long_index, neighbours=2)
        assert (ctx.hits[0].start, ctx.hits[0].end) == (alone.hits[0].start, alone.hits[0].end)
        grown += ctx.hits[1] != hits[1]
    assert grown  # the second passage grew too, once the first could not
    assert build_context(hits, plain.tokens, tokens=words, index=long_index, neighbours=2).text == plain.text
    cut = build_context(hits, plain.tokens - 5, tokens=words, index=long_index, neighbours=2, min_passage_tokens=1)
    assert cut.truncated and cut.text == build_context(hits, plain.tokens - 5, tokens=words,
                                                       min_passage_tokens=1).text


def test_neighbours_need_the_index(long_index: Any) -> None:
    with pytest.raises(ValueError, match="index=retriever.index"):
        build_context(HITS, 100, neighbours=1)
    with pytest.raises(ValueError, match="neighbours must be"):
        build_context(HITS, 100, index=long_index, neighbours=-1)
    # hits that are not the index's (another document, or changed since) keep their own text
    assert build_context(HITS[:2], 1000, index=long_index, neighbours=1).text == build_context(HITS[:2], 1000).text
    result = answer("q", _hits(long_index, 4), lambda prompt: "ok", index=long_index, neighbours=1)
    assert result.context.hits[0].start == long_index.chunks_of("long")[3].start
