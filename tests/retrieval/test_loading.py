"""Model identity and loading checks: the fingerprint covers every weight byte, unknown devices and pickled
weights are clear errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from qwen3_rag import Embedder
from qwen3_rag.retrieval import _loading
from qwen3_rag.retrieval._loading import fingerprint, fingerprint_matches, legacy_fingerprint


def _model_dir(path: Path, weights: bytes) -> str:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    (path / "model.safetensors").write_bytes(weights)
    (path / "README.md").write_text("not part of the model")
    return str(path)


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_change_in_the_middle_of_the_weights_changes_the_fingerprint(tmp_path: Path) -> None:
    weights = os.urandom(5 << 20)  # the legacy scheme read only the first and last MiB
    original = _model_dir(tmp_path / "a", weights)
    copy = _model_dir(tmp_path / "b", weights)
    assert fingerprint(original) == fingerprint(copy)
    _flip(Path(copy) / "model.safetensors", len(weights) // 2)
    assert legacy_fingerprint(original) == legacy_fingerprint(copy)  # the old blind spot
    assert fingerprint(original) != fingerprint(copy)
    assert fingerprint(original).startswith("sha256-all:")
    (Path(original) / "README.md").write_text("edited")  # files that do not define the output do not count
    assert fingerprint(original) == fingerprint(_model_dir(tmp_path / "c", weights))


def test_every_block_counts_and_threads_change_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = os.urandom(10_000)
    base = fingerprint(_model_dir(tmp_path / "base", weights))
    monkeypatch.setattr(_loading, "_HASH_BLOCK", 1024)  # ten blocks, hashed on several threads
    blocked = _model_dir(tmp_path / "blocked", weights)
    first = fingerprint(blocked)
    assert first != base  # another block size is another formula, but a stable one
    assert fingerprint(_model_dir(tmp_path / "again", weights)) == first
    for offset in (0, 1023, 1024, 5000, 9999):
        changed = _model_dir(tmp_path / f"flip{offset}", weights)
        _flip(Path(changed) / "model.safetensors", offset)
        assert fingerprint(changed) != first, offset


def test_the_fingerprint_is_cached_until_a_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _model_dir(tmp_path / "m", os.urandom(4096))
    calls = []
    real = _loading._file_digest
    monkeypatch.setattr(_loading, "_file_digest", lambda f: calls.append(f.name) or real(f))
    first = fingerprint(path)
    assert fingerprint(path) == first and len(calls) == 2  # config.json and model.safetensors, once
    weights = Path(path) / "model.safetensors"
    _flip(weights, 10)
    os.utime(weights, ns=(1, 1))  # a new mtime (and a different one from any earlier write)
    assert fingerprint(path) != first and len(calls) == 4


def test_an_index_with_a_legacy_fingerprint_still_opens_with_its_model(tmp_path: Path,
                                                                       tiny_qwen3_embedding_dir: str) -> None:
    stored = legacy_fingerprint(tiny_qwen3_embedding_dir)  # what an index made before the new scheme holds
    assert stored.startswith("sha256:") and not stored.startswith("sha256-all:")
    assert fingerprint_matches(stored, tiny_qwen3_embedding_dir)
    other = _model_dir(tmp_path / "other", os.urandom(1000))
    assert not fingerprint_matches(stored, other)
    assert fingerprint_matches(fingerprint(other), other) and not fingerprint_matches(fingerprint(other),
                                                                                      tiny_qwen3_embedding_dir)
    assert fingerprint_matches("Qwen/Qwen3-Embedding-0.6B@main", "Qwen/Qwen3-Embedding-0.6B")
    embedder = Embedder(tiny_qwen3_embedding_dir, device="cpu")
    assert embedder.describe()["fingerprint"].startswith("sha256-all:")
    assert embedder.same_model(stored) and embedder.same_model(embedder.describe()["fingerprint"])
    assert not embedder.same_model(legacy_fingerprint(other))


@pytest.mark.parametrize("device", ["tpu9", "cuda:x", "", "gpu"])
def test_an_unknown_device_is_a_value_error_listing_the_forms(tiny_qwen3_embedding_dir: str, device: str) -> None:
    with pytest.raises(ValueError, match=r"is not a device; use 'auto', 'cpu', 'cuda', 'cuda:N'"):
        Embedder(tiny_qwen3_embedding_dir, device=device)


def test_pickled_weights_are_refused_naming_the_file(tmp_path: Path, tiny_qwen3_embedding_dir: str) -> None:
    model = tmp_path / "pickled"
    shutil.copytree(tiny_qwen3_embedding_dir, model)
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04not loaded, never unpickled")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin', a pickled PyTorch file.*safetensors"):
        Embedder(str(model), device="cpu")
    (model / "pytorch_model.bin").unlink()
    with pytest.raises(ValueError, match=r"holds no weights \(\*\.safetensors\)"):
        Embedder(str(model), device="cpu")


def test_cpu_threads_follow_the_cores_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from qwen3_rag.retrieval import _loading

    monkeypatch.setattr(_loading.os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr(_loading, "_cgroup_cpu_quota", lambda: 2.5)  # a container limited to 2.5 CPUs
    assert _loading.available_cpus() == 3
    monkeypatch.setattr(_loading, "_cgroup_cpu_quota", lambda: None)
    assert _loading.available_cpus() == 16
    monkeypatch.setattr(_loading, "_cgroup_cpu_quota", lambda: 1.0)
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    try:
        torch.set_num_threads(4)
        _loading.limit_cpu_threads()
        assert torch.get_num_threads() == 1
        torch.set_num_threads(4)
        monkeypatch.setenv("OMP_NUM_THREADS", "4")  # the user's choice is kept
        _loading.limit_cpu_threads()
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)
