"""Hybrid fusion calibrated on labelled queries of the user's own data, stored with the index.

The default dense weight of the convex fusion (``"auto"``: 0.35 on prose, 0.8 where the candidates are code,
:func:`~qwen3_rag.pipelines.fusion.default_alpha`) was chosen on public tuning sets. On data unlike them another
weight can do better. :func:`calibrate_hybrid` searches the labelled queries' dense and BM25 lists once, fuses
them with the default and at every weight of :data:`ALPHAS` exactly as the :class:`~qwen3_rag.Retriever` fuses
them, and keeps the weight with the best nDCG@k, unless it gains less than :data:`MIN_GAIN` over the default (a
difference that small is noise at a few hundred queries). Stored with
``index.set_hybrid_settings(calibration.settings())`` (what ``qwen3-rag eval --calibrate`` does), the weight is
what every retriever over that index uses from then on: ``qwen3-rag query --hybrid``, ``qwen3-rag serve``,
LangChain's ``Qwen3Retriever``.

The choice is made on the queries given and measured on them too, so it is optimistic; the more queries, the
closer the gain is to what new queries will see. Fewer than :data:`MIN_QUERIES` are refused.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qwen3_rag.pipelines.evaluation import (
    BeirDataset,
    chunks_for_documents,
    evaluate_run,
    load_beir,
    ranked_documents,
    scored_documents,
)
from qwen3_rag.pipelines.fusion import (
    AUTO,
    CODE_ALPHA,
    CONFIDENCE_RANK,
    CONVEX_ALPHA,
    Alpha,
    best_candidates,
    convex_fusion,
    default_alpha,
    describe_alpha,
)

if TYPE_CHECKING:
    from qwen3_rag.pipelines.search import Retriever, SearchMode

__all__ = ["ALPHAS", "MIN_GAIN", "MIN_QUERIES", "HybridCalibration", "calibrate_hybrid", "choose_alpha"]

#: The dense weights tried: 0 (BM25 order, weighted by its confidence) to 1 (the dense order) in steps of 0.05.
ALPHAS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(21))

#: The least number of labelled queries a calibration accepts.
MIN_QUERIES = 20

#: The least nDCG@k gain over the default weight for which another weight is chosen.
MIN_GAIN = 0.005


@dataclasses.dataclass
class HybridCalibration:
    """What :func:`calibrate_hybrid` found.

    Attributes:
        alpha: The chosen dense weight, or ``"auto"`` where the default was kept.
        ndcg: nDCG@k of hybrid search at each fixed weight tried.
        default: nDCG@k of hybrid search with the default weight (``"auto"``).
        dense, bm25: nDCG@k of dense and of BM25 search alone.
        queries: How many labelled queries were scored.
        code_queries: Of those, how many found code (the default weighs them with
            :data:`~qwen3_rag.pipelines.fusion.CODE_ALPHA`).
        dataset: The data set's name (its folder's).
        k: The nDCG cut-off.
    """

    alpha: Alpha
    ndcg: dict[float, float]
    default: float
    dense: float
    bm25: float
    queries: int
    code_queries: int
    dataset: str
    k: int = 10

    @property
    def chosen(self) -> float:
        """nDCG@k with the chosen weight."""
        return self.default if self.alpha == AUTO else self.ndcg[float(self.alpha)]

    def settings(self) -> dict[str, Any]:
        """The index's hybrid settings (:meth:`~qwen3_rag.protocols.StorageBackend.set_hybrid_settings`)."""
        metric = f"ndcg@{self.k}"
        return {"fusion": "convex", "alpha": self.alpha,
                "calibration": {"dataset": self.dataset, "queries": self.queries, "code_queries": self.code_queries,
                                "metric": metric, "chosen": round(self.chosen, 4), "default": round(self.default, 4),
                                "default_alpha": {"prose": CONVEX_ALPHA, "code": CODE_ALPHA},
                                "dense": round(self.dense, 4), "bm25": round(self.bm25, 4),
                                "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}}

    def summary(self) -> str:
        """The choice in a few lines: the chosen weight against the default and the single modes."""
        metric = f"nDCG@{self.k}"
        chosen = "the default" if self.alpha == AUTO else describe_alpha(self.alpha)
        default = describe_alpha(AUTO)
        lines = [f"hybrid calibrated on {self.queries} queries of {self.dataset}: {chosen} "
                 f"({metric} {self.chosen:.4f}; default {default}: {self.default:.4f}, dense {self.dense:.4f}, "
                 f"bm25 {self.bm25:.4f})",
                 f"queries whose best hits are code: {self.code_queries} of {self.queries}"]
        curve = ", ".join(f"{a:g}: {v:.4f}" for a, v in sorted(self.ndcg.items()))
        lines.append(f"{metric} by alpha: {curve}")
        return "\n".join(lines)


def calibrate_hybrid(dataset: BeirDataset | str | Path, retriever: Retriever, *, k: int = 10, depth: int = 100,
                     instruction: str | None = None, ignore_identical_ids: bool = False, batch_size: int = 64,
                     alphas: Sequence[float] = ALPHAS) -> HybridCalibration:
    """Choose the convex fusion's dense weight on a data set's labelled queries (see the module docstring).

    The index behind ``retriever`` must hold the documents the qrels name (by document id), as for
    :func:`~qwen3_rag.pipelines.evaluation.evaluate_index`.

    Raises:
        ValueError: fewer than :data:`MIN_QUERIES` labelled queries, or a weight outside [0, 1].
    """
    ds = dataset if isinstance(dataset, BeirDataset) else load_beir(dataset)
    query_ids = list(ds.queries)
    if len(query_ids) < MIN_QUERIES:
        raise ValueError(f"{ds.path}: {len(query_ids)} labelled queries; calibrating hybrid search needs at least "
                         f"{MIN_QUERIES} (more is better: the weight is chosen and measured on them)")
    alphas = sorted({float(a) for a in alphas})
    if not alphas or alphas[0] < 0 or alphas[-1] > 1:
        raise ValueError(f"alphas must be in [0, 1], got {alphas}")
    chunk_depth = chunks_for_documents(retriever.index, depth)
    dense: list[list[tuple[int, float]]] = []
    keyword: list[list[tuple[int, float]]] = []
    doc_of: dict[int, str] = {}
    best_texts: dict[int, str] = {}  # of each list's best, which the default weight reads
    searches: list[tuple[SearchMode, list[list[tuple[int, float]]]]] = [("dense", dense), ("bm25", keyword)]
    for start in range(0, len(query_ids), batch_size):
        texts = [ds.queries[q] for q in query_ids[start:start + batch_size]]
        for mode, out in searches:
            for hits in retriever.search_batch(texts, k=chunk_depth, mode=mode, instruction=instruction,
                                               overlap="none"):
                out.append([(hit.chunk_id, hit.scores[mode]) for hit in hits])
                doc_of.update((hit.chunk_id, hit.doc_id) for hit in hits)
                best_texts.update((hit.chunk_id, hit.text) for hit in hits[:CONFIDENCE_RANK])

    def score(lists: Sequence[Sequence[tuple[int, float]]], by_rank: bool = True) -> float:
        # scored as evaluate_index scores each mode: a fused list by rank, a single list by its scores
        run = {qid: (ranked_documents((doc_of[c] for c, _ in ranked), depth) if by_rank
                     else scored_documents(((doc_of[c], s) for c, s in ranked), depth))
               for qid, ranked in zip(query_ids, lists, strict=True)}
        return evaluate_run(ds.qrels, run, [k], ignore_identical_ids)[f"ndcg@{k}"]

    def fused(weights: Sequence[float]) -> float:
        return score([convex_fusion(d, kw, alpha, keyword_truncated=len(kw) >= chunk_depth)[:chunk_depth]
                      for d, kw, alpha in zip(dense, keyword, weights, strict=True)])

    auto = [default_alpha(best_texts[c] for c in best_candidates(d, kw)) for d, kw in zip(dense, keyword, strict=True)]
    code_queries = sum(alpha == CODE_ALPHA for alpha in auto)
    ndcg = {alpha: fused([alpha] * len(auto)) for alpha in alphas}
    default = fused(auto)
    near = CODE_ALPHA if 2 * code_queries > len(auto) else CONVEX_ALPHA
    return HybridCalibration(alpha=choose_alpha(ndcg, default, near), ndcg=ndcg, default=default,
                             dense=score(dense, False), bm25=score(keyword, False), queries=len(query_ids),
                             code_queries=code_queries, dataset=Path(ds.path).name, k=k)


def choose_alpha(ndcg: dict[float, float], default: float, near: float = CONVEX_ALPHA) -> Alpha:
    """The fixed weight with the best nDCG (among equals, the one nearest ``near``, the weight the default gives
    most of the queries), or ``"auto"`` (keep the default, whose nDCG is ``default``) when the best gains less than
    :data:`MIN_GAIN` over it."""
    best = max(ndcg, key=lambda a: (ndcg[a], -abs(a - near)))
    return best if ndcg[best] - default >= MIN_GAIN else AUTO

