"""What fingerprinting a local model costs: every weight byte hashed (``sha256-all``) against the legacy scheme
(first and last MiB of each weight file), for all-MiniLM-L6-v2 and a synthetic 1.2 GB weight file (the size of
Qwen3-Embedding-0.6B in bf16), with the page cache warm and, for the synthetic file, cold (its pages evicted with
posix_fadvise). Sides alternate in one run; medians of REPEATS.

    python benchmarks/bench_fingerprint.py --out benchmarks/results/fingerprint.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SYNTHETIC_BYTES = 1_200_000_000
REPEATS = 3


def evict(directory: str) -> None:
    """Drop the directory's files from the page cache (clean pages only; other processes' files untouched)."""
    for name in os.listdir(directory):
        with open(os.path.join(directory, name), "rb") as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def seconds(fn: Callable[[], object], before: Callable[[], None]) -> float:
    before()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(label: str, directory: str, cold: bool) -> list[dict[str, object]]:
    from qwen3_rag.retrieval import _loading

    def reset() -> None:
        _loading._fingerprints.clear()
        if cold:
            evict(directory)

    sides: dict[str, Callable[[], object]] = {
        "sha256-all (first call)": lambda: _loading.fingerprint(directory),
        "legacy (first+last MiB)": lambda: _loading.legacy_fingerprint(directory),
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(REPEATS):
        for name, fn in sides.items():
            times[name].append(seconds(fn, reset))
    _loading.fingerprint(directory)
    cached = seconds(lambda: _loading.fingerprint(directory), lambda: None)
    size = sum(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory))
    rows: list[dict[str, object]] = [
        {"model": label, "cache": "cold" if cold else "warm", "scheme": name, "MB": size / 1e6,
         "seconds": statistics.median(ts), "GB/s": size / 1e9 / statistics.median(ts)}
        for name, ts in times.items()
    ]
    rows.append({"model": label, "cache": "warm", "scheme": "sha256-all (cached)", "MB": size / 1e6,
                 "seconds": cached, "GB/s": None})
    return rows


def load_seconds(path: str) -> float:
    """Construct an Embedder and load its weights (what a query pays before the first vector)."""
    from qwen3_rag import Embedder

    t0 = time.perf_counter()
    Embedder(path, device="cpu", dtype="float32").model  # noqa: B018
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = measure("all-MiniLM-L6-v2", C.minilm_path(), cold=False)
    model_load = statistics.median(load_seconds(C.minilm_path()) for _ in range(REPEATS))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
        with open(Path(tmp) / "model.safetensors", "wb") as f:
            for start in range(0, SYNTHETIC_BYTES, 64 << 20):
                f.write(os.urandom(min(64 << 20, SYNTHETIC_BYTES - start)))
        rows += measure("synthetic 1.2 GB", tmp, cold=False)
        rows += [r for r in measure("synthetic 1.2 GB", tmp, cold=True) if r["cache"] == "cold"]
    C.print_table(rows, ["model", "cache", "scheme", "MB", "seconds", "GB/s"])
    print(f"all-MiniLM-L6-v2: Embedder construction + weight load {model_load:.3f} s (median of {REPEATS})")
    print(f"load average after: {os.getloadavg()}")
    if args.out:
        C.write_results(args.out, rows=rows, minilm_load_seconds=model_load, repeats=REPEATS,
                        load_average=os.getloadavg())


if __name__ == "__main__":
    main()
