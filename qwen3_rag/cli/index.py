"""``qwen3-rag index``: build or update an index from files and folders."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from qwen3_rag.indexers.chunking import CHUNK_CONTEXTS, DEFAULT_CHUNK_CONTEXT, DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_SIZE

#: ``ingest`` arguments taken from the flags of the same name as they are.
_PASSED = ("model", "chunk_size", "chunk_overlap", "chunk_context", "index_type", "dim", "device", "batch_size",
           "max_tokens_per_batch", "compile", "include", "exclude", "prune", "follow_links")
_POSITIVE = ("commit_every", "batch_size", "max_tokens_per_batch", "ray_batch_tokens")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, metavar="M",
                   help="embedding model id or local directory (default: the index's model, or "
                        "Qwen/Qwen3-Embedding-0.6B for a new index)")
    p.add_argument("--chunk-size", type=int, default=None, metavar="N",
                   help=f"max tokens per chunk, 0 = no chunking (new index only; default {DEFAULT_CHUNK_SIZE})")
    p.add_argument("--chunk-overlap", type=int, default=None, metavar="N",
                   help=f"tokens shared by consecutive chunks (new index only; default {DEFAULT_CHUNK_OVERLAP})")
    p.add_argument("--chunk-context", choices=CHUNK_CONTEXTS, default=None,
                   help="embed each chunk after its document's title and heading path (title+headings) or alone "
                        f"(none); the stored text is the source's either way (new index only; default "
                        f"{DEFAULT_CHUNK_CONTEXT})")
    p.add_argument("--index-type", default=None, metavar="SPEC",
                   help="Flat (default), HNSW<M>, IVF<n>,Flat or IVF<n>,PQ<m> (new index only)")
    p.add_argument("--dim", type=int, default=None, metavar="D", help="embedding dimension (Matryoshka truncation)")
    p.add_argument("--device", default="auto", metavar="D", help="cpu, cuda, cuda:1, mps or auto (default)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="cap on texts per forward pass of the embedder")
    p.add_argument("--max-tokens-per-batch", type=int, default=None, metavar="N",
                   help="padded tokens per forward pass of the embedder (default 65536 on CUDA, 2048 on a CPU)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model: about twice the GPU throughput after a compile of about two "
                        "minutes (large corpora)")


def _add_source_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="only files matching GLOB (repeatable), e.g. '*.md' or 'docs/guide/*.rst'")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="skip files matching GLOB (repeatable)")
    p.add_argument("--prune", action="store_true", help="delete indexed documents whose source is gone")
    p.add_argument("--follow-links", action="store_true",
                   help="follow symbolic links that lead out of the source folders (default: skip them)")
    p.add_argument("--id-field", default=None, metavar="F", help="record files: the id field (default _id / id)")
    p.add_argument("--text-field", action="append", default=None, metavar="F",
                   help="record files: a text field, repeatable, joined with a space (default title + text)")
    p.add_argument("--metadata-field", action="append", default=None, metavar="F",
                   help="record files: a metadata field, repeatable (default every other field)")


def _add_ray_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="read, chunk and embed on Ray: local (start Ray on this machine for the run), auto (join "
                        "the running cluster, RAY_ADDRESS) or ray://HOST:10001 (a cluster's Ray Client address)")
    p.add_argument("--ray-actors", default=None, metavar="N|MIN,MAX",
                   help="embedding actors on Ray: a number, or MIN,MAX for a pool that grows with the work (default: "
                        "one per GPU of the cluster, or 1 without GPUs)")
    p.add_argument("--ray-gpus-per-actor", type=float, default=None, metavar="G",
                   help="GPUs each embedding actor holds (default 1 when the cluster has GPUs, else 0)")
    p.add_argument("--ray-batch-tokens", type=int, default=None, metavar="N",
                   help="tokens handed to an embedding actor per call (default 65536; --max-tokens-per-batch splits "
                        "them into forward passes)")


def _ray_options(args: argparse.Namespace) -> Any:
    """The ``ray=`` of :func:`~qwen3_rag.pipelines.ingest.ingest` for the ``--ray*`` flags (None without ``--ray``)."""
    from qwen3_rag.cli import CLIError

    given = [f"--{name.replace('_', '-')}" for name in ("ray_actors", "ray_gpus_per_actor", "ray_batch_tokens")
             if getattr(args, name) is not None]
    if args.ray is None:
        if given:
            raise CLIError(f"{given[0]} needs --ray ADDRESS (local, auto or ray://HOST:PORT)")
        return None
    if args.ray not in ("local", "auto") and not args.ray.startswith("ray://"):
        raise CLIError(f"--ray takes local, auto or ray://HOST:PORT, got {args.ray!r}")
    if args.ray_gpus_per_actor is not None and not args.ray_gpus_per_actor >= 0:
        raise CLIError(f"--ray-gpus-per-actor must be 0 or more, got {args.ray_gpus_per_actor}")
    from qwen3_rag.pipelines.distributed import DEFAULT_BATCH_TOKENS, RayOptions

    return RayOptions(address=args.ray, actors=_actors(args.ray_actors), gpus_per_actor=args.ray_gpus_per_actor,
                      batch_tokens=args.ray_batch_tokens or DEFAULT_BATCH_TOKENS)


def _actors(value: str | None) -> int | tuple[int, int] | None:
    """``--ray-actors N`` or ``MIN,MAX``."""
    from qwen3_rag.cli import CLIError

    if value is None:
        return None
    parts = value.split(",")
    if len(parts) not in (1, 2) or not all(part.strip().isdigit() for part in parts):
        raise CLIError(f"--ray-actors takes N or MIN,MAX (whole numbers), got {value!r}")
    low, high = int(parts[0]), int(parts[-1])
    if not 1 <= low <= high:
        raise CLIError(f"--ray-actors needs 1 <= MIN <= MAX, got {value!r}")
    return low if len(parts) == 1 else (low, high)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "index", help="build or update an index from files and folders",
        description="Index files and folders into an index (created on first use). Re-running embeds only new "
                    "and changed documents; an interrupted run continues where it stopped.")
    p.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="files and folders (.txt .md .rst .html .pdf, source code, .jsonl/.json/.csv records; a "
                        "BEIR corpus.jsonl works as is)")
    p.add_argument("--index", required=True, metavar="LOCATION",
                   help="the index: a directory (created on first use), or a backend URI such as "
                        "milvus-lite://FILE.db/COLLECTION")
    _add_model_options(p)
    _add_source_options(p)
    _add_ray_options(p)
    p.add_argument("--commit-every", type=int, default=None, metavar="N", help="chunks per commit (default 512)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from qwen3_rag.cli import CLIError
    from qwen3_rag.cli._text import printable
    from qwen3_rag.indexers.loaders import RecordFields
    from qwen3_rag.pipelines.ingest import DEFAULT_COMMIT_EVERY, ingest

    for flag in _POSITIVE:
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise CLIError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    report = ingest(args.sources, args.index, **{name: getattr(args, name) for name in _PASSED},
                    record_fields=RecordFields(id=args.id_field, text=args.text_field, metadata=args.metadata_field),
                    commit_every=args.commit_every or DEFAULT_COMMIT_EVERY,
                    show_progress=not args.no_progress and sys.stderr.isatty(), ray=_ray_options(args))
    print(printable(report.summary(), multiline=True))  # failure lines name files: no terminal controls
    if report.embedded_nothing and not report.failed:
        print("index is up to date")
    return 1 if report.failed else 0
