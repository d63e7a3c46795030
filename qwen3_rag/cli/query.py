"""``qwen3-rag query DIR "question"``: print the best passages of an index with their sources and scores."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from qwen3_rag.cli import CLIError
from qwen3_rag.pipelines.fusion import CONVEX_ALPHA
from qwen3_rag.retrieval.reranking import DEFAULT_RERANKER_MODEL


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "query",
        help="search an index and print ranked passages",
        description="Search an index directory and print the ranked passages with their source "
                    "(line or page) "
                    "and every score that applied.",
        epilog='example: qwen3-rag query my-index "how are logs rotated?" -k 5 --hybrid --filter lang=en',
    )
    p.add_argument("index", metavar="DIR", help="index directory (made by `qwen3-rag index`)")
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
                        "tenth, so weak keyword matches barely move the dense order) or rrf (reciprocal rank "
                        "fusion)")
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
        if isinstance(parsed, (dict, list)) or parsed is None:
            parsed = raw
        conditions.append({key: parsed})
    return conditions[0] if len(conditions) == 1 else {"$and": conditions}


def _lines(retriever: Any, hits: list[Any]) -> dict[int, tuple[int, int]]:
    """Line spans of hits without a page, from the stored document text."""
    out: dict[int, tuple[int, int]] = {}
    cache: dict[str, str | None] = {}
    for hit in hits:
        if hit.page is not None:
            continue
        if hit.doc_id not in cache:
            try:
                doc = retriever.index.get_document(hit.doc_id)
                cache[hit.doc_id] = None if doc is None else doc.text
            except Exception:  # a citation nicety: never fail the query for it
                cache[hit.doc_id] = None
        text = cache[hit.doc_id]
        if text is not None:
            out[hit.chunk_id] = (text.count("\n", 0, hit.start) + 1,
                                 text.count("\n", 0, max(hit.start, hit.end - 1)) + 1)
    return out


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.k < 1:
        raise CLIError(f"-k must be at least 1, got {args.k}")
    if args.candidates < 1:
        raise CLIError(f"--candidates must be at least 1, got {args.candidates}")
    flt = parse_filters(args.filter)
    path = Path(args.index)
    if not path.is_dir():
        raise CLIError(f"index directory {str(path)!r} does not exist; build it with `qwen3-rag index {path} "
                       "FILES...`")
    if not (path / "manifest.json").is_file() and not (path / "store.sqlite").is_file():
        raise CLIError(f"{str(path)!r} is not a qwen3-rag index (no manifest.json); build one with "
                       f"`qwen3-rag index {path} FILES...`")

    from qwen3_rag.indexers.filters import FilterError
    from qwen3_rag.pipelines.rag import cite
    from qwen3_rag.pipelines.search import Retriever, SearchMode, hits_to_dicts

    try:
        retriever = Retriever(path, model=args.model, overlap=args.overlap, instruction=args.instruction,
                              device=args.device, fusion=args.fusion)
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(f"cannot open index {str(path)!r}: {exc}") from None
    with retriever:
        mode: SearchMode = "hybrid" if args.hybrid else "bm25" if args.bm25 else "dense"
        try:
            hits = retriever.search(args.question, k=args.k, filter=flt, mode=mode, rerank=args.rerank,
                                    candidates=args.candidates)
        except FilterError as exc:
            raise CLIError(f"bad filter: {exc}") from None
        except (OSError, ValueError) as exc:
            if args.rerank:
                raise CLIError(f"reranking with {args.rerank!r} failed: {exc}") from None
            raise
        lines = _lines(retriever, hits)

    if args.json:
        records = hits_to_dicts(hits)
        for record, hit in zip(records, hits, strict=True):
            if hit.chunk_id in lines:
                record["lines"] = list(lines[hit.chunk_id])
        json.dump(records, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    if not hits:
        print("no matching passages")
        return 0
    for n, hit in enumerate(hits, 1):
        scores = ", ".join(f"{name} {value:.4g}" for name, value in hit.scores.items())
        print(f"[{n}] {hit.score:.4f}  {cite(hit, lines.get(hit.chunk_id))}  ({scores})")
        text = " ".join(hit.text.split())
        print("    " + (text if len(text) <= 400 else text[:400] + " ..."))
    return 0
