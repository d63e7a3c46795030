"""The OpenMP wait policy side by side, quiet and under load: each setting is its own process (libgomp reads it
when torch loads), run in an order that alternates between rounds.

    python benchmarks/bench_cpu_wait.py --rounds 2 --n-docs 120 --out benchmarks/results/cpu-wait.json

Every run is ``bench_cpu_threads.py --rounds 1`` (random bf16 Qwen3, SciFact documents, the reference loop and the
Embedder at the given budgets, 2 threads) with one setting in its environment; the background load keeps the
OpenMP defaults whatever the setting (it stands for other people's jobs). Reported per setting and condition:
the median seconds of each side, its ratio to the reference loop run with the same setting (issue 19's measure),
and its ratio to the reference loop with libgomp's default (what a user sees: a setting that slows everything
is no gain).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

#: The wait settings compared; libgomp's default is a spin count of 300,000.
SETTINGS: dict[str, dict[str, str]] = {
    "libgomp default": {},
    "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
    "GOMP_SPINCOUNT=1000": {"GOMP_SPINCOUNT": "1000"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n-docs", type=int, default=120)
    parser.add_argument("--sides", default="8192:2,2048:2")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="names from SETTINGS, comma-separated")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    names = args.settings.split(",")
    script = Path(__file__).resolve().parent / "bench_cpu_threads.py"
    seconds: dict[tuple[str, str, str], list[float]] = {}
    loads: dict[str, list[float]] = {"quiet": [], "loaded": []}
    for r in range(args.rounds):
        for condition in ("quiet", "loaded"):
            for name in names if r % 2 == 0 else names[::-1]:
                env = {k: v for k, v in os.environ.items()
                       if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
                env.update(SETTINGS[name])
                with tempfile.NamedTemporaryFile(suffix=".json") as out:
                    cmd = [sys.executable, str(script), "--n-docs", str(args.n_docs), "--rounds", "1",
                           "--sides", args.sides, "--out", out.name]
                    if condition == "loaded":
                        cmd.append("--loaded")
                    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
                    rows = json.loads(Path(out.name).read_text())["rows"]
                for row in rows:
                    seconds.setdefault((condition, name, row["side"]), []).append(row["median s"])
                loads[condition].append(rows[0]["load avg (1 min)"])
                print(f"round {r + 1} {condition} {name}: "
                      + ", ".join(f"{row['side']} {row['median s']}s" for row in rows), flush=True)
    rows = []
    for condition in ("quiet", "loaded"):
        base = float(np.median(seconds[(condition, "libgomp default", "reference, 2 threads")]))
        for name in names:
            ref = float(np.median(seconds[(condition, name, "reference, 2 threads")]))
            for (cond, setting, side), values in seconds.items():
                if cond != condition or setting != name:
                    continue
                med = float(np.median(values))
                rows.append({"condition": condition, "setting": name, "side": side, "median s": round(med, 1),
                             "x reference, same setting": round(ref / med, 2),
                             "x reference, libgomp default": round(base / med, 2),
                             "load avg (1 min)": round(float(np.mean(loads[condition])), 1)})
    table = C.print_table(rows, list(rows[0]))
    if args.out:
        C.write_results(args.out, documents=args.n_docs, rounds=args.rounds, settings=SETTINGS, rows=rows,
                        seconds={" / ".join(k): v for k, v in seconds.items()}, table=table)


if __name__ == "__main__":
    main()
