from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from qwen3_reference import reference_rerank

from qwen3_rag import DEFAULT_INSTRUCTION, TASKS, Reranker

QUERY = "What is the capital of China?"
DOCS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other.",
    "",
    "Paris is the capital of France. " * 8,
    "yes",
]


def test_scores_equal_the_reference_algorithm(tiny_reranker, tiny_qwen3_reranker_dir):
    ours = tiny_reranker.score(QUERY, DOCS)
    ref = reference_rerank(tiny_qwen3_reranker_dir, [(QUERY, d) for d in DOCS], DEFAULT_INSTRUCTION)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    assert all(0.0 <= s <= 1.0 for s in ours)
    assert np.ptp(ours) > 1e-3  # the tiny model really discriminates, so the comparison means something


def test_instruction_by_name(tiny_reranker, tiny_qwen3_reranker_dir):
    ours = tiny_reranker.score(QUERY, DOCS, instruction="scifact")
    ref = reference_rerank(tiny_qwen3_reranker_dir, [(QUERY, d) for d in DOCS], TASKS["scifact"])
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_rerank_sorts_and_keeps_indices(tiny_reranker):
    scores = tiny_reranker.score(QUERY, DOCS)
    results = tiny_reranker.rerank(QUERY, DOCS)
    assert [r.index for r in results] == sorted(range(len(DOCS)), key=lambda i: -scores[i])
    assert all(r.document == DOCS[r.index] and r.score == scores[r.index] for r in results)
    top = tiny_reranker.rerank(QUERY, DOCS, top_n=2)
    assert top == results[:2]
    assert tiny_reranker.rerank(QUERY, []) == []


def test_batch_invariance(tiny_qwen3_reranker_dir):
    one = Reranker(tiny_qwen3_reranker_dir, device="cpu", dtype="float32", batch_size=1)
    big = Reranker(tiny_qwen3_reranker_dir, device="cpu", dtype="float32", max_tokens_per_batch=100_000)
    long_docs = ["The capital of China is Beijing and it is a large city. " * 12] * 3
    alone = one.score(QUERY, DOCS)
    mixed = big.score(QUERY, long_docs + DOCS)[len(long_docs):]
    np.testing.assert_allclose(mixed, alone, atol=1e-5)


def test_truncation_cuts_only_the_body(tiny_qwen3_reranker_dir):
    rr = Reranker(tiny_qwen3_reranker_dir, device="cpu", dtype="float32", max_length=80)
    prefix, suffix = rr._affixes()
    doc = "Beijing is the capital of China. " * 50
    ids = rr.tokenize(QUERY, doc)
    assert len(ids) == 80
    assert ids[: len(prefix)] == prefix and ids[-len(suffix):] == suffix
    ref = reference_rerank(tiny_qwen3_reranker_dir, [(QUERY, doc)], DEFAULT_INSTRUCTION, max_length=80)
    np.testing.assert_allclose(rr.score(QUERY, [doc]), ref, atol=1e-5)


def test_score_pairs_across_queries(tiny_reranker):
    pairs = [(QUERY, DOCS[0]), ("Explain gravity", DOCS[1])]
    assert tiny_reranker.score_pairs(pairs) == pytest.approx(
        [tiny_reranker.score(QUERY, [DOCS[0]])[0], tiny_reranker.score("Explain gravity", [DOCS[1]])[0]], abs=1e-6
    )


def test_only_two_head_rows_are_kept(tiny_reranker):
    tiny_reranker.score(QUERY, DOCS[:1])
    assert tuple(tiny_reranker._runner._head.shape) == (2, 64)


def test_bad_input(tiny_reranker):
    with pytest.raises(TypeError, match="single str"):
        tiny_reranker.score(QUERY, "not a list")
    with pytest.raises(TypeError, match=r"documents\[1\]"):
        tiny_reranker.score(QUERY, ["ok", 1.5])
    with pytest.raises(TypeError, match="query must be a str"):
        tiny_reranker.score(None, ["ok"])
    with pytest.raises(ValueError, match="top_n"):
        tiny_reranker.rerank(QUERY, ["ok"], top_n=-1)
    with pytest.raises(ValueError, match="query holds '\\\\udce9' at position 3, a lone surrogate"):
        tiny_reranker.score("caf\udce9", ["ok"])
    with pytest.raises(ValueError, match=r"documents\[1\] holds"):
        tiny_reranker.rerank(QUERY, ["ok", "\ud800"])
    with pytest.raises(ValueError, match=r"pairs\[0\]\[1\] holds"):
        tiny_reranker.score_pairs([(QUERY, "x\udcff")])


def test_a_model_that_is_not_a_reranker_is_refused(minilm_path, tiny_qwen3_embedding_dir, tmp_path):
    with pytest.raises(ValueError, match=r"is BertModel \(model_type 'bert'\), not a causal language model"):
        Reranker(minilm_path, device="cpu")
    with pytest.raises(ValueError, match=r"is Qwen3Model \(model_type 'qwen3'\), not a causal language model"):
        Reranker(tiny_qwen3_embedding_dir, device="cpu")
    # an embedding checkpoint whose config says Qwen3ForCausalLM (as Qwen3-Embedding's does) but has no LM head
    disguised = tmp_path / "embedding-as-lm"
    shutil.copytree(tiny_qwen3_embedding_dir, disguised)
    config = json.loads((disguised / "config.json").read_text())
    (disguised / "config.json").write_text(json.dumps({**config, "architectures": ["Qwen3ForCausalLM"]}))
    with pytest.raises(ValueError, match=r"weights are a bare transformer without a language-model head"):
        Reranker(str(disguised), device="cpu")


def test_shared_prefix_path_equals_the_reference(tiny_qwen3_reranker_dir, monkeypatch):
    from qwen3_rag.retrieval import reranking

    seen: list[int] = []
    original = reranking._RerankerRunner.run_with_prefix

    def spy(self, prefix, rests):
        seen.append(len(prefix))
        return original(self, prefix, rests)

    monkeypatch.setattr(reranking._RerankerRunner, "run_with_prefix", spy)
    # A small budget forces several batches, so padding sits between the prefix and the shorter candidates.
    shared = Reranker(tiny_qwen3_reranker_dir, device="cpu", dtype="float32", max_tokens_per_batch=120)
    plain = Reranker(tiny_qwen3_reranker_dir, device="cpu", dtype="float32", share_prefix=False)
    ours = shared.score(QUERY, DOCS)
    prefix, _ = shared._affixes()
    assert len(seen) == 1 and seen[0] > len(prefix)  # the system prompt, the instruction and the query were shared
    ref = reference_rerank(tiny_qwen3_reranker_dir, [(QUERY, d) for d in DOCS], DEFAULT_INSTRUCTION)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(plain.score(QUERY, DOCS), ref, atol=1e-5)


def test_shared_prefix_across_queries_in_pairs(tiny_qwen3_reranker_dir):
    rr = Reranker(tiny_qwen3_reranker_dir, device="cpu", dtype="float32", max_tokens_per_batch=200)
    pairs = [(QUERY, d) for d in DOCS] + [("Explain gravity", d) for d in DOCS[:3]] + [("What is yes?", "yes")]
    ref = reference_rerank(tiny_qwen3_reranker_dir, pairs, DEFAULT_INSTRUCTION)
    np.testing.assert_allclose(rr.score_pairs(pairs), ref, atol=1e-5)


def test_split_by_shared_prefix_keeps_small_groups_and_short_prefixes_whole():
    from qwen3_rag.retrieval.reranking import MIN_SHARED_GROUP, MIN_SHARED_PREFIX, split_by_shared_prefix

    head = list(range(100, 100 + MIN_SHARED_PREFIX))
    big = [[*head, i, i] for i in range(MIN_SHARED_GROUP)]  # query 0: enough rows, a long enough prefix
    small = [[*head, i] for i in range(MIN_SHARED_GROUP - 1)]  # query 1: too few rows
    short = [[*head[:MIN_SHARED_PREFIX - 1], i, i] for i in range(MIN_SHARED_GROUP)]  # query 2: prefix too short
    sequences = [*big, *small, *short]
    groups = [0] * len(big) + [1] * len(small) + [2] * len(short)
    shared, alone = split_by_shared_prefix(sequences, groups)
    assert shared == [(list(range(len(big))), MIN_SHARED_PREFIX)]
    assert alone == list(range(len(big), len(sequences)))


def test_common_prefix_length_keeps_a_token_to_score():
    from qwen3_rag.retrieval.reranking import common_prefix_length

    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # identical candidates: the last token is still run
    assert common_prefix_length([[1, 2], [1, 2, 3, 4]]) == 1
    assert common_prefix_length([[7], [7, 8]]) == 0


def test_identical_and_nested_candidates(tiny_qwen3_reranker_dir):
    rr = Reranker(tiny_qwen3_reranker_dir, device="cpu", dtype="float32")
    docs = ["Beijing.", "Beijing.", "Beijing. It is big.", "yes"]
    ref = reference_rerank(tiny_qwen3_reranker_dir, [(QUERY, d) for d in docs], DEFAULT_INSTRUCTION)
    np.testing.assert_allclose(rr.score(QUERY, docs), ref, atol=1e-5)


def test_shared_prefix_with_truncated_candidates(tiny_qwen3_reranker_dir):
    rr = Reranker(tiny_qwen3_reranker_dir, device="cpu", dtype="float32", max_length=80)
    docs = [f"Beijing is the capital of China number {i}. " * (10 + i) for i in range(5)]
    assert all(len(rr.tokenize(QUERY, d)) == 80 for d in docs)
    ref = reference_rerank(tiny_qwen3_reranker_dir, [(QUERY, d) for d in docs], DEFAULT_INSTRUCTION, max_length=80)
    np.testing.assert_allclose(rr.score(QUERY, docs), ref, atol=1e-5)
