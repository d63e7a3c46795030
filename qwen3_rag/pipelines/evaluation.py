"""Retrieval evaluation on BEIR-layout data sets, with trec_eval's metric definitions.

A BEIR folder holds ``corpus.jsonl`` (``{"_id", "title", "text"}``), ``queries.jsonl`` (``{"_id", "text"}``)
and ``qrels/<split>.tsv`` (``query-id<TAB>corpus-id<TAB>score`` with a header line).

The metrics match ``trec_eval`` (and so ``pytrec_eval``, which MTEB and BEIR use):

* a run is sorted by score, descending; ties are broken by document id, *descending* (trec_eval's order);
* ``ndcg@k`` (trec_eval ``ndcg_cut``): gain = the graded relevance, discount ``log2(rank + 1)``; the ideal DCG
  is built from every judged document with relevance > 0, best first, cut at k;
* ``recall@k``: relevant documents (relevance >= 1) in the top k over all relevant documents;
* ``mrr@k``: 1 / rank of the first relevant document in the top k (0 if none);
* ``map@k`` (trec_eval ``map_cut``): the sum of precision at the rank of each relevant document in the top k,
  over the number of relevant documents (not cut at k).

A query that is in the qrels but has no relevant document scores 0 on every metric, as in trec_eval; queries
with no qrels are not evaluated. A query with an empty run scores 0.

``ignore_identical_ids`` drops a retrieved document whose id equals the query id before scoring (MTEB's and
BEIR's habit for sets such as ArguAna, where the query itself is in the corpus). It is **off by default**: in
Cranfield and CISI query "1" and document "1" are unrelated, and dropping it would remove real answers.
SciFact, XQuAD, CoSQA and MBPP share no ids between queries and documents, so the flag does not change their
figures.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from qwen3_rag.pipelines.search import Reranking, Retriever, SearchMode
    from qwen3_rag.protocols import StorageBackend
    from qwen3_rag.types import Hit

logger = logging.getLogger(__name__)

__all__ = [
    "BeirDataset",
    "EVAL_MODES",
    "EvalReport",
    "METRIC_NAMES",
    "REGRESSION_TOLERANCE",
    "SINGLE_MODES",
    "chunks_for_documents",
    "document_run",
    "evaluate_index",
    "evaluate_run",
    "index_corpus",
    "load_beir",
    "per_query_metrics",
    "rank_run",
    "ranked_documents",
    "scored_documents",
    "recall_curve",
]

#: The metrics reported by :func:`evaluate_run`, in table order (k comes from the caller).
METRIC_NAMES: tuple[str, ...] = ("ndcg", "recall", "mrr", "map")

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]


@dataclass(frozen=True)
class BeirDataset:
    """A BEIR data set in memory.

    Attributes:
        path: The folder it was read from.
        corpus: Document id -> ``{"title": ..., "text": ...}``.
        queries: Query id -> text, only the queries that have qrels in the split.
        qrels: Query id -> {document id -> graded relevance}.
        split: The qrels split (``test``, ``dev``, ...).
    """

    path: Path
    corpus: Mapping[str, Mapping[str, str]]
    queries: Mapping[str, str]
    qrels: Mapping[str, Mapping[str, int]]
    split: str = "test"
    metadata: Mapping[str, str] = field(default_factory=dict)

    def document_text(self, doc_id: str) -> str:
        """The text that is indexed for a document: ``title + " " + text`` (BEIR's and MTEB's convention)."""
        doc = self.corpus[doc_id]
        title = (doc.get("title") or "").strip()
        text = doc.get("text") or ""
        return f"{title} {text}".strip() if title else text


def _read_jsonl(path: Path) -> Iterable[dict]:
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({exc.msg}); each line must be one JSON "
                                 "object") from None


def _records(path: Path) -> Iterable[tuple[str, dict]]:
    """``(_id, record)`` of each line of a BEIR jsonl file."""
    for row in _read_jsonl(path):
        if "_id" not in row:
            raise ValueError(f"{path}: a record has no '_id' field: {str(row)[:200]}")
        yield str(row["_id"]), row


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        for line_no, fields in enumerate(reader, 1):
            if not fields or (line_no == 1 and fields[0].strip().lower() in {"query-id", "query_id", "qid"}):
                continue
            if len(fields) < 3:
                raise ValueError(f"{path}:{line_no}: expected 'query-id<TAB>corpus-id<TAB>score', got {fields!r}")
            try:
                score = int(float(fields[2]))
            except ValueError:
                raise ValueError(f"{path}:{line_no}: score {fields[2]!r} is not a number") from None
            qrels.setdefault(fields[0].strip(), {})[fields[1].strip()] = score
    return qrels


def load_beir(path: str | Path, split: str = "test") -> BeirDataset:
    """Read a BEIR folder.

    Args:
        path: Folder with ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.
        split: Which qrels file to use.

    Returns:
        The data set; ``queries`` keeps only queries that have judgments in the split.

    Raises:
        FileNotFoundError: A file is missing (the message lists what the folder must contain).
        ValueError: A file is malformed (the message names the file and line).
    """
    root = Path(path)
    layout = f"corpus.jsonl, queries.jsonl and qrels/{split}.tsv"
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {str(root)!r} does not exist; expected a BEIR folder with "
                                f"{layout}")
    files = {"corpus": root / "corpus.jsonl", "queries": root / "queries.jsonl",
             "qrels": root / "qrels" / f"{split}.tsv"}
    for file in files.values():
        if not file.is_file():
            raise FileNotFoundError(
                f"dataset file {str(file)!r} is missing; a BEIR folder must contain {layout}")

    corpus = {key: {"title": str(row.get("title") or ""), "text": str(row.get("text") or "")}
              for key, row in _records(files["corpus"])}
    all_queries = {key: str(row.get("text") or "") for key, row in _records(files["queries"])}
    qrels = _read_qrels(files["qrels"])
    missing = [q for q in qrels if q not in all_queries]
    if missing:
        logger.warning("%d judged queries are not in %s (e.g. %r); they are skipped",
                       len(missing), files["queries"], missing[:3])
    queries = {q: all_queries[q] for q in qrels if q in all_queries}
    qrels = {q: r for q, r in qrels.items() if q in queries}
    logger.info("loaded %s: %d documents, %d %s queries", root, len(corpus), len(queries), split)
    return BeirDataset(path=root, corpus=corpus, queries=queries, qrels=qrels, split=split)


def rank_run(scores: Mapping[str, float], query_id: str | None = None,
             ignore_identical_ids: bool = False) -> list[str]:
    """Order one query's run as trec_eval does: score descending, ties by document id descending.

    Args:
        scores: Document id -> score.
        query_id: The query's id, used with ``ignore_identical_ids``.
        ignore_identical_ids: Drop the document whose id equals ``query_id``.
    """
    items = scores.items()
    if ignore_identical_ids and query_id is not None:
        items = [(d, s) for d, s in items if d != query_id]  # type: ignore[assignment]
    return [d for d, _ in sorted(items, key=lambda x: (x[1], x[0]), reverse=True)]


def _query_metrics(ranking: Sequence[str], rels: Mapping[str, int],
                   k_values: Sequence[int]) -> dict[str, float]:
    relevant = {d for d, r in rels.items() if r >= 1}
    num_rel = len(relevant)
    ideal = sorted((r for r in rels.values() if r > 0), reverse=True)
    out: dict[str, float] = {}
    for k in k_values:
        top = ranking[:k]
        dcg = sum(max(rels.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(top))
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:k]))
        out[f"ndcg@{k}"] = dcg / idcg if idcg > 0 else 0.0
        hits = 0
        precision_sum = 0.0
        first = 0.0
        for i, d in enumerate(top):
            if d in relevant:
                hits += 1
                precision_sum += hits / (i + 1)
                if not first:
                    first = 1.0 / (i + 1)
        out[f"recall@{k}"] = hits / num_rel if num_rel else 0.0
        out[f"mrr@{k}"] = first
        out[f"map@{k}"] = precision_sum / num_rel if num_rel else 0.0
    return out


def per_query_metrics(qrels: Qrels, run: Run, k_values: Sequence[int] = (10, 100),
                      ignore_identical_ids: bool = False) -> dict[str, dict[str, float]]:
    """Every metric at every k for each judged query.

    Args:
        qrels: Query id -> {document id -> graded relevance}.
        run: Query id -> {document id -> score}. A judged query missing from the run scores 0.
        k_values: Cut-offs.
        ignore_identical_ids: Drop a retrieved document whose id is the query's id (see the module docstring).

    Returns:
        Query id -> {"ndcg@10": ..., "recall@10": ..., "mrr@10": ..., "map@10": ..., ...}.
    """
    return {
        qid: _query_metrics(rank_run(run.get(qid, {}), qid, ignore_identical_ids), rels, k_values)
        for qid, rels in qrels.items()
    }


def evaluate_run(qrels: Qrels, run: Run, k_values: Sequence[int] = (10, 100),
                 ignore_identical_ids: bool = False) -> dict[str, float]:
    """Mean of :func:`per_query_metrics` over the judged queries.

    Example:
        >>> evaluate_run({"q": {"a": 1}}, {"q": {"b": 2.0, "a": 1.0}}, k_values=[10])["mrr@10"]
        0.5
    """
    per_query = per_query_metrics(qrels, run, k_values, ignore_identical_ids)
    if not per_query:
        raise ValueError("no judged queries to evaluate: the qrels are empty")
    names = next(iter(per_query.values())).keys()
    return {name: sum(m[name] for m in per_query.values()) / len(per_query) for name in names}


def recall_curve(qrels: Qrels, run: Run, max_k: int = 100,
                 ignore_identical_ids: bool = False) -> list[float]:
    """Mean recall@k for k = 1 .. max_k (index 0 is recall@1), for plotting."""
    totals = [0.0] * max_k
    for qid, rels in qrels.items():
        relevant = {d for d, r in rels.items() if r >= 1}
        if not relevant:
            continue
        ranking = rank_run(run.get(qid, {}), qid, ignore_identical_ids)[:max_k]
        hits = 0
        for i in range(max_k):
            if i < len(ranking) and ranking[i] in relevant:
                hits += 1
            totals[i] += hits / len(relevant)
    n = len(qrels) or 1
    return [t / n for t in totals]


# -- end-to-end evaluation of an index
# ---------------------------------------------------------------------------

#: The evaluation modes: first-stage dense, BM25, their fusion, and the reranked hybrid list.
EVAL_MODES: tuple[str, ...] = ("dense", "bm25", "hybrid", "rerank")

#: The modes that stand alone; the others (hybrid, rerank) are compared with the better of them.
SINGLE_MODES: tuple[str, ...] = ("dense", "bm25")

#: A fused or reranked mode more than this much below the best single mode in nDCG@k is flagged.
REGRESSION_TOLERANCE = 0.01


@dataclass
class EvalReport:
    """What :func:`evaluate_index` measured.

    Attributes:
        metrics: Mode -> {"ndcg@k", "recall@100", "mrr@k", "map@100"}.
        recall_curves: Mode -> mean recall@1 .. recall@max_k, for plots.
        seconds: Mode -> wall time of retrieval for all queries.
        num_queries: Judged queries evaluated.
        settings: What was run (dataset, index, model, k, the fusion of the hybrid mode, ...).
    """

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    recall_curves: dict[str, list[float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    num_queries: int = 0
    settings: dict[str, object] = field(default_factory=dict)

    @property
    def ndcg_name(self) -> str:
        """The nDCG metric of the report (``"ndcg@10"`` for k = 10)."""
        return f"ndcg@{self.settings.get('k', 10)}"

    def best_single(self) -> str | None:
        """The better of the single modes (dense, BM25) that were run, by nDCG@k; None if neither was."""
        singles = [m for m in SINGLE_MODES if m in self.metrics]
        return max(singles, key=lambda m: self.metrics[m][self.ndcg_name], default=None)

    def changes(self) -> dict[str, float]:
        """Mode -> its nDCG@k minus that of :meth:`best_single` (empty when no single mode was run).

        Example:
            >>> report = EvalReport(metrics={"dense": {"ndcg@10": 0.75}, "bm25": {"ndcg@10": 0.12},
            ...                              "hybrid": {"ndcg@10": 0.70}}, settings={"k": 10})
            >>> {mode: round(change, 2) for mode, change in report.changes().items()}
            {'dense': 0.0, 'bm25': -0.63, 'hybrid': -0.05}
        """
        best = self.best_single()
        if best is None:
            return {}
        reference = self.metrics[best][self.ndcg_name]
        return {mode: values[self.ndcg_name] - reference for mode, values in self.metrics.items()}

    def regressions(self, tolerance: float = REGRESSION_TOLERANCE) -> dict[str, float]:
        """The fused or reranked modes more than ``tolerance`` below :meth:`best_single` in nDCG@k, with
        their change: on this data, the single mode serves better."""
        return {mode: change for mode, change in self.changes().items()
                if mode not in SINGLE_MODES and change < -tolerance}

    def warnings(self, tolerance: float = REGRESSION_TOLERANCE) -> list[str]:
        """One sentence per :meth:`regressions` entry, saying what to use instead."""
        best = self.best_single()
        fusion = self.settings.get("fusion")
        instead = {"dense": "dense search (no --hybrid)", "bm25": "BM25 search (--bm25)"}
        return [f"{mode} is {-change:.3f} below {best} in {self.ndcg_name} on this data set"
                + (f" (fusion: {fusion})" if fusion else "") + f"; {instead.get(str(best), best)} serves it better"
                for mode, change in self.regressions(tolerance).items()]

    def to_dict(self) -> dict[str, dict[str, float]]:
        """``{mode: {metric: value, ..., "ndcg@k_change": change}}``, what ``qwen3-rag eval --json`` writes."""
        changes = self.changes()
        out = {}
        for mode, values in self.metrics.items():
            out[mode] = dict(values)
            if mode in changes:
                out[mode][f"{self.ndcg_name}_change"] = round(changes[mode], 6)
        return out

    def table(self) -> str:
        """A plain-text table of the metrics, one row per mode, with each mode's nDCG@k change against the
        best single mode (``vs best``)."""
        if not self.metrics:
            return "(no results)"
        names = list(next(iter(self.metrics.values())))
        changes = self.changes()
        header = (f"{'mode':<8} " + " ".join(f"{n:>10}" for n in names)
                  + (f" {'vs best':>8}" if changes else "") + f" {'seconds':>8}")
        rows = [header, "-" * len(header)]
        for mode, values in self.metrics.items():
            change = f" {changes[mode]:>+8.3f}" if changes else ""
            rows.append(f"{mode:<8} " + " ".join(f"{values[n]:>10.4f}" for n in names) + change
                        + f" {self.seconds.get(mode, 0.0):>8.1f}")
        if changes:
            rows.append(f"vs best: {self.ndcg_name} change against {self.best_single()}, the best single mode")
        return "\n".join(rows)


def document_run(hit_lists: Sequence[Sequence[Hit]], query_ids: Sequence[str], depth: int,
                 rank_scores: bool) -> dict[str, dict[str, float]]:
    """Document-level run: a document takes its best chunk's place; at most ``depth`` documents per query.
    ``rank_scores``: each document scores by its rank, which keeps the pipeline's own order exactly (trec_eval
    would re-sort ties by id); else by its best hit's score."""
    if rank_scores:
        return {qid: ranked_documents((hit.doc_id for hit in hits), depth)
                for qid, hits in zip(query_ids, hit_lists, strict=True)}
    return {qid: scored_documents(((hit.doc_id, float(hit.score)) for hit in hits), depth)
            for qid, hits in zip(query_ids, hit_lists, strict=True)}


def scored_documents(pairs: Iterable[tuple[str, float]], depth: int) -> dict[str, float]:
    """The first ``depth`` distinct documents of a ranked list of (chunks') ``(document id, score)``, each at
    its first (best) score."""
    scores: dict[str, float] = {}
    for doc_id, value in pairs:
        if doc_id not in scores:
            scores[doc_id] = value
            if len(scores) >= depth:
                break
    return scores


def chunks_for_documents(index: StorageBackend, depth: int) -> int:
    """How many chunks to ask for so that ``depth`` distinct documents come back: more when a document has
    several chunks."""
    return depth * 3 if index.chunking.chunk_size else depth


def ranked_documents(doc_ids: Iterable[str], depth: int) -> dict[str, float]:
    """The first ``depth`` distinct documents of a ranked list of (chunks') document ids, each scored by its
    rank (``depth`` for the first, then ``depth - 1``, ...)."""
    first = scored_documents(((doc_id, 0.0) for doc_id in doc_ids), depth)
    return {doc_id: float(depth - rank) for rank, doc_id in enumerate(first)}


def evaluate_index(
    dataset: BeirDataset | str | Path,
    retriever: Retriever,
    modes: Sequence[str] = ("dense", "bm25", "hybrid"),
    *,
    k: int = 10,
    depth: int = 100,
    reranker: Reranking = None,
    candidates: int = 100,
    instruction: str | None = None,
    ignore_identical_ids: bool = False,
    batch_size: int = 64,
    show_progress: bool = False,
) -> EvalReport:
    """Run a data set's queries through a :class:`~qwen3_rag.pipelines.search.Retriever` in each mode; score.

    The index behind ``retriever`` must hold the corpus with document ids equal to the corpus ids (see
    :func:`index_corpus`). Chunk hits are mapped to documents (a document ranks at its best chunk).

    Args:
        dataset: A :class:`BeirDataset` or its folder.
        retriever: The retriever over the corpus index.
        modes: Any of :data:`EVAL_MODES`; ``rerank`` reranks the top ``candidates`` of the hybrid list (the
            rest of the list follows in hybrid order, so recall@100 stays comparable).
        k: Cut-off of nDCG and MRR (recall and MAP are reported at ``depth``).
        depth: Documents retrieved per query.
        reranker: Reranker (object or model id) for the ``rerank`` mode; default the retriever's.
        candidates: Documents reranked per query.
        instruction: Query instruction for the embedder.
        ignore_identical_ids: See the module docstring (off by default).
        batch_size: Queries per retrieval call.
        show_progress: tqdm progress over query batches.

    Returns:
        The :class:`EvalReport`.
    """
    ds = dataset if isinstance(dataset, BeirDataset) else load_beir(dataset)
    unknown = [m for m in modes if m not in EVAL_MODES]
    if unknown:
        raise ValueError(f"unknown evaluation mode(s) {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(EVAL_MODES)}")
    if reranker is None and retriever.reranker is not None:
        reranker = True  # the retriever's own
    if "rerank" in modes and reranker is None:
        raise ValueError("the 'rerank' mode needs a reranker (--rerank-model MODEL)")
    query_ids = list(ds.queries)
    chunk_depth = chunks_for_documents(retriever.index, depth)
    report = EvalReport(num_queries=len(query_ids))
    report.settings = {"dataset": str(ds.path), "model": retriever.index.model_info.get("model"),
                       "split": ds.split, "k": k, "depth": depth,
                       "candidates": candidates, "ignore_identical_ids": ignore_identical_ids,
                       "instruction": instruction}
    if any(m in ("hybrid", "rerank") for m in modes):
        report.settings["fusion"] = retriever.fusion_description
    # every mode searches with the same query vectors: embed each query once
    cache_size = retriever.query_cache_size
    retriever.query_cache_size = max(cache_size, len(query_ids))
    try:
        _evaluate_modes(ds, retriever, modes, report, query_ids, k=k, depth=depth, chunk_depth=chunk_depth,
                        reranker=reranker, candidates=candidates, instruction=instruction,
                        ignore_identical_ids=ignore_identical_ids, batch_size=batch_size,
                        show_progress=show_progress)
    finally:
        retriever.query_cache_size = cache_size
    return report


def _evaluate_modes(ds: BeirDataset, retriever: Retriever, modes: Sequence[str], report: EvalReport,
                    query_ids: list[str], *, k: int, depth: int, chunk_depth: int, reranker: Reranking,
                    candidates: int,
                    instruction: str | None, ignore_identical_ids: bool, batch_size: int,
                    show_progress: bool) -> None:
    import time

    hybrid_lists: list = []  # the hybrid mode's results, which the rerank mode reranks instead of searching again
    for mode in modes:
        started = time.perf_counter()
        hit_lists: list = []
        batches = range(0, len(query_ids), batch_size)
        if show_progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc=f"eval {mode}", unit="batch")
        for start in batches:
            texts = [ds.queries[q] for q in query_ids[start:start + batch_size]]
            if mode == "rerank" and hybrid_lists:
                lists = hybrid_lists[start:start + batch_size]
            else:
                lists = retriever.search_batch(
                    texts, k=chunk_depth, mode="hybrid" if mode == "rerank" else cast("SearchMode", mode),
                    instruction=instruction,
                    candidates=chunk_depth, overlap="none")
            if mode == "rerank":
                heads = retriever.rerank(texts, [h[:candidates] for h in lists], reranker)
                lists = [head + hits[candidates:] for head, hits in zip(heads, lists, strict=True)]
            hit_lists.extend(lists)
        report.seconds[mode] = time.perf_counter() - started
        if mode == "hybrid":
            hybrid_lists = hit_lists
        elif mode == "rerank" and hybrid_lists:
            report.seconds[mode] += report.seconds["hybrid"]  # what a rerank run costs: the hybrid search too
        run = document_run(hit_lists, query_ids, depth, rank_scores=mode in ("hybrid", "rerank"))
        full = evaluate_run(ds.qrels, run, sorted({k, depth}), ignore_identical_ids)
        report.metrics[mode] = {f"ndcg@{k}": full[f"ndcg@{k}"], f"recall@{depth}": full[f"recall@{depth}"],
                                f"mrr@{k}": full[f"mrr@{k}"], f"map@{depth}": full[f"map@{depth}"]}
        report.recall_curves[mode] = recall_curve(ds.qrels, run, depth, ignore_identical_ids)
        logger.info("%s: %s", mode, report.metrics[mode])


def index_corpus(dataset: BeirDataset, index: StorageBackend, show_progress: bool = False,
                 commit_every: int = 512) -> int:
    """Write a BEIR corpus into an open, writable index through the write loop; returns the documents written.

    One document per corpus entry, ``title + " " + text``, id = corpus id, source = ``corpus.jsonl#<id>``, the title
    also in the ``title`` metadata (what a chunk's context line starts with, see
    :class:`~qwen3_rag.indexers.chunking.ChunkingConfig`). Unchanged documents are skipped.
    """
    from qwen3_rag.pipelines.writing import DocumentWriter
    from qwen3_rag.types import Document

    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(dataset.corpus), desc="indexing corpus", unit="doc")
    with DocumentWriter(index, commit_every=commit_every,
                        on_progress=(lambda n, _: bar.update(n)) if bar is not None else None) as writer:
        writer.add_all(Document(id=i, text=dataset.document_text(i), source=f"corpus.jsonl#{i}",
                                metadata=_title(dataset.corpus[i].get("title")))
                       for i in dataset.corpus)
    if bar is not None:
        bar.close()
    return writer.report.added + writer.report.updated


def _title(title: str | None) -> dict[str, str]:
    title = (title or "").strip()
    return {"title": title} if title else {}
