"""``qwen3-rag info``: describe an index directory (manifest and counts)."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "info",
        help="describe an index (model, chunking, index type, counts)",
        description="Print the manifest of an index directory with its current counts.",
    )
    p.add_argument("index", metavar="LOCATION", help="the index (a directory or a backend URI)")
    p.add_argument("--json", action="store_true", help="machine-readable JSON")
    p.set_defaults(run=run)


def describe(path: str) -> dict[str, Any]:
    """The manifest of the index at ``path`` plus top-level ``documents``, ``chunks``, ``vectors``, ``model``,
    ``dim``, ``index_type``."""
    from qwen3_rag.cli import require_index
    from qwen3_rag.indexers.index import Index

    require_index(path)
    with Index.open(path, read_only=True) as index:
        manifest = index.manifest
        location = index.location  # a URI as shown: without a token
    counts = manifest["counts"]
    out: dict[str, Any] = {
        "path": location,
        "documents": counts["documents"],
        "chunks": counts["chunks"],
        "vectors": counts["vectors"],
        "model": manifest["model"].get("model"),
        "dim": manifest["dim"],
        "index_type": manifest["index"]["spec"],
        "model_info": manifest["model"],
    }
    out.update({k: v for k, v in manifest.items() if k not in out})
    return out


def run(args: argparse.Namespace) -> int:
    info = describe(args.index)
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    m = info["model"]
    pooling = info["model_info"].get("pooling")
    chunking = info["chunking"]
    details = info.get("versions", {})
    lines = [
        f"index       {info['path']}  (format {info['format_version']}"
        + (f", generation {info['generation']})" if "generation" in info else ")"),
        f"model       {m}  dim {info['dim']}, {pooling or '?'} pooling, {info['metric']}",
        f"chunking    {chunking['chunk_size']} tokens, overlap {chunking['chunk_overlap']}, context "
        f"{chunking.get('context', 'none')}",
        f"index type  {info['index'].get('spec')} (searching as {info['index'].get('effective')})",
        f"hybrid      {_hybrid(info.get('hybrid'))}",
        f"documents   {info['documents']}",
        f"chunks      {info['chunks']}",
        f"vectors     {info['vectors']}",
        f"created     {info.get('created_at')}",
        "versions    " + ", ".join(f"{k} {v}" for k, v in details.items()),
    ]
    print("\n".join(lines))
    return 0


def _hybrid(settings: dict[str, Any] | None) -> str:
    if not settings:
        return "the default fusion (calibrate with qwen3-rag eval --calibrate)"
    from qwen3_rag.pipelines.fusion import describe_calibration

    calibration = settings.get("calibration") or {}
    when = f" ({calibration['date']})" if "date" in calibration else ""
    alpha = "auto (the default)" if settings.get("alpha") == "auto" else settings.get("alpha")
    return f"{settings.get('fusion')}, alpha {alpha}, {describe_calibration(calibration)}{when}"
