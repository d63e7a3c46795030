"""CUDA code paths (run with `pytest -m gpu` on a machine with a GPU; skipped by default)."""

from __future__ import annotations

import numpy as np
import pytest

from qwen3_rag import Embedder, Reranker

pytestmark = pytest.mark.gpu

TEXTS = ["The capital of China is Beijing.", "", "gravity " * 300, "yes"] * 5


@pytest.fixture(autouse=True)
def _need_cuda():
    import torch

    if not torch.cuda.is_available():
        pytest.fail("the gpu tests need CUDA; run them with -m gpu only on a GPU machine")


def test_auto_device_and_dtype_on_cuda(tiny_qwen3_embedding_dir):
    import torch

    emb = Embedder(tiny_qwen3_embedding_dir)
    assert emb.device.type == "cuda"
    # the tiny checkpoint is stored in fp32, so auto keeps fp32; a bf16 checkpoint would run in bf16
    assert emb.dtype in (torch.float32, torch.bfloat16)


def test_cuda_bf16_matches_cpu_fp32(tiny_qwen3_embedding_dir):
    cpu = Embedder(tiny_qwen3_embedding_dir, device="cpu", dtype="float32").embed_documents(TEXTS)
    gpu = Embedder(tiny_qwen3_embedding_dir, device="cuda", dtype="bfloat16").embed_documents(TEXTS)
    assert (cpu * gpu).sum(1).min() > 0.99
    gpu32 = Embedder(tiny_qwen3_embedding_dir, device="cuda", dtype="float32").embed_documents(TEXTS)
    np.testing.assert_allclose(gpu32, cpu, atol=1e-4)


def test_cuda_reranker_matches_cpu(tiny_qwen3_reranker_dir):
    docs = TEXTS[:4]
    cpu = Reranker(tiny_qwen3_reranker_dir, device="cpu", dtype="float32").score("capital?", docs)
    gpu = Reranker(tiny_qwen3_reranker_dir, device="cuda", dtype="float32").score("capital?", docs)
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)


def test_out_of_memory_halves_and_retries(tiny_qwen3_embedding_dir, monkeypatch):
    import torch

    emb = Embedder(tiny_qwen3_embedding_dir, device="cuda", dtype="float32", max_tokens_per_batch=100_000)
    expected = emb.embed_documents(TEXTS)
    runner = emb._runner
    real_forward = runner.forward
    calls = []
    done = []

    def flaky(sequences):
        calls.append(len(sequences))
        if len(sequences) > 4:
            raise torch.OutOfMemoryError("simulated")
        done.append(len(sequences))
        return real_forward(sequences)

    monkeypatch.setattr(runner, "forward", flaky)
    got = emb.embed_documents(TEXTS)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert calls[0] == len(TEXTS) and max(done) <= 4 and sum(done) == len(TEXTS)


def test_cuda_shared_prefix_matches_full_pairs(tiny_qwen3_reranker_dir):
    docs = TEXTS[:8]
    for dtype, atol in (("float32", 1e-4), ("bfloat16", 2e-2)):
        shared = Reranker(tiny_qwen3_reranker_dir, device="cuda", dtype=dtype, max_tokens_per_batch=600)
        full = Reranker(tiny_qwen3_reranker_dir, device="cuda", dtype=dtype, share_prefix=False)
        assert shared._runner.can_share_prefix()
        np.testing.assert_allclose(shared.score("capital?", docs), full.score("capital?", docs), atol=atol)
