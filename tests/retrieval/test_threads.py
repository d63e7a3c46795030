"""CPU threads follow the cores other processes leave free (qwen3_rag/retrieval/_threads.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from qwen3_rag.retrieval import _threads
from qwen3_rag.retrieval._threads import INTERVAL, ThreadGovernor, busy_seconds


class Machine:
    """A fake clock and CPU counters: ``run(seconds, others=, own=)`` advances them as if other processes kept
    ``others`` cores busy and this one ``own``."""

    def __init__(self) -> None:
        self.now, self.busy, self.own, self.threads = 100.0, 0.0, 0.0, 2
        self.set_calls: list[int] = []

    def run(self, seconds: float, others: float = 0.0, own: float = 0.0) -> None:
        self.now += seconds
        self.busy += (others + own) * seconds
        self.own += own * seconds

    def governor(self, cores: int = 2) -> ThreadGovernor:
        def set_threads(n: int) -> None:
            self.set_calls.append(n)
            self.threads = n
        return ThreadGovernor(cores, lambda: self.busy, own=lambda: self.own, clock=lambda: self.now,
                              set_threads=set_threads, get_threads=lambda: self.threads)


def test_a_quiet_machine_keeps_every_core() -> None:
    m = Machine()
    gov = m.governor()
    m.run(2.0, own=2.0)
    assert gov.update() == 2
    assert m.set_calls == []


def test_other_work_takes_threads_away_and_gives_them_back() -> None:
    m = Machine()
    gov = m.governor()
    m.run(1.5, others=1.0, own=1.0)  # another process holds one of the two cores
    assert gov.update() == 1 and m.threads == 1
    m.run(1.5, others=1.3, own=0.7)
    assert gov.update() == 1
    m.run(1.5, others=0.0, own=1.0)  # it stopped
    assert gov.update() == 2 and m.threads == 2


def test_never_fewer_than_one_thread() -> None:
    m = Machine()
    gov = m.governor(cores=4)
    m.run(1.0, others=4.0)
    assert gov.update() == 1


def test_looks_at_most_once_an_interval() -> None:
    m = Machine()
    gov = m.governor()
    m.run(INTERVAL / 2, others=2.0)
    assert gov.update() == 2  # too soon to tell
    m.run(INTERVAL, others=2.0)
    assert gov.update() == 1


def test_a_thread_that_has_not_seen_the_count_gets_it_between_looks() -> None:
    """OpenMP keeps the thread count per thread: a second thread calling within the interval is set too."""
    m = Machine()
    gov = m.governor()
    m.run(1.0, others=1.0, own=1.0)
    gov.update()
    m.threads = 2  # as another thread, which never had the count set, would report
    m.run(0.1)
    assert gov.update() == 1 and m.threads == 1


def test_busy_seconds_reads_the_cores_asked_for(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  900 0 100 5000 0 0 0 0 0 0\n"
                    "cpu0 100 10 20 3000 50 1 2 3 0 0\n"
                    "cpu1 800 0 80 2000 0 0 0 0 0 0\n"
                    "intr 1 2 3\n")
    ticks = os.sysconf("SC_CLK_TCK")
    assert busy_seconds([0], stat) == pytest.approx((100 + 10 + 20 + 1 + 2 + 3) / ticks)  # not idle, not iowait
    assert busy_seconds([0, 1], stat) == pytest.approx((136 + 880) / ticks)
    with pytest.raises(ValueError, match="lacks a line"):
        busy_seconds([2], stat)


def test_stays_out_of_the_way_when_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_threads, "_governor_made", False)
    monkeypatch.setattr(_threads, "_governor", None)  # both restored after: other tests keep the process's
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert _threads.governor() is None


def test_stays_out_of_the_way_under_a_cpu_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    """A container's quota below its affinity mask: the host's other tenants say nothing about its free cores."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(_threads._loading, "available_cpus", lambda: 2)
    assert _threads._make() is None


def test_the_embedder_asks_before_every_batch(tiny_qwen3_embedding_dir: str) -> None:
    """On a CPU the runner consults its governor before each forward pass, and the count it sets is in force."""
    from qwen3_rag import Embedder

    emb = Embedder(tiny_qwen3_embedding_dir, device="cpu", max_tokens_per_batch=64)
    emb.embed_documents(["load the model"])
    m = Machine()
    calls = []
    gov = m.governor()
    real_update = gov.update

    def update() -> int:
        calls.append(torch.get_num_threads())
        return real_update()

    gov.update = update  # type: ignore[method-assign]
    gov._set, gov._get = torch.set_num_threads, torch.get_num_threads
    emb._runner.cpu_threads = gov
    before = torch.get_num_threads()
    try:
        m.run(1.5, others=float(before))  # every core busy with other work
        texts = [f"document number {i} " * 8 for i in range(12)]
        vectors = emb.embed_documents(texts)
        assert len(calls) >= 2  # one look per batch: 12 texts of ~40 tokens in 64-token batches
        assert torch.get_num_threads() == 1
        assert vectors.shape[0] == 12
    finally:
        torch.set_num_threads(before)
