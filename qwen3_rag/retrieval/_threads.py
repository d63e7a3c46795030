"""CPU threads that follow the cores other processes leave free.

A CPU forward pass is thousands of short parallel regions, each ending at a barrier where every thread waits for
the slowest. On a machine of its own, one thread per core is fastest. When other processes keep some of the cores
busy, a thread that the scheduler has put aside stalls every region, and libgomp's idle threads spin on the
cores the others need: small batches then ran slower than the model card's plain loop. Running fewer threads,
as many as the cores that are actually free, avoids both, and costs nothing on a quiet machine, where all cores
stay in use. Making idle threads sleep instead of spin (``OMP_WAIT_POLICY=PASSIVE``) also helps under load, but
slows small models on a quiet machine, where the wake-ups cost more than the spinning did (BENCHMARKS.md, "7.
Footprint and CPU under load").

:class:`ThreadGovernor` looks, at most once a second, at how busy the process's cores were since it last looked
(``/proc/stat``, Linux) minus the CPU time of this process, and sets torch's threads of the calling thread to the
cores left free (at least one). It stays out of the way where that measure means nothing or the user chose: no
``/proc/stat``, a cgroup CPU quota below the cores of the affinity mask (the host's other tenants are not this
container's competition), or ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` set.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from qwen3_rag.retrieval import _loading

logger = logging.getLogger(__name__)

#: Seconds between two looks at the cores; shorter windows measure the other processes less reliably.
INTERVAL = 1.0
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: Fields of a ``/proc/stat`` cpu line that are time the core was not idle (user, nice, system, irq, softirq,
#: steal: time a hypervisor gave to other machines is not free either).
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)


def busy_seconds(cpus: Sequence[int], stat: Path = Path("/proc/stat")) -> float:
    """CPU seconds the given cores have spent busy since boot, from ``/proc/stat``.

    Raises:
        OSError: the file cannot be read; ValueError: it lacks a line for one of ``cpus``.
    """
    wanted = {f"cpu{c}" for c in cpus}
    total, seen = 0, 0
    for line in stat.read_text().splitlines():
        name, _, rest = line.partition(" ")
        if name in wanted:
            fields = rest.split()
            total += sum(int(fields[i]) for i in _BUSY_FIELDS if i < len(fields))
            seen += 1
    if seen != len(wanted):
        raise ValueError(f"{stat} lacks a line for some of the cpus {sorted(wanted)}")
    return total / _TICKS


class ThreadGovernor:
    """Sets torch's intra-op threads to the cores left free by other processes (see the module docstring).

    Args:
        cores: The cores this process may use (the most threads it runs).
        busy: Seconds the cores have been busy (all processes), cumulative.
        own: Seconds of CPU this process has used, cumulative.
        clock: Seconds, monotonic.
        set_threads: Applies a thread count to the calling thread (OpenMP keeps one per thread).
        get_threads: The calling thread's count.
    """

    def __init__(self, cores: int, busy: Callable[[], float], *, own: Callable[[], float] = time.process_time,
                 clock: Callable[[], float] = time.monotonic,
                 set_threads: Callable[[int], None] = torch.set_num_threads,
                 get_threads: Callable[[], int] = torch.get_num_threads) -> None:
        self.cores = cores
        self._busy, self._own, self._clock = busy, own, clock
        self._set, self._get = set_threads, get_threads
        self._lock = threading.Lock()
        self._last = (clock(), busy(), own())
        #: The thread count last set (``cores`` until the first window shows other work).
        self.threads = cores

    def update(self) -> int:
        """Look again if a second has passed and set the thread count; returns the count in force."""
        with self._lock:
            now = self._clock()
            then, busy_then, own_then = self._last
            if now - then < INTERVAL:
                if self._get() != self.threads:  # OpenMP keeps the count per thread: this one has not seen it
                    self._set(self.threads)
                return self.threads
            busy, own = self._busy(), self._own()
            self._last = (now, busy, own)
            others = max(0.0, (busy - busy_then) - (own - own_then)) / (now - then)
            threads = max(1, min(self.cores, math.floor(self.cores - others + 0.5)))
            if threads != self.threads:
                logger.debug("other processes kept %.1f of %d cores busy: %d torch threads", others, self.cores,
                             threads)
                self.threads = threads
            if self._get() != threads:
                self._set(threads)
            return threads


_governor: ThreadGovernor | None = None
_governor_made = False
_made_lock = threading.Lock()


def governor() -> ThreadGovernor | None:
    """The process's governor, or None where it stays out of the way (see the module docstring)."""
    global _governor, _governor_made
    with _made_lock:
        if not _governor_made:
            _governor_made = True
            _governor = _make()
        return _governor


def _make() -> ThreadGovernor | None:
    if os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return None
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    cores = _loading.available_cpus()
    if cores < len(cpus) or cores < 2:  # a quota below the mask, or nothing to choose
        return None
    try:
        busy_seconds(cpus)
    except (OSError, ValueError):
        return None
    return ThreadGovernor(cores, lambda: busy_seconds(cpus))
