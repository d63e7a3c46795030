"""``qwen3-rag eval --dataset BEIR_DIR``: index a BEIR corpus; report nDCG, recall, MRR and MAP per mode."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from qwen3_rag.cli import CLIError
from qwen3_rag.indexers.chunking import CHUNK_CONTEXTS, DEFAULT_CHUNK_CONTEXT, DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE
from qwen3_rag.pipelines.calibration import MIN_GAIN, MIN_QUERIES  # light: evaluation and fusion
from qwen3_rag.pipelines.evaluation import EVAL_MODES  # standard library only
from qwen3_rag.pipelines.fusion import AUTO, CODE_ALPHA, CONVEX_ALPHA, describe_alpha  # standard library only


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval", help="evaluate retrieval on a BEIR-layout data set",
        description="Build (or reuse) an index of a BEIR corpus (title + ' ' + text per document), run the "
                    "test queries and report nDCG@k, recall@100, MRR@k and MAP@100 per mode (trec_eval "
                    "definitions, graded relevance).",
        epilog="example: qwen3-rag eval --dataset data/scifact --model MODEL_DIR --max-length 256 "
               "--chunk-size 0 --modes dense,bm25,hybrid --json scifact.json --plot scifact.png",
    )
    p.add_argument("--dataset", required=True, metavar="BEIR_DIR",
                   help="folder with corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
    p.add_argument("--split", default="test", help="qrels split (default test)")
    p.add_argument("--index", default=None, metavar="LOCATION",
                   help="index to build or reuse: a directory or a backend URI (default: a temporary directory, "
                        "deleted afterwards)")
    p.add_argument("--model", default=None,
                   help="embedding model id or directory (default Qwen/Qwen3-Embedding-0.6B, or the model "
                        "of an existing --index)")
    p.add_argument("--max-length", type=int, default=None, help="tokens per text for the embedder")
    p.add_argument("--dim", type=int, default=None, help="embedding dimension (Matryoshka) for Qwen3 models")
    p.add_argument("--chunk-size", type=int, default=None,
                   help=f"tokens per chunk; 0 = whole documents (default {DEFAULT_CHUNK_SIZE}, or that of an "
                        "existing --index)")
    p.add_argument("--chunk-overlap", type=int, default=None,
                   help=f"tokens shared by consecutive chunks (default {DEFAULT_CHUNK_OVERLAP}, or that of an "
                        "existing --index)")
    p.add_argument("--chunk-context", choices=CHUNK_CONTEXTS, default=None,
                   help="embed each chunk after its document's title (and heading path): title+headings, or "
                        f"alone: none (default {DEFAULT_CHUNK_CONTEXT}, or that of an existing --index)")
    p.add_argument("--modes", default="dense,bm25,hybrid",
                   help=f"comma-separated, from {','.join(EVAL_MODES)} (default dense,bm25,hybrid)")
    p.add_argument("--rerank-model", default=None,
                   help="reranker for the rerank mode (default Qwen/Qwen3-Reranker-0.6B)")
    p.add_argument("--candidates", type=int, default=100, help="documents reranked per query (default 100)")
    p.add_argument("--fusion", choices=["convex", "rrf"], default="convex",
                   help="hybrid fusion: convex (default: alpha x cosine + (1 - alpha) x BM25 over the query's "
                        "best BM25 score, weighted by how far that best hit stands out from the tenth) or rrf "
                        "(reciprocal rank fusion)")
    p.add_argument("--alpha", type=_alpha, default=None,
                   help=f"dense weight of the convex fusion, 0..1, or auto: {CONVEX_ALPHA:g}, and {CODE_ALPHA:g} "
                        "for a query whose best hits are code (default: the one calibrated for --index, else "
                        "auto)")
    p.add_argument("--weights", default="1,1", metavar="DENSE,BM25",
                   help="RRF weights (--fusion rrf; default 1,1)")
    p.add_argument("--calibrate", action="store_true",
                   help="choose the convex fusion's alpha on these labelled queries and store it in --index, so "
                        "that hybrid search over that index (query, serve, LangChain) uses it; needs --index "
                        f"and at least {MIN_QUERIES} queries; the default alpha stays unless another gains at "
                        f"least {MIN_GAIN:g} nDCG")
    p.add_argument("--instruction", default=None, help="query instruction for the embedder")
    p.add_argument("--k", type=int, default=10, help="cut-off for nDCG and MRR (default 10)")
    p.add_argument("--ignore-identical-ids", action="store_true",
                   help="drop a retrieved document whose id equals the query id (MTEB's habit for "
                        "ArguAna-like sets; wrong for Cranfield/CISI, where ids are unrelated)")
    p.add_argument("--batch-size", type=int, default=None, help="texts per embedding batch (cap)")
    p.add_argument("--device", default="auto", help="device for the models (auto, cpu, cuda, ...)")
    p.add_argument("--json", default=None, metavar="OUT", help="write {mode: {metric: value}} to this file")
    p.add_argument("--plot", default=None, metavar="OUT.png",
                   help="plot recall@k (k = 1..100) for each mode, the fusion in the legend")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(run=run)


def _parse_modes(text: str) -> list[str]:
    modes = [m.strip().lower() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in EVAL_MODES]
    if bad or not modes:
        raise CLIError(f"--modes {text!r}: unknown mode(s) {', '.join(bad) or '(none given)'}; "
                       f"choose from {','.join(EVAL_MODES)}")
    return list(dict.fromkeys(modes))


def _parse_weights(text: str) -> tuple[float, float]:
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 2 or min(parts) < 0 or max(parts) == 0:
        raise CLIError(f"--weights {text!r}: expected two non-negative numbers DENSE,BM25 such as 1,1 "
                       "or 1,0.5")
    return parts[0], parts[1]


def _alpha(text: str) -> float | str:
    """--alpha: a number or auto (argparse reports a ValueError as an invalid value)."""
    return AUTO if text == AUTO else float(text)


def mode_label(mode: str, fusion: str | None = None) -> str:
    """A mode's legend label: the fused modes name their fusion, e.g. ``hybrid (convex, ..., alpha 0.35)``."""
    if fusion and mode == "hybrid":
        return f"hybrid ({fusion})"
    if fusion and mode == "rerank":
        return f"rerank (of hybrid: {fusion})"
    return mode


def recall_figure(curves: dict[str, list[float]], title: str, fusion: str | None = None) -> Any:
    """A matplotlib figure of recall@k, one line per mode (legend: :func:`mode_label`); needs matplotlib."""
    from qwen3_rag._optional import require

    require("matplotlib", "plot", "--plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for mode, curve in curves.items():
        ax.plot(range(1, len(curve) + 1), curve, label=mode_label(mode, fusion))
    ax.set_xscale("log")
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k")
    ax.set_ylim(0, 1)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_recall(curves: dict[str, list[float]], out: str | Path, title: str, fusion: str | None = None) -> None:
    """Save a recall@k plot (one line per mode, the fusion in the hybrid label) to ``out``; needs matplotlib
    (the ``plot`` extra)."""
    fig = recall_figure(curves, title, fusion)
    import matplotlib.pyplot as plt

    fig.savefig(out, dpi=120)
    plt.close(fig)


def _check_args(args: argparse.Namespace) -> tuple[list[str], tuple[float, float]]:
    """The modes and RRF weights; a CLIError for any flag out of range."""
    modes = _parse_modes(args.modes)
    weights = _parse_weights(args.weights)
    if args.alpha not in (None, AUTO) and not 0.0 <= args.alpha <= 1.0:
        raise CLIError(f"--alpha must be between 0 and 1 or auto, got {args.alpha}")
    if args.calibrate and not args.index:
        raise CLIError("--calibrate stores the chosen alpha in the index: give --index LOCATION, the index your "
                       "queries search")
    if args.calibrate and (args.fusion != "convex" or args.alpha is not None):
        raise CLIError("--calibrate chooses the alpha of the convex fusion; leave out --fusion rrf and --alpha")
    for flag, value in (("--k", args.k), ("--candidates", args.candidates)):
        if value < 1:
            raise CLIError(f"{flag} must be at least 1, got {value}")
    if args.chunk_size is not None and args.chunk_size < 0:
        raise CLIError(f"--chunk-size must be >= 0 (0 = whole documents), got {args.chunk_size}")
    if args.plot:
        from qwen3_rag._optional import is_available

        if not is_available("matplotlib"):
            raise CLIError("--plot needs matplotlib: pip install 'qwen3-rag[plot]'")
    return modes, weights


def _models(args: argparse.Namespace, location: str, modes: list[str]) -> tuple[Any, Any]:
    """The embedder (the index's model unless --model) and, for the rerank mode, the reranker."""
    from qwen3_rag.indexers.index import Index
    from qwen3_rag.retrieval.models import load_embedder, load_reranker

    record = Index.read_manifest(location)["model"] if Index.exists(location) else None
    try:
        embedder = load_embedder(args.model, record=record, device=args.device, max_length=args.max_length,
                                 dim=args.dim, batch_size=args.batch_size)
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot load the embedding model {args.model or (record or {}).get('model')!r}: "
                       f"{exc}") from None
    reranker = None
    if "rerank" in modes:
        try:
            reranker = load_reranker(args.rerank_model, device=args.device, batch_size=args.batch_size)
        except (OSError, ValueError) as exc:
            raise CLIError(f"cannot load the reranker {args.rerank_model!r}: {exc}") from None
    return embedder, reranker


def _evaluate(args: argparse.Namespace, dataset: Any, location: str, modes: list[str],
              weights: tuple[float, float]) -> tuple[Any, Any]:
    """Index the corpus (what is not indexed yet), calibrate hybrid search with --calibrate, run the queries."""
    from qwen3_rag.indexers.index import Index
    from qwen3_rag.pipelines.evaluation import evaluate_index, index_corpus
    from qwen3_rag.pipelines.search import Retriever

    embedder, reranker = _models(args, location, modes)
    with Index.open_or_create(location, embedder, chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap,
                              chunk_context=args.chunk_context, bm25=any(m != "dense" for m in modes)) as index:
        written = index_corpus(dataset, index, show_progress=not args.no_progress)
        logging.getLogger(__name__).info("indexed %d new or changed documents into %s", written, index.location)
        fusion: dict[str, Any] = {"fusion": args.fusion, "weights": weights}
        if args.alpha is not None:
            fusion["alpha"] = args.alpha
        calibration = None
        if args.calibrate:
            from qwen3_rag.pipelines.calibration import calibrate_hybrid

            try:
                # explicit fusion settings: the weights are tried whatever the index has stored, even if unusable
                searcher = Retriever(index, embedder=embedder, fusion="convex", alpha=AUTO)
                calibration = calibrate_hybrid(dataset, searcher, k=args.k,
                                               instruction=args.instruction,
                                               ignore_identical_ids=args.ignore_identical_ids)
            except ValueError as exc:
                raise CLIError(str(exc)) from None
            index.set_hybrid_settings(calibration.settings())
        retriever = Retriever(index, embedder=embedder, reranker=reranker, **fusion)
        report = evaluate_index(dataset, retriever, modes, k=args.k, reranker=reranker, candidates=args.candidates,
                                instruction=args.instruction, ignore_identical_ids=args.ignore_identical_ids,
                                show_progress=not args.no_progress)
        return report, calibration


def _load_dataset(args: argparse.Namespace) -> Any:
    from qwen3_rag.pipelines.evaluation import load_beir

    try:
        dataset = load_beir(args.dataset, split=args.split)
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    if not dataset.queries:
        raise CLIError(f"{args.dataset}: no judged queries in qrels/{args.split}.tsv match queries.jsonl")
    return dataset


def _write_report(args: argparse.Namespace, dataset: Any, model: str, report: Any, calibration: Any) -> None:
    """The table on stdout (after the calibration, when one was made), a warning on stderr for each fused mode
    that does worse than a single one, and the --json / --plot files."""
    import sys

    if calibration is not None:
        print(calibration.summary())
        print(f"stored in {args.index}: hybrid search over it uses {describe_alpha(calibration.alpha)}\n")
    print(f"{dataset.path} ({len(dataset.corpus)} documents, {report.num_queries} queries, model {model})")
    if report.settings.get("fusion"):
        print(f"hybrid fusion: {report.settings['fusion']}")
    print(report.table())
    for warning in report.warnings():
        print(f"qwen3-rag: warning: {warning}", file=sys.stderr)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        plot_recall(report.recall_curves, args.plot, f"{Path(args.dataset).name}: recall@k",
                    fusion=report.settings.get("fusion"))


def run(args: argparse.Namespace) -> int:
    import tempfile

    modes, weights = _check_args(args)
    dataset = _load_dataset(args)
    with tempfile.TemporaryDirectory(prefix="qwen3-rag-eval-") as tmp:
        index_dir = args.index or str(Path(tmp) / "index")
        report, calibration = _evaluate(args, dataset, index_dir, modes, weights)
    _write_report(args, dataset, str(report.settings.get("model")), report, calibration)
    return 0
