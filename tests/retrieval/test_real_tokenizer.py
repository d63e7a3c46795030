"""Token-level checks with the real Qwen tokenizer from ../shared (skipped when ../shared is absent)."""

from __future__ import annotations

import pytest
from conftest import save_tiny_model

from qwen3_rag import Embedder, Reranker

ENDOFTEXT, YES, NO = 151643, 9693, 2152


@pytest.fixture(scope="module")
def real_vocab_model_dirs(tmp_path_factory, real_tokenizer):
    small = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1, head_dim=16)
    emb = save_tiny_model(tmp_path_factory.mktemp("real_emb"), real_tokenizer, causal_lm=False, seed=0, **small)
    rr = save_tiny_model(tmp_path_factory.mktemp("real_rr"), real_tokenizer, causal_lm=True, seed=0, **small)
    return emb, rr


def test_reranker_prefix_suffix_and_yes_no_ids(real_vocab_model_dirs):
    rr = Reranker(real_vocab_model_dirs[1], device="cpu", dtype="float32")
    prefix, suffix = rr._affixes()
    assert len(prefix) == 39
    assert suffix == [151645, 198, 151644, 77091, 198, 151667, 271, 151668, 271]
    assert rr.tokenizer.convert_tokens_to_ids("yes") == YES
    assert rr.tokenizer.convert_tokens_to_ids("no") == NO
    ids = rr.tokenize("What is X?", "X is a letter.")
    assert ids[:39] == prefix and ids[-9:] == suffix
    score = rr.score("What is X?", ["X is a letter."])[0]
    assert 0.0 <= score <= 1.0


def test_queries_and_documents_end_in_endoftext_exactly_once(real_vocab_model_dirs):
    emb = Embedder(real_vocab_model_dirs[0], device="cpu", dtype="float32", instruction="scifact")
    texts = ["What is the capital of China?", "", "北京是中国的首都。", "ends with the token <|endoftext|>"]
    from qwen3_rag import TASKS, format_query

    for ids in emb.tokenize([format_query(t, TASKS["scifact"]) for t in texts]) + emb.tokenize(texts):
        assert ids[-1] == ENDOFTEXT
    # a text that itself spells the token contributes one; we add exactly one more and never a second one of ours
    plain = emb.tokenize(texts[:3])
    assert all(ids.count(ENDOFTEXT) == 1 for ids in plain)
    query_ids = emb.tokenize([format_query("What", TASKS["scifact"])])[0]
    assert emb.tokenizer.decode(query_ids[:-1]).endswith("\nQuery:What")
    spaced = emb.tokenizer("Query: What", add_special_tokens=False)["input_ids"]
    assert emb.tokenizer("Query:What", add_special_tokens=False)["input_ids"] != spaced
    assert emb.embed_queries(texts).shape == (4, 32)
