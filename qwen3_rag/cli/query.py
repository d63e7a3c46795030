"""``qwen3-rag query DIR "question"``: print the best passages of an index with their sources and scores."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from qwen3_rag.cli import CLIError
from qwen3_rag.cli._text import printable
from qwen3_rag.pipelines.fusion import CODE_ALPHA, CONVEX_ALPHA
from qwen3_rag.retrieval.prompts import DEFAULT_RERANKER_MODEL


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "query",
        help="search an index and print ranked passages",
        description="Search an index directory and print the ranked passages with their source "
                    "(line or page) "
                    "and every score that applied.",
        epilog='example: qwen3-rag query my-index "how are logs rotated?" -k 5 --hybrid --filter lang=en',
    )
    p.add_argument("index", metavar="LOCATION", help="the index (a directory or a backend URI, made by "
                                                       "`qwen3-rag index`)")
    p.add_argument("question", help="the query text")
    p.add_argument("-k", type=int, default=5, help="number of passages (default 5)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--hybrid", action="store_true",
                      help="fuse dense and BM25 results (see --fusion)")
    mode.add_argument("--bm25", action="store_true", help="BM25 keyword search only")
    p.add_argument("--fusion", choices=["convex", "rrf"], default="convex",
                   help=f"how --hybrid combines the lists: convex (default: {CONVEX_ALPHA:g} x cosine + "
                        f"{1 - CONVEX_ALPHA:g} x BM25 over "
                        "the query's best BM25 score, weighted by how far that best hit stands out from the "
                        "tenth, so weak keyword matches barely move the dense order; where the best hits are "
                        f"code, {CODE_ALPHA:g} x cosine; an index calibrated with "
                        "qwen3-rag eval --calibrate uses its own weight) or rrf (reciprocal rank fusion)")
    p.add_argument("--rerank", nargs="?", const=DEFAULT_RERANKER_MODEL, default=None, metavar="MODEL",
                   help=f"rerank the top --candidates with a Qwen3-Reranker (default model "
                        f"{DEFAULT_RERANKER_MODEL})")
    p.add_argument("--candidates", type=int, default=50,
                   help="first-stage hits fused / reranked (default 50)")
    p.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                   help="metadata filter, repeatable (all must match); VALUE is JSON when it parses "
                        "(3, true) "
                        "else a string; or a JSON object such as '{\"year\": {\"$gte\": 2020}}'")
    p.add_argument("--instruction", default=None, help="query instruction for the embedder")
    p.add_argument("--model", default=None, help="embedding model instead of the one in the index manifest")
    p.add_argument("--overlap", choices=["merge", "dedup", "none"], default="merge",
                   help="overlapping chunks of one document: merge them (default), keep the best, "
                        "or keep all")
    p.add_argument("--device", default="auto", help="device for the models (auto, cpu, cuda, ...)")
    p.add_argument("--json", action="store_true", help="print the hits as a JSON list")
    p.set_defaults(run=run)


def parse_filters(items: list[str]) -> dict[str, Any] | None:
    """``["lang=en", "year=2020"]`` or JSON objects -> one filter dict (all conditions must hold)."""
    if not items:
        return None
    conditions: list[dict[str, Any]] = []
    for item in items:
        text = item.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise CLIError(f"bad filter {item!r}: not valid JSON ({exc.msg} at column "
                               f"{exc.colno})") from None
            if not isinstance(value, dict):
                raise CLIError(f"bad filter {item!r}: a JSON filter must be an object")
            conditions.append(value)
            continue
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CLIError(f"bad filter {item!r}: expected KEY=VALUE (e.g. --filter lang=en) or a JSON "
                           "object "
                           "(e.g. --filter '{\"year\": {\"$gte\": 2020}}')")
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            parsed = raw
        if parsed is None or (isinstance(parsed, float) and not math.isfinite(parsed)):
            parsed = raw  # null, NaN, Infinity: the text; an object or list goes to the filter, never as text
        conditions.append({key: parsed})
    return conditions[0] if len(conditions) == 1 else {"$and": conditions}


def _print_hits(hits: list[Any]) -> None:
    from qwen3_rag.pipelines.rag import cite

    if not hits:
        print("no matching passages")
        return
    for n, hit in enumerate(hits, 1):
        scores = ", ".join(f"{name} {value:.4g}" for name, value in hit.scores.items())
        print(f"[{n}] {hit.score:.4f}  {printable(cite(hit))}  ({scores})")  # document text cannot drive the terminal
        text = " ".join(hit.text.split())
        print("    " + printable(text if len(text) <= 400 else text[:400] + " ..."))


def run(args: argparse.Namespace) -> int:
    from qwen3_rag.cli import require_index

    if args.k < 1:
        raise CLIError(f"-k must be at least 1, got {args.k}")
    if args.candidates < 1:
        raise CLIError(f"--candidates must be at least 1, got {args.candidates}")
    flt = parse_filters(args.filter)
    require_index(args.index)

    from qwen3_rag.indexers.filters import FilterError
    from qwen3_rag.pipelines.search import Retriever, SearchMode, hits_to_dicts

    with Retriever(args.index, model=args.model, overlap=args.overlap, instruction=args.instruction,
                   device=args.device, fusion=args.fusion) as retriever:
        mode: SearchMode = "hybrid" if args.hybrid else "bm25" if args.bm25 else "dense"
        try:
            hits = retriever.search(args.question, k=args.k, filter=flt, mode=mode, rerank=args.rerank,
                                    candidates=args.candidates)
        except FilterError as exc:
            raise CLIError(f"bad filter: {exc}") from None
        except OSError as exc:
            if args.rerank:
                raise CLIError(f"cannot load the reranker {args.rerank!r}: {exc}") from None
            raise
    if args.json:
        json.dump(hits_to_dicts(hits), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    _print_hits(hits)
    return 0
