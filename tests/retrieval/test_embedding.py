from __future__ import annotations

import logging

import numpy as np
import pytest
from qwen3_reference import reference_embed

from qwen3_rag import TASKS, Embedder, format_query
from qwen3_rag.retrieval._runner import check_queries

TEXTS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other.",
    "",
    "yes",
    "Retrieval augmented generation combines search with language models to answer questions. " * 6,
]


def test_documents_equal_the_reference_algorithm(tiny_embedder, tiny_qwen3_embedding_dir):
    ours = tiny_embedder.embed_documents(TEXTS)
    ref = reference_embed(tiny_qwen3_embedding_dir, TEXTS)
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), tiny_embedder.dim)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_queries_use_the_instruction_template(tiny_embedder, tiny_qwen3_embedding_dir):
    queries = ["What is the capital of China?", "Explain gravity"]
    ours = tiny_embedder.embed_queries(queries, instruction="scifact")
    ref = reference_embed(tiny_qwen3_embedding_dir, [format_query(q, TASKS["scifact"]) for q in queries])
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    default = tiny_embedder.embed_queries(queries)
    np.testing.assert_allclose(default, reference_embed(tiny_qwen3_embedding_dir, [format_query(q) for q in queries]),
                               atol=1e-5)
    assert not np.allclose(default, ours, atol=1e-3)


def test_rows_are_unit_vectors(tiny_embedder):
    out = tiny_embedder.embed_documents(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)


def test_input_ends_with_endoftext_exactly_once_for_both_tokenizer_kinds(
    tiny_qwen3_embedding_dir, tiny_qwen3_embedding_plain_dir
):
    appending = Embedder(tiny_qwen3_embedding_dir, device="cpu", dtype="float32")
    plain = Embedder(tiny_qwen3_embedding_plain_dir, device="cpu", dtype="float32")
    eot = appending.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    # the two tokenizers really differ in what they append
    assert appending.tokenizer("a")["input_ids"][-1] == eot
    assert plain.tokenizer("a")["input_ids"][-1] != eot
    for emb in (appending, plain):
        for ids in emb.tokenize(TEXTS):
            assert ids[-1] == eot and ids.count(eot) == 1
    assert appending.tokenize(TEXTS) == plain.tokenize(TEXTS)
    np.testing.assert_allclose(appending.embed_documents(TEXTS), plain.embed_documents(TEXTS), atol=1e-6)


def test_truncation_keeps_the_final_endoftext(tiny_qwen3_embedding_dir):
    emb = Embedder(tiny_qwen3_embedding_dir, device="cpu", dtype="float32", max_length=16)
    long_text = "gravity attracts bodies " * 40
    ids = emb.tokenize([long_text])[0]
    eot = emb.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert len(ids) == 16 and ids[-1] == eot and ids.count(eot) == 1
    np.testing.assert_allclose(emb.embed_documents([long_text]),
                               reference_embed(tiny_qwen3_embedding_dir, [long_text], max_length=16), atol=1e-5)


def test_batch_invariance_short_text_among_much_longer_ones(tiny_qwen3_embedding_dir):
    emb = Embedder(tiny_qwen3_embedding_dir, device="cpu", dtype="float32", max_tokens_per_batch=100_000)
    short = ["Beijing", "gravity", ""]
    longer = ["The capital of China is Beijing and it is a large city. " * 15] * 3
    alone = np.concatenate([emb.embed_documents([t]) for t in short])
    mixed = emb.embed_documents(longer + short)[len(longer):]
    np.testing.assert_allclose(mixed, alone, atol=1e-5)


def test_batching_settings_do_not_change_results(tiny_qwen3_embedding_dir):
    texts = [f"text number {i} " * (i % 7 + 1) for i in range(23)]
    a = Embedder(tiny_qwen3_embedding_dir, device="cpu", dtype="float32", batch_size=1).embed_documents(texts)
    b = Embedder(tiny_qwen3_embedding_dir, device="cpu", dtype="float32", max_tokens_per_batch=64)
    b = b.embed_documents(texts)
    c = Embedder(tiny_qwen3_embedding_dir, device="cpu", dtype="float32").embed_documents(texts)
    np.testing.assert_allclose(a, c, atol=1e-5)
    np.testing.assert_allclose(b, c, atol=1e-5)


def test_mrl_dim_is_slice_then_renormalise(tiny_qwen3_embedding_dir, tiny_embedder):
    emb = Embedder(tiny_qwen3_embedding_dir, device="cpu", dtype="float32", dim=32)
    assert emb.dim == 32
    full = reference_embed(tiny_qwen3_embedding_dir, TEXTS)
    sliced = full[:, :32] / np.linalg.norm(full[:, :32], axis=1, keepdims=True)
    out = emb.embed_documents(TEXTS)
    assert out.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(out, sliced, atol=1e-5)
    np.testing.assert_allclose(out, reference_embed(tiny_qwen3_embedding_dir, TEXTS, dim=32), atol=1e-5)


@pytest.mark.parametrize("dim", [0, 31, 65, 10_000, 2.5, True])
def test_dim_out_of_range_is_a_value_error_naming_the_range(tiny_qwen3_embedding_dir, dim):
    with pytest.raises(ValueError, match=r"from 32 to 64"):
        Embedder(tiny_qwen3_embedding_dir, device="cpu", dim=dim)


def test_empty_list_gives_zero_rows(tiny_embedder):
    assert tiny_embedder.embed_documents([]).shape == (0, tiny_embedder.dim)
    assert tiny_embedder.embed_queries([]).shape == (0, tiny_embedder.dim)


def test_bad_input_types(tiny_embedder):
    with pytest.raises(TypeError, match="single str"):
        tiny_embedder.embed_documents("a bare string")
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        tiny_embedder.embed_queries(["ok", 3])
    with pytest.raises(TypeError, match=r"texts\[0\] is NoneType"):
        tiny_embedder.embed_documents([None])


@pytest.mark.parametrize("bad", ["caf\udce9", "\ud800", "ok \udcff tail"])
def test_a_lone_surrogate_is_a_value_error_naming_the_item(tiny_embedder, bad):
    for call in (tiny_embedder.embed_queries, tiny_embedder.embed_documents, tiny_embedder.count_tokens):
        with pytest.raises(ValueError, match=r"texts\[1\] holds .* a lone surrogate"):
            call(["fine", bad])


def test_check_queries_refuses_empty_queries():
    assert check_queries(["a", "北京"]) == ["a", "北京"]
    assert check_queries("one") == ["one"]
    with pytest.raises(ValueError, match=r"query 2 is empty \(only whitespace\)"):
        check_queries(["a", "b", " \t\n"])
    with pytest.raises(ValueError, match=r"query 0 is empty: a search needs some words"):
        check_queries([""])
    with pytest.raises(ValueError, match="the query is empty"):
        check_queries("   ")
    with pytest.raises(ValueError, match=r"queries\[0\] holds"):
        check_queries("\udce9")
    with pytest.raises(TypeError, match=r"queries\[1\] is NoneType"):
        check_queries(["a", None])


def test_dim_on_a_model_without_matryoshka_training_warns(minilm_path, tiny_qwen3_embedding_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="qwen3_rag.retrieval.embedding"):
        Embedder(minilm_path, device="cpu", dim=128)
    assert "not trained for Matryoshka truncation" in caplog.text and "384" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qwen3_rag.retrieval.embedding"):
        Embedder(tiny_qwen3_embedding_dir, device="cpu", dim=32)  # Qwen3-Embedding is
        Embedder(minilm_path, device="cpu", dim=384)  # the full size truncates nothing
    assert caplog.text == ""


def test_missing_model_is_a_value_error_naming_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ValueError, match="no-such-model"):
        Embedder(str(missing))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="config.json"):
        Embedder(str(tmp_path / "empty"))


def test_construction_is_lazy(tiny_qwen3_embedding_dir):
    emb = Embedder(tiny_qwen3_embedding_dir, device="cpu")
    assert emb._runner._model is None
    assert emb.dim == 64
    emb.embed_documents(["x"])
    assert emb._runner._model is not None


def test_describe_is_json_and_stable(tiny_embedder, tiny_qwen3_embedding_dir):
    import json

    info = tiny_embedder.describe()
    json.dumps(info)
    assert info["pooling"] == "last_token" and info["dim"] == 64 and info["normalize"] is True
    again = Embedder(tiny_qwen3_embedding_dir, device="cpu").describe()
    assert again["fingerprint"] == info["fingerprint"]


def test_default_max_length_is_8192_for_qwen3_capped_by_positions(tiny_embedder):
    # the tiny config has 1024 positions, so 8192 is capped there
    assert tiny_embedder.max_length == 1024


def test_count_tokens(tiny_embedder):
    counts = tiny_embedder.count_tokens(["", "Beijing", "The capital of China is Beijing."])
    assert counts[0] == 0 and 0 < counts[1] < counts[2]


def test_bf16_is_close_to_fp32(tiny_qwen3_embedding_dir):
    fp32 = Embedder(tiny_qwen3_embedding_dir, device="cpu", dtype="float32").embed_documents(TEXTS)
    bf16 = Embedder(tiny_qwen3_embedding_dir, device="cpu", dtype="bfloat16").embed_documents(TEXTS)
    cos = (fp32 * bf16).sum(1)
    assert cos.min() > 0.99


def test_out_of_memory_halves_the_batch_and_retries(tiny_qwen3_embedding_dir, monkeypatch):
    import torch

    emb = Embedder(tiny_qwen3_embedding_dir, device="cpu", dtype="float32", max_tokens_per_batch=100_000)
    texts = TEXTS * 3
    expected = emb.embed_documents(texts)
    real_forward = emb._runner.forward
    calls: list[int] = []
    done: list[int] = []

    def flaky(sequences):
        calls.append(len(sequences))
        if len(sequences) > 4:
            raise torch.OutOfMemoryError("simulated")
        done.append(len(sequences))
        return real_forward(sequences)

    monkeypatch.setattr(emb._runner, "forward", flaky)
    np.testing.assert_allclose(emb.embed_documents(texts), expected, atol=1e-5)
    assert calls[0] == len(texts) and max(done) <= 4 and sum(done) == len(texts)
    assert emb._runner.max_tokens_per_batch < 100_000


def test_no_kv_cache_is_kept_during_a_forward(tiny_qwen3_embedding_dir, tiny_qwen3_reranker_dir):
    from qwen3_rag import Embedder, Reranker

    outputs = []
    emb = Embedder(tiny_qwen3_embedding_dir, device="cpu", dtype="float32")
    rr = Reranker(tiny_qwen3_reranker_dir, device="cpu", dtype="float32", share_prefix=False)
    for module in (emb.model, rr.model):
        module.register_forward_hook(lambda _m, _a, out: outputs.append(out))
    emb.embed_documents(["one text", "another text"])
    rr.score("q", ["a", "b"])
    assert len(outputs) == 2
    for out in outputs:
        assert all(getattr(out, name, None) is None for name in ("past_key_values", "cache"))


def test_embed_tokenized_equals_embed_documents(tiny_embedder):
    texts = ["one text", "", "a longer text " * 30, "yes"]
    ids = tiny_embedder.tokenize(texts)
    np.testing.assert_array_equal(tiny_embedder.embed_tokenized(ids), tiny_embedder.embed_documents(texts))
    assert tiny_embedder.embed_tokenized([]).shape == (0, tiny_embedder.dim)
    with pytest.raises(ValueError, match=r"sequences\[1\] has 0 tokens"):
        tiny_embedder.embed_tokenized([ids[0], []])
    with pytest.raises(ValueError, match="max_length"):
        tiny_embedder.embed_tokenized([[1] * (tiny_embedder.max_length + 1)])


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("model", ["appending", "plain", "minilm"])
def test_ids_from_content_equals_tokenize(model, side, tiny_qwen3_embedding_dir, tiny_qwen3_embedding_plain_dir,
                                          minilm_path):
    """Content ids framed by ids_from_content are what tokenize() gives, with and without truncation, on either
    side, for a tokenizer that appends <|endoftext|>, one that does not, and a [CLS] ... [SEP] one."""
    path = {"appending": tiny_qwen3_embedding_dir, "plain": tiny_qwen3_embedding_plain_dir,
            "minilm": minilm_path}[model]
    texts = ["one text", "", "a longer text about gravity and Beijing " * 30, "yes", "北京 🙂 naïve"]
    for max_length in (None, 12, 3):
        emb = Embedder(path, device="cpu", dtype="float32", max_length=max_length)
        emb.tokenizer.truncation_side = side
        content = emb.tokenizer(texts, add_special_tokens=False)["input_ids"]
        framed = emb.ids_from_content(content)
        assert framed == emb.tokenize(texts)
        if max_length is not None:
            assert any(len(ids) == max_length for ids in framed)  # the long text was truncated


def test_ids_from_content_is_none_without_a_fixed_frame(minilm_path, monkeypatch):
    emb = Embedder(minilm_path, device="cpu", dtype="float32")
    real = type(emb.tokenizer).__call__

    def varying(self, text, add_special_tokens=True, **kw):  # specials that depend on the text
        out = real(self, text, add_special_tokens=add_special_tokens, **kw)
        if add_special_tokens and text == "x":
            out["input_ids"] = [7, *out["input_ids"]]
        return out

    monkeypatch.setattr(type(emb.tokenizer), "__call__", varying)
    assert emb.ids_from_content([[1, 2]]) is None


def test_checkpoint_dtype_reads_either_config_name_without_the_deprecated_one():
    import types

    import torch
    from transformers import BertConfig, Qwen3Config

    from qwen3_rag.retrieval._loading import checkpoint_dtype

    class Strict(BertConfig):  # transformers 5 logs a deprecation warning when torch_dtype is read
        @property
        def torch_dtype(self):
            raise AssertionError("read the deprecated config.torch_dtype")

    assert checkpoint_dtype(Qwen3Config(dtype="bfloat16")) == torch.bfloat16
    assert checkpoint_dtype(Strict()) is None  # no dtype recorded (all-MiniLM-L6-v2's config)
    assert checkpoint_dtype(types.SimpleNamespace(torch_dtype="float16")) == torch.float16  # transformers < 4.56
