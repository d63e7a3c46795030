"""What a query's own lists can say about BM25's reliability: per-query signals on the tuning sets, and fusion
families built on them, each family's dense weight chosen as fusion_weights.py chooses it.

The default fusion weights BM25 by how far its best hit stands out (``keyword_confidence``). It holds the six
tuning sets but not MBPP (BENCHMARKS.md, "Hybrid fusion"). This script asks whether any other signal read from
one query's two lists (or the candidates' texts) separates "BM25 is noise here" from "BM25 found the passage" on
the tuning sets, which is the only place a default may be chosen:

* ``standout``: 1 - bm25@10 / bm25@1 (the default's signal, before its square);
* ``coverage``: bm25@1 / the sum of the query terms' idf (how much of the query the best hit matches);
* ``dense gap``: cos@1 - cos@10;
* ``code share``: the share of the 10 best hits of both lists whose text is code (symbol density above
  CODE_DENSITY), the one content-type signal.

Families (BM25 divided by the query's best score unless said): the standout to the power p; a ramp of the
standout; the standout times the coverage to the power c; dense min-max normalised over its list and weighted by
its own standout (the symmetric form); and, on CoSQA (the tuning set of code), the default with BM25's weight
multiplied by m on code candidates.

    python benchmarks/fusion_signals.py     # writes benchmarks/results/fusion_signals.json (about a minute)

Embeddings come from fusion_weights.py's cache (all-MiniLM-L6-v2, max length 256, whole documents), which embeds
what is missing (about an hour on two cores the first time). Ranking and nDCG@10 here are a fast
re-implementation (ties keep the dense-first order; every document's BM25 weight uses the tenth hit, where the
library compares a top-ten hit with the eleventh), within 0.003 of fusion_weights.py for the default.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import fusion_weights as F  # noqa: E402

from qwen3_rag.indexers.bm25 import BM25Index  # noqa: E402
from qwen3_rag.pipelines.fusion import CODE_DENSITY, code_density  # noqa: E402

OUT = F.ROOT / "benchmarks" / "results" / "fusion_signals.json"
RANK = 10
_DISCOUNT = 1 / np.log2(np.arange(2, 12))


@dataclass
class Query:
    dense: np.ndarray  # cosine of every candidate (the union of both lists, dense first); missing: the list's last
    keyword: np.ndarray  # BM25 of every candidate; missing: the last of a cut list, else 0
    dense_list: np.ndarray  # the dense list's scores, best first
    keyword_list: np.ndarray
    gains: np.ndarray
    idcg: float
    idf: float  # sum of the query terms' idf
    code: float  # share of the 10 best of each list that is code


def queries(name: str, embedder: object) -> list[Query]:
    ds, lists = F.query_lists(name, embedder)
    bm25 = BM25Index()
    doc_ids = list(ds.corpus)
    bm25.add(list(range(len(doc_ids))), [ds.document_text(i) for i in doc_ids])
    idf, _ = F._term_bounds(bm25)
    is_code = {d: code_density(ds.document_text(d)) > CODE_DENSITY for d in doc_ids}
    out = []
    for q in lists:
        keys = list(dict.fromkeys([d for d, _ in q.dense] + [d for d, _ in q.keyword]))
        where = {k: i for i, k in enumerate(keys)}
        dl = np.array([s for _, s in q.dense])
        kl = np.array([s for _, s in q.keyword]) if q.keyword else np.zeros(0)
        dv = np.full(len(keys), dl[-1])
        dv[[where[d] for d, _ in q.dense]] = dl
        kv = np.full(len(keys), kl[-1] if q.truncated and len(kl) else 0.0)
        if len(kl):
            kv[[where[d] for d, _ in q.keyword]] = kl
        rels = ds.qrels.get(q.qid, {})
        ideal = sorted((r for r in rels.values() if r > 0), reverse=True)[:10]
        top = list(dict.fromkeys([d for d, _ in q.dense[:RANK]] + [d for d, _ in q.keyword[:RANK]]))
        out.append(Query(dv, kv, dl, kl, np.array([max(rels.get(k, 0), 0) for k in keys], float),
                         sum(g / math.log2(i + 2) for i, g in enumerate(ideal)),
                         float(idf[bm25._encode(ds.queries[q.qid])].sum()),
                         float(np.mean([is_code[d] for d in top])) if top else 0.0))
    return out


def ndcg(scores: np.ndarray, q: Query) -> float:
    if q.idcg <= 0:
        return 0.0
    top = np.argsort(-scores, kind="stable")[:10]
    return float((q.gains[top] * _DISCOUNT[:len(top)]).sum() / q.idcg)


def standout(values: np.ndarray, floor: float = 0.0) -> float:
    if len(values) == 0 or values[0] <= floor:
        return 0.0
    ref = values[RANK - 1] if len(values) >= RANK else floor
    return max(0.0, 1.0 - (ref - floor) / (values[0] - floor))


def keyword_norm(q: Query) -> np.ndarray:
    return q.keyword / q.keyword_list[0] if len(q.keyword_list) and q.keyword_list[0] > 0 else q.keyword * 0


def coverage(q: Query) -> float:
    return min(1.0, q.keyword_list[0] / q.idf) if len(q.keyword_list) and q.idf > 0 else 0.0


Fusion = Callable[[Query, float], np.ndarray]


def weighted(weight: Callable[[Query], float]) -> Fusion:
    return lambda q, a: a * q.dense + (1 - a) * weight(q) * keyword_norm(q)


def symmetric(dense_power: float, keyword_power: float) -> Fusion:
    def fuse(q: Query, a: float) -> np.ndarray:
        floor, top = q.dense_list[-1], q.dense_list[0]
        dense = (q.dense - floor) / (top - floor) if top > floor else q.dense * 0
        return (a * standout(q.dense_list, floor) ** dense_power * dense
                + (1 - a) * standout(q.keyword_list) ** keyword_power * keyword_norm(q))
    return fuse


FAMILIES: dict[str, Fusion] = {
    **{f"standout^{p}": weighted(lambda q, p=p: standout(q.keyword_list) ** p) for p in (1, 2, 3, 4)},
    **{f"ramp {lo:g}..{lo + w:g}": weighted(lambda q, lo=lo, w=w: min(max((standout(q.keyword_list) - lo) / w, 0), 1))
       for lo in (0.2, 0.3, 0.4) for w in (0.2, 0.4)},
    **{f"standout^2 x coverage^{c}": weighted(lambda q, c=c: standout(q.keyword_list) ** 2 * coverage(q) ** c)
       for c in (1, 2)},
    **{f"min-max dense, standouts^{pd}/^{pk}": symmetric(pd, pk) for pd, pk in ((1, 2), (2, 2), (2, 4), (4, 4))},
}


def main() -> None:
    from qwen3_rag import Embedder

    started = time.time()
    embedder = Embedder(C.minilm_path(), device="cpu", dtype="float32", max_length=F.MAX_LENGTH)
    sets = {name: queries(name, embedder) for name in F.TUNING}
    signals, best = {}, {}
    for name, qs in sets.items():
        d = float(np.mean([ndcg(q.dense, q) for q in qs]))
        k = float(np.mean([ndcg(q.keyword, q) for q in qs]))
        best[name] = max(d, k)
        cols = {"standout": [standout(q.keyword_list) for q in qs], "coverage": [coverage(q) for q in qs],
                "dense gap": [q.dense_list[0] - q.dense_list[min(RANK, len(q.dense_list)) - 1] for q in qs],
                "code share": [q.code for q in qs]}
        signals[name] = {"dense": round(d, 4), "bm25": round(k, 4),
                         **{c: [round(float(np.percentile(v, p)), 3) for p in (10, 50, 90)] for c, v in cols.items()}}
    rows = [{"set": n, **{k: (f"{v[0]:.2f} / {v[1]:.2f} / {v[2]:.2f}" if isinstance(v, list) else v)
                          for k, v in s.items()}} for n, s in signals.items()]
    print("signals, 10th / 50th / 90th percentile over the queries")
    signal_table = C.print_table(rows, list(rows[0]))
    families = []
    for fam, fuse in FAMILIES.items():
        tried = []
        for alpha in F.ALPHAS:
            change = {n: round(float(np.mean([ndcg(fuse(q, alpha), q) for q in qs])) - best[n], 4)
                      for n, qs in sets.items()}
            tried.append((min(change.values()), float(np.mean(list(change.values()))), alpha, change))
        worst, mean, alpha, change = max(tried, key=lambda t: (round(t[0], 4), round(t[1], 4)))
        families.append({"family": fam, "alpha": alpha, "worst": round(worst, 4), "mean": round(mean, 4),
                         **{n: f"{c:+.3f}" for n, c in change.items()}})
        print(families[-1], flush=True)
    family_table = C.print_table(families, list(families[0]))
    cosqa = sets["cosqa-coclr"]
    multipliers = {}
    for m in (1.0, 0.7, 0.5, 0.3, 0.1, 0.0):
        fuse = weighted(lambda q, m=m: standout(q.keyword_list) ** 2 * (1 - (1 - m) * q.code))
        multipliers[f"{m:g}"] = round(float(np.mean([ndcg(fuse(q, 0.35), q) for q in cosqa])), 4)
    print("CoSQA, default fusion (alpha 0.35), BM25 weight x m on code candidates:", multipliers)
    C.write_results(OUT, model="all-MiniLM-L6-v2", sets=F.TUNING, signals=signals, families=families,
                    cosqa_code_multiplier=multipliers, signal_table=signal_table, family_table=family_table,
                    seconds=round(time.time() - started))


if __name__ == "__main__":
    main()
