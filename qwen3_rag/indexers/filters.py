"""Metadata filters: a small Mongo-style dialect, compiled to SQL for the store and to Python for checks.

A filter is a dict. Each key is either a metadata field or a logical operator:

- ``{"lang": "en"}`` -- equality (shorthand for ``{"lang": {"$eq": "en"}}``)
- ``{"year": {"$gte": 2020, "$lt": 2024}}`` -- several operators on one field are combined with AND
- operators: ``$eq $ne $gt $gte $lt $lte`` (a scalar: str, int, float, bool) and ``$in $nin`` (a list)
- ``{"$and": [f1, f2]}``, ``{"$or": [f1, f2]}``, ``{"$not": f}``; keys of one dict are combined with AND
- inside a field's condition the ``$`` is optional (``{"year": {"gte": 2020}}``); the logical operators need it,
  so a bare ``and`` / ``or`` / ``not`` key is a field of that name (``{"or": "x"}`` matches ``metadata["or"] == "x"``)

Rules: a field that is missing (or null) never matches a comparison, not even ``$ne`` / ``$nin``; a comparison
between different types (a string and a number) does not match; booleans only equal booleans. ``$not`` negates
a whole filter, so ``{"$not": {"lang": "en"}}`` also matches documents without ``lang``. Field names are
literal keys of the document metadata (a dot is part of the name, not a path). Besides its metadata, every
document can be filtered on ``doc_id`` and ``source`` unless its metadata has fields of those names.

A malformed filter raises :class:`FilterError` saying what is wrong. Instead of a dict, a callable
``metadata -> bool`` can be given anywhere a filter is accepted; it is evaluated in Python.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Filter = Mapping[str, Any] | Callable[[Mapping[str, Any]], bool]

_COMPARISONS = ("eq", "ne", "gt", "gte", "lt", "lte")
_SETS = ("in", "nin")
_LOGICAL = ("and", "or", "not")
_SQL_OP = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


class FilterError(ValueError):
    """A metadata filter that does not follow the dialect of :mod:`qwen3_rag.indexers.filters`."""


def _op(key: str) -> str | None:
    name = key[1:] if key.startswith("$") else key
    if name in _COMPARISONS or name in _SETS or name in _LOGICAL:
        return name
    return None


def _top_op(key: str) -> str | None:
    """The operator a key of a filter dict names: only ``$``-prefixed keys are operators there, others fields."""
    return _op(key) if key.startswith("$") else None


def _check_scalar(value: Any, where: str) -> None:
    if value is None or not isinstance(value, (str, int, float, bool)):
        raise FilterError(
            f"{where}: expected a string, number or boolean, got {value!r} ({type(value).__name__})"
        )


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "text"


def validate(flt: Mapping[str, Any]) -> None:
    """Check a filter dict and raise :class:`FilterError` naming the first problem."""
    _compile(flt, [])


# -- SQL ---------------------------------------------------------------------------------------------------


def to_sql(flt: Mapping[str, Any], column: str = "fmeta") -> tuple[str, list[Any]]:
    """Compile a filter to an SQLite boolean expression over the JSON text in ``column``.

    Returns:
        ``(sql, params)`` for ``WHERE sql``.

    Raises:
        FilterError: if the filter is malformed.
    """
    params: list[Any] = []
    sql = _compile(flt, params, column)
    return sql, params


def _compile(flt: Any, params: list[Any], column: str = "fmeta") -> str:
    if not isinstance(flt, Mapping):
        raise FilterError(f"a filter must be a dict, got {flt!r} ({type(flt).__name__})")
    parts = []
    for key, value in flt.items():
        if not isinstance(key, str):
            raise FilterError(f"filter keys must be strings, got {key!r}")
        op = _top_op(key)
        if op in _LOGICAL:
            parts.append(_compile_logical(op, value, params, column))
        elif op is not None:
            raise FilterError(
                f"operator {key!r} needs a field: write {{'field': {{{key!r}: ...}}}} "
                f"instead of {{{key!r}: ...}}"
            )
        else:
            parts.append(_compile_field(key, value, params, column))
    if not parts:
        return "1"
    return "(" + " AND ".join(parts) + ")"


def _compile_logical(op: str, value: Any, params: list[Any], column: str) -> str:
    if op == "not":
        return f"(NOT {_compile(value, params, column)})"
    if not isinstance(value, (list, tuple)) or not value:
        raise FilterError(f"${op} needs a non-empty list of filters, got {value!r}")
    joiner = " AND " if op == "and" else " OR "
    return "(" + joiner.join(_compile(v, params, column) for v in value) + ")"


def _json_path(field: str) -> str:
    return '$."' + field.replace('"', '\\"') + '"'


def _compile_field(field: str, cond: Any, params: list[Any], column: str) -> str:
    if field in _LOGICAL and (isinstance(cond, (list, tuple)) or (
            isinstance(cond, Mapping) and not all(isinstance(k, str) and _op(k) for k in cond))):
        raise FilterError(
            f"{field!r} is a field name here (metadata[{field!r}]), and its condition is a filter; "
            f"for the logical operator write '${field}'"
        )
    if isinstance(cond, Mapping):
        if not cond:
            raise FilterError(f"field {field!r}: empty condition {{}}; use e.g. {{'$eq': value}}")
        ops: list[tuple[Any, Any]] = list(cond.items())
    else:
        ops = [("$eq", cond)]
    parts = []
    for key, value in ops:
        op = _op(key) if isinstance(key, str) else None
        if op is None or op in _LOGICAL:
            raise FilterError(
                f"field {field!r}: unknown operator {key!r}; "
                f"use one of {', '.join('$' + o for o in _COMPARISONS + _SETS)}"
            )
        path = _json_path(field)
        if op in _SETS:
            if not isinstance(value, (list, tuple, set, frozenset)) or not value:
                raise FilterError(f"field {field!r}: ${op} needs a non-empty list, got {value!r}")
            if op == "nin":
                parts.append(_present(column, path, params))
            alts = []
            for v in value:
                _check_scalar(v, f"field {field!r} ${op}")
                alts.append(_typed_cmp(column, path, "=", v, params))
            any_sql = "(" + " OR ".join(alts) + ")"
            parts.append(any_sql if op == "in" else f"(NOT {any_sql})")
        else:
            _check_scalar(value, f"field {field!r} ${op}")
            if op == "ne":
                parts.append(_present(column, path, params))
                parts.append(f"(NOT {_typed_cmp(column, path, '=', value, params)})")
            else:
                parts.append(_typed_cmp(column, path, _SQL_OP[op], value, params))
    return "(" + " AND ".join(parts) + ")"


def _present(column: str, path: str, params: list[Any]) -> str:
    params.append(path)
    return f"COALESCE(json_type({column}, ?) NOT IN ('null'), 0)"


def _typed_cmp(column: str, path: str, sql_op: str, value: Any, params: list[Any]) -> str:
    # json_type guards keep comparisons within one type; a missing field has json_type NULL and never matches.
    # COALESCE turns SQL's NULL into false so that NOT and OR follow two-valued logic like the Python form.
    kind = _type_of(value)
    types = {"bool": "('true','false')", "number": "('integer','real')", "text": "('text')"}[kind]
    params.extend([path, path, int(value) if kind == "bool" else value])
    return f"COALESCE(json_type({column}, ?) IN {types} AND json_extract({column}, ?) {sql_op} ?, 0)"


# -- Python
# ------------------------------------------------------------------------------------------------------


def matches(flt: Filter, metadata: Mapping[str, Any]) -> bool:
    """Evaluate a filter (dict or callable) on one metadata dict in Python; same semantics as the SQL form."""
    if callable(flt):
        return bool(flt(metadata))
    validate(flt)  # report a malformed filter even where evaluation would short-circuit past it
    return _match(flt, metadata)


def _match(flt: Any, md: Mapping[str, Any]) -> bool:
    if not isinstance(flt, Mapping):
        raise FilterError(f"a filter must be a dict, got {flt!r} ({type(flt).__name__})")
    for key, value in flt.items():
        op = _top_op(key)
        if op == "not":
            if _match(value, md):
                return False
        elif op in ("and", "or"):
            if not isinstance(value, (list, tuple)) or not value:
                raise FilterError(f"${op} needs a non-empty list of filters, got {value!r}")
            results = [_match(v, md) for v in value]
            if not (all(results) if op == "and" else any(results)):
                return False
        elif op is not None:
            raise FilterError(f"operator {key!r} needs a field")
        elif not _match_field(key, value, md):
            return False
    return True


def _cmp(a: Any, op: str, b: Any) -> bool:
    if a is None or _type_of(a) != _type_of(b) or isinstance(a, (list, dict)):
        return False
    if op == "eq":
        return bool(a == b)
    if op == "gt":
        return bool(a > b)
    if op == "gte":
        return bool(a >= b)
    if op == "lt":
        return bool(a < b)
    return bool(a <= b)


def _match_field(field: str, cond: Any, md: Mapping[str, Any]) -> bool:
    value = md.get(field)
    ops = cond.items() if isinstance(cond, Mapping) else [("$eq", cond)]
    ok = True
    for key, arg in ops:
        op = _op(key)
        if op is None or op in _LOGICAL:
            raise FilterError(f"field {field!r}: unknown operator {key!r}")
        if op in _SETS:
            if not isinstance(arg, (list, tuple, set, frozenset)) or not arg:
                raise FilterError(f"field {field!r}: ${op} needs a non-empty list, got {arg!r}")
            for v in arg:
                _check_scalar(v, f"field {field!r} ${op}")
            hit = any(_cmp(value, "eq", v) for v in arg)
            ok = ok and (hit if op == "in" else (value is not None and not hit))
        else:
            _check_scalar(arg, f"field {field!r} ${op}")
            if op == "ne":
                ok = ok and value is not None and not _cmp(value, "eq", arg)
            else:
                ok = ok and _cmp(value, op, arg)
    return ok
