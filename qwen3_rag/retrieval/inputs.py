"""Checks of the texts given to the models and to search, free of model code (a client of a remote model, or a
reader of an index, needs them without loading torch)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["check_queries", "check_texts", "check_unicode"]


def check_texts(texts: Any, name: str = "texts") -> list[str]:
    """Return ``texts`` as a list of str.

    Raises:
        TypeError: ``texts`` is a single str or not iterable, or an item is not a str (naming its index).
        ValueError: an item is not valid Unicode text (a lone surrogate, e.g. from undecodable bytes), naming its
            index.
    """
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of strings, got a single str; wrap it in a list: [{texts[:40]!r}]")
    if not isinstance(texts, Iterable):
        raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise TypeError(
                f"{name}[{i}] is {type(text).__name__} ({text!r:.60}), expected str; convert it with str() "
                "or drop it before calling"
            )
        check_unicode(text, f"{name}[{i}]")
    return out


def check_unicode(text: str, name: str) -> None:
    """Raise a ValueError when ``text`` cannot be encoded as UTF-8 (it holds a lone surrogate)."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{name} holds {text[exc.start]!r} at position {exc.start}, a lone surrogate, which is not text "
            "(often bytes that were not UTF-8, decoded with errors='surrogateescape'); decode the bytes with "
            "their real encoding, or drop the character"
        ) from None


def check_queries(queries: str | Sequence[str]) -> list[str]:
    """Check search queries: strings of valid Unicode, each with some text that is not whitespace.

    Args:
        queries: One query or a list of them.

    Returns:
        The queries as a list.

    Raises:
        TypeError: an item is not a str.
        ValueError: a query is empty or only whitespace (``"query 3 is empty"``), or is not valid Unicode.
    """
    single = isinstance(queries, str)
    out = check_texts([queries] if single else queries, "queries")
    for i, query in enumerate(out):
        if not query.strip():
            which = "the query" if single else f"query {i}"
            raise ValueError(f"{which} is empty{' (only whitespace)' if query else ''}: a search needs some "
                             f"words, got {query!r:.40}")
    return out
