"""LangChain's metadata filters in the core dialect (:mod:`qwen3_rag.indexers.filters`): :func:`translate_filter`,
which :mod:`qwen3_rag.integrations.langchain` applies to every filter it is given. Needs no LangChain itself."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from qwen3_rag.indexers.filters import FilterError

__all__ = ["translate_filter"]


# LangChain's metadata filter operators -> the core dialect (qwen3_rag.indexers.filters)
_FIELD_OPS = {
    "$eq": "$eq",
    "$ne": "$ne",
    "$neq": "$ne",
    "$gt": "$gt",
    "$gte": "$gte",
    "$lt": "$lt",
    "$lte": "$lte",
    "$in": "$in",
    "$nin": "$nin",
}
_SUPPORTED = "$eq $ne $neq $gt $gte $lt $lte $in $nin $and $or $not"


def translate_filter(flt: Mapping[str, Any] | Callable[..., bool] | None) -> Any:
    """Translate a LangChain metadata filter into the core filter dialect (run inside the FAISS search).

    Accepted: ``{"field": value}`` (equality; a list value means ``$in``), ``{"field": {"$op": value}}``
    with ``$eq $ne $neq $gt $gte $lt $lte $in $nin``, and ``$and`` / ``$or`` (lists of filters) and ``$not``
    (one filter). Keys of one dict are combined with AND. A callable ``metadata -> bool`` is passed through.
    A missing field never matches a comparison (``$ne`` / ``$nin`` included); see
    :mod:`qwen3_rag.indexers.filters`.

    Raises:
        FilterError: for an operator outside the list above or a malformed filter.
    """
    if flt is None or (callable(flt) and not isinstance(flt, Mapping)):
        return flt
    if not isinstance(flt, Mapping):
        raise FilterError(f"a filter must be a dict, got {flt!r} ({type(flt).__name__})")
    out: dict[str, Any] = {}
    for key, value in flt.items():
        if not isinstance(key, str):
            raise FilterError(f"filter keys must be strings, got {key!r}")
        out[key] = _translate_logical(key, value) if key.startswith("$") else _translate_field(key, value)
    return out


def _translate_logical(key: str, value: Any) -> Any:
    if key in ("$and", "$or"):
        if not isinstance(value, (list, tuple)) or not value:
            raise FilterError(f"{key} needs a non-empty list of filters, got {value!r}")
        return [translate_filter(v) for v in value]
    if key == "$not":
        if isinstance(value, (list, tuple)):
            value = {"$and": list(value)} if len(value) != 1 else value[0]
        return translate_filter(value)
    raise FilterError(f"unsupported filter operator {key!r} at the top level; supported: {_SUPPORTED}")


def _translate_field(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        return {"$in": list(value)} if isinstance(value, (list, tuple, set)) else {"$eq": value}
    cond: dict[str, Any] = {}
    for op, arg in value.items():
        if op not in _FIELD_OPS:
            raise FilterError(f"field {key!r}: unsupported filter operator {op!r}; supported: {_SUPPORTED}")
        core_op = _FIELD_OPS[op]
        if core_op in cond:
            raise FilterError(f"field {key!r}: {op!r} repeats an operator already given")
        cond[core_op] = list(arg) if isinstance(arg, (list, tuple, set)) else arg
    return cond
