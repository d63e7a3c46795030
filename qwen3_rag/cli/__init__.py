"""The ``qwen3-rag`` command line.

Each subcommand lives in its own module of this package with two functions, ``add_parser(subparsers)`` and
``run(args) -> int``. Those modules import nothing heavy at import time, so ``qwen3-rag --help`` is instant; the
work is imported from ``pipelines/`` inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

# Subcommand name -> module in this package. Order is the order shown by --help.
_COMMANDS = ("qwen3_rag.cli.index", "qwen3_rag.cli.info", "qwen3_rag.cli.query", "qwen3_rag.cli.eval",
             "qwen3_rag.cli.serve")


class CLIError(Exception):
    """A user-facing error: printed as ``qwen3-rag: error: <message>`` with exit status 2, no traceback."""


def require_index(location: str) -> None:
    """Raise :class:`CLIError` (with the command that builds one) when ``location`` holds no index."""
    from qwen3_rag.indexers.index import Index, redact_location

    try:
        found = Index.exists(location)
    except (ValueError, ImportError) as exc:
        raise CLIError(str(exc)) from None
    if not found:
        shown = redact_location(location)
        raise CLIError(f"no index at {shown!r}; build one with `qwen3-rag index SOURCES... --index {shown}`")


def _user_errors() -> tuple[type[BaseException], ...]:
    """The library's errors about the user's input or environment: shown as one line, without a traceback."""
    from qwen3_rag.indexers.manifest import IndexDamagedError, IndexLockedError

    return (ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError, IndexLockedError,
            IndexDamagedError, OSError)


def build_parser() -> argparse.ArgumentParser:
    from qwen3_rag import __version__

    parser = argparse.ArgumentParser(
        prog="qwen3-rag",
        description="Build, query and evaluate local retrieval indexes with Qwen3-Embedding and Qwen3-Reranker.",
    )
    parser.add_argument("--version", action="version", version=f"qwen3-rag {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMANDS:
        importlib.import_module(module_name).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args) or 0)
    except CLIError as exc:
        print(f"qwen3-rag: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader stopped early (`... | head`): no traceback, as other command-line tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit-time flush must not fail too
        return 141  # 128 + SIGPIPE
    except KeyboardInterrupt:
        print("qwen3-rag: interrupted; committed work is kept, run the same command again to continue",
              file=sys.stderr)
        return 130
    except Exception as exc:
        if not isinstance(exc, _user_errors()) or args.verbose >= 2:
            raise
        print(f"qwen3-rag: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
