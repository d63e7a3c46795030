"""Metadata filters: a small Mongo-style dialect, compiled to SQL for the local store, to Milvus boolean expressions
for the Milvus backend (:func:`to_milvus` over :func:`milvus_fields`) and to Python for checks.

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

Values are what metadata holds (:func:`qwen3_rag.types.check_metadata`): text without NUL characters, integers
within 64 bits, finite floats, booleans. A filter nests ``$and`` / ``$or`` / ``$not`` at most :data:`MAX_DEPTH`
deep and holds at most :data:`MAX_CONDITIONS` field conditions (a ``$in`` list of any length is one); field names
may hold any character but NUL (quotes, brackets and dots included).

A malformed filter raises :class:`FilterError` saying what is wrong. Instead of a dict, a callable
``metadata -> bool`` can be given anywhere a filter is accepted; it is evaluated in Python.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

Filter = Mapping[str, Any] | Callable[[Mapping[str, Any]], bool]

#: Deepest nesting of ``$and`` / ``$or`` / ``$not`` (a filter is read recursively, and SQLite's parser has a
#: fixed stack).
MAX_DEPTH = 10
#: Most field conditions in one filter (each becomes a few SQL terms and parameters); a long list of values is
#: one ``$in`` condition, whatever its length.
MAX_CONDITIONS = 1000

_COMPARISONS = ("eq", "ne", "gt", "gte", "lt", "lte")
_SETS = ("in", "nin")
_LOGICAL = ("and", "or", "not")
_SQL_OP = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_SQL_TYPES = {"bool": "('true','false')", "number": "('integer','real')", "text": "('text')"}
#: Field names a JSON path can address as stored: no quote, backslash or control character (json.dumps escapes
#: those, and SQLite compares path labels with the escaped text) and no non-ASCII (escaped by some writers).
_PATH_SAFE = re.compile(r"[ !#-\[\]-~]*")
_INT64 = (-(2**63), 2**63 - 1)


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
            f"{where}: expected a string, number or boolean, got {value!r:.80} ({type(value).__name__})"
        )
    if isinstance(value, str):
        _check_text(value, f"{where}: the value {value!r:.80}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise FilterError(f"{where}: {value!r} is not a finite number; metadata numbers are finite")
    elif isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= _INT64[1]:
        raise FilterError(f"{where}: {value} is outside the 64-bit integers metadata can hold (-2**63 to 2**63 - 1)")


def _check_text(text: str, what: str) -> None:
    if "\x00" in text:
        raise FilterError(f"{what} holds a NUL character, which metadata cannot hold")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise FilterError(f"{what} holds a lone surrogate, which is not Unicode text") from None


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "text"


def _field_ops(field: str, cond: Any) -> list[tuple[str, Any]]:
    """The ``(operator, argument)`` pairs of one field's condition, checked; raises FilterError."""
    if field in _LOGICAL and (isinstance(cond, (list, tuple)) or (
            isinstance(cond, Mapping) and not all(isinstance(k, str) and _op(k) for k in cond))):
        raise FilterError(
            f"{field!r} is a field name here (metadata[{field!r}]), and its condition is a filter; "
            f"for the logical operator write '${field}'"
        )
    if not isinstance(cond, Mapping):
        _check_scalar(cond, f"field {field!r}")
        return [("eq", cond)]
    if not cond:
        raise FilterError(f"field {field!r}: empty condition {{}}; use e.g. {{'$eq': value}}")
    if not any(isinstance(k, str) and (k.startswith("$") or _op(k)) for k in cond):
        raise FilterError(
            f"field {field!r}: the value {dict(cond)!r:.80} is an object, which a filter cannot compare; give a "
            "string, number or boolean, or operators such as {'$gte': 2020}"
        )
    ops = []
    for key, arg in cond.items():
        op = _op(key) if isinstance(key, str) else None
        if op is None or op in _LOGICAL:
            raise FilterError(
                f"field {field!r}: unknown operator {key!r}; "
                f"use one of {', '.join('$' + o for o in _COMPARISONS + _SETS)}"
            )
        if op in _SETS:
            if not isinstance(arg, (list, tuple, set, frozenset)) or not arg:
                raise FilterError(f"field {field!r}: ${op} needs a non-empty list, got {arg!r:.80}")
            for v in arg:
                _check_scalar(v, f"field {field!r} ${op}")
        else:
            _check_scalar(arg, f"field {field!r} ${op}")
        ops.append((op, arg))
    return ops


def validate(flt: Mapping[str, Any]) -> None:
    """Check a filter dict and raise :class:`FilterError` naming the first problem."""
    _SQL("fmeta").filter(flt, 0)


# -- SQL ---------------------------------------------------------------------------------------------------


def to_sql(flt: Mapping[str, Any], column: str = "fmeta") -> tuple[str, list[Any]]:
    """Compile a filter to an SQLite boolean expression over the JSON text in ``column``.

    Returns:
        ``(sql, params)`` for ``WHERE sql``.

    Raises:
        FilterError: if the filter is malformed.
    """
    compiler = _SQL(column)
    sql = compiler.filter(flt, 0)
    return sql, compiler.params


def _join(parts: list[str], joiner: str) -> str:
    """``parts`` joined as a balanced tree: SQLite limits expression depth, and a flat chain is as deep as long."""
    if len(parts) == 1:
        return parts[0]
    mid = len(parts) // 2
    return f"({_join(parts[:mid], joiner)} {joiner} {_join(parts[mid:], joiner)})"


class _SQL:
    """Compiles one filter; collects its parameters."""

    def __init__(self, column: str) -> None:
        self.column = column
        self.params: list[Any] = []
        self.conditions = 0

    def filter(self, flt: Any, depth: int) -> str:
        if not isinstance(flt, Mapping):
            raise FilterError(f"a filter must be a dict, got {flt!r:.80} ({type(flt).__name__})")
        if depth > MAX_DEPTH:
            raise FilterError(f"the filter nests $and / $or / $not more than {MAX_DEPTH} deep")
        parts = []
        for key, value in flt.items():
            if not isinstance(key, str):
                raise FilterError(f"filter keys must be strings, got {key!r}")
            op = _top_op(key)
            if op == "not":
                parts.append(f"NOT {self.filter(value, depth + 1)}")
            elif op in ("and", "or"):
                if not isinstance(value, (list, tuple)) or not value:
                    raise FilterError(f"${op} needs a non-empty list of filters, got {value!r:.80}")
                parts.append(_join([self.filter(v, depth + 1) for v in value], op.upper()))
            elif op is not None:
                raise FilterError(
                    f"operator {key!r} needs a field: write {{'field': {{{key!r}: ...}}}} "
                    f"instead of {{{key!r}: ...}}"
                )
            else:
                parts.append(self.field(key, value))
        return f"({_join(parts, 'AND')})" if parts else "1"

    def field(self, field: str, cond: Any) -> str:
        _check_text(field, f"the field name {field!r}")
        ops = _field_ops(field, cond)
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise FilterError(f"the filter has more than {MAX_CONDITIONS} field conditions; "
                              "match a list of values with one {'$in': [...]}")
        parts = []
        for op, arg in ops:
            if op in _SETS:
                if op == "nin":
                    parts.append(self._present(field))
                any_sql = self._any_of(field, list(arg))
                parts.append(any_sql if op == "in" else f"NOT {any_sql}")
            elif op == "ne":
                parts.append(self._present(field))
                parts.append(f"NOT {self._compare(field, '=', arg)}")
            else:
                parts.append(self._compare(field, _SQL_OP[op], arg))
        return _join(parts, "AND")

    def _lookup(self, field: str, what: str) -> str:
        """SQL for the JSON type (``what="type"``) or the value (``"value"``) of ``field``; NULL when missing."""
        if _PATH_SAFE.fullmatch(field):
            self.params.append('$."' + field + '"')
            return f"json_{'type' if what == 'type' else 'extract'}({self.column}, ?)"
        self.params.append(field)  # json_each decodes the stored key: any name matches exactly
        return f"(SELECT {what} FROM json_each({self.column}) WHERE key = ?)"

    def _present(self, field: str) -> str:
        return f"COALESCE({self._lookup(field, 'type')} NOT IN ('null'), 0)"

    def _compare(self, field: str, sql_op: str, value: Any) -> str:
        # The type guard keeps comparisons within one type; a missing field has type NULL and never matches.
        # COALESCE turns SQL's NULL into false so that NOT and OR follow two-valued logic like the Python form.
        kind = _type_of(value)
        type_sql = self._lookup(field, "type")
        value_sql = self._lookup(field, "value")
        self.params.append(int(value) if kind == "bool" else value)
        return f"COALESCE({type_sql} IN {_SQL_TYPES[kind]} AND {value_sql} {sql_op} ?, 0)"

    def _any_of(self, field: str, values: list[Any]) -> str:
        """Whether the field equals one of ``values``: one JSON array parameter per type, however long the list."""
        parts = []
        for kind in ("bool", "number", "text"):
            group = [v for v in values if _type_of(v) == kind]
            if group:
                type_sql = self._lookup(field, "type")
                value_sql = self._lookup(field, "value")
                self.params.append(json.dumps(group, ensure_ascii=False))
                parts.append(f"COALESCE({type_sql} IN {_SQL_TYPES[kind]} "
                             f"AND {value_sql} IN (SELECT value FROM json_each(?)), 0)")
        return f"({' OR '.join(parts)})"


# -- Milvus ------------------------------------------------------------------------------------------------
#
# A Milvus backend stores each document's filter fields as JSON under typed keys: ``"s" + hex(name)`` holds a
# string, ``"i" + ...`` an integer, ``"f" + ...`` a float, ``"b" + ...`` a boolean, ``"p" + ...`` is true for any
# value that is not null, and ``"t"`` is always true. Every comparison then sees one type only (Milvus would compare
# ``1 == true``, or a string with a number, where the dialect does not), names of any characters become keys of
# hex digits (nothing in a field name reaches the expression), and an integer meets a float exactly (each side
# compared in its own type, so 2**53 + 1 never equals 2.0**53). Each comparison is guarded by ``exists``: Milvus
# gives a missing key SQL's NULL, and ``not`` of a NULL would not match, where the dialect's ``$not`` does.

_MILVUS_OP = {"eq": "==", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_PY_OP = {"eq": operator.eq, "gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


def milvus_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON a Milvus backend stores to filter one document (``fields``: its metadata with ``doc_id`` and
    ``source``), keyed as :func:`to_milvus` reads it (see the comment above this function)."""
    out: dict[str, Any] = {"t": True}
    for name, value in fields.items():
        if value is None:
            continue
        key = name.encode("utf-8").hex()
        out["p" + key] = True
        kind = _milvus_kind(value)
        if kind is not None:
            out[kind + key] = value
    return out


def _milvus_kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "b"
    if isinstance(value, int):
        return "i"
    if isinstance(value, float):
        return "f"
    return "s" if isinstance(value, str) else None


def to_milvus(flt: Mapping[str, Any], column: str = "fmeta") -> str:
    """Compile a filter to a Milvus boolean expression over the JSON field ``column`` written by
    :func:`milvus_fields`; same semantics as :func:`matches`.

    Values appear only as literals Milvus reads back exactly (strings quoted and escaped, floats by ``repr``);
    field names only as hex digits.

    Raises:
        FilterError: if the filter is malformed.
    """
    validate(flt)
    return _Milvus(column).filter(flt)


def milvus_string(text: str) -> str:
    """``text`` as a Milvus string literal: double-quoted, with backslash, quote and line breaks escaped."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


class _Milvus:
    """Compiles one validated filter (see the comment above :func:`milvus_fields`)."""

    def __init__(self, column: str) -> None:
        self.column = column
        self.true = f'(exists {column}["t"])'
        self.false = f'(not exists {column}["t"])'

    def filter(self, flt: Mapping[str, Any]) -> str:
        parts = []
        for key, value in flt.items():
            op = _top_op(key)
            if op == "not":
                parts.append(f"(not {self.filter(value)})")
            elif op in ("and", "or"):
                parts.append(_join([self.filter(v) for v in value], op))
            else:
                parts.append(self.field(key, value))
        return _join(parts, "and") if parts else self.true

    def field(self, field: str, cond: Any) -> str:
        present = f'(exists {self.column}["p{field.encode("utf-8").hex()}"])'
        parts = []
        for op, arg in _field_ops(field, cond):
            if op in _SETS:
                distinct = list({(_milvus_kind(v), v): v for v in arg}.values())
                hit = _join([self.compare(field, "eq", v) for v in distinct], "or")
                parts.append(hit if op == "in" else f"({present} and (not {hit}))")
            elif op == "ne":
                parts.append(f"({present} and (not {self.compare(field, 'eq', arg)}))")
            else:
                parts.append(self.compare(field, op, arg))
        return _join(parts, "and")

    def _term(self, kind: str, field: str, op: str | None, literal: str = "") -> str:
        """``field`` stored as ``kind`` compared with a literal; ``op=None``: it is stored as ``kind`` at all."""
        at = f'{self.column}["{kind}{field.encode("utf-8").hex()}"]'
        return f"(exists {at})" if op is None else f"(exists {at} and {at} {_MILVUS_OP[op]} {literal})"

    def compare(self, field: str, op: str, value: Any) -> str:
        if isinstance(value, bool):  # the booleans that compare true, as equalities (no order on them in Milvus)
            hits = [b for b in (False, True) if _PY_OP[op](b, value)]
            if len(hits) == 2:
                return self._term("b", field, None)
            return self._term("b", field, "eq", "true" if hits[0] else "false") if hits else self.false
        if isinstance(value, str):
            return self._term("s", field, op, milvus_string(value))
        parts = [p for p in (self._integers(field, op, value), self._floats(field, op, value)) if p is not None]
        return _join(parts, "or") if parts else self.false

    def _integers(self, field: str, op: str, value: int | float) -> str | None:
        """The integers ``x`` with ``x op value`` (exactly), or None for none."""
        if isinstance(value, float) and not value.is_integer():  # between two integers
            if op == "eq":
                return None
            op, value = ("lte", math.floor(value)) if op in ("lt", "lte") else ("gte", math.ceil(value))
        value = int(value)
        if value > _INT64[1] or value < _INT64[0]:  # beyond every stored integer (a large float)
            below = value > _INT64[1]
            return self._term("i", field, None) if (op in ("lt", "lte")) == below and op != "eq" else None
        if value == _INT64[0]:  # -2**63 has no literal of its own in Milvus's grammar: compare with -2**63 + 1
            if op in ("lt", "gte"):
                return None if op == "lt" else self._term("i", field, None)
            op, value = ("lt" if op in ("eq", "lte") else "gte"), value + 1
        return self._term("i", field, op, str(value))

    def _floats(self, field: str, op: str, value: int | float) -> str | None:
        """The floats ``x`` with ``x op value`` (exactly), or None for none."""
        as_float = float(value)
        if isinstance(value, float) or int(as_float) == value:
            return self._term("f", field, op, repr(as_float))
        # an integer no float equals: it lies strictly between two adjacent floats
        if as_float > value:
            low, high = math.nextafter(as_float, -math.inf), as_float
        else:
            low, high = as_float, math.nextafter(as_float, math.inf)
        if op == "eq":
            return None
        return self._term("f", field, "lte", repr(low)) if op in ("lt", "lte") else \
            self._term("f", field, "gte", repr(high))


# -- Python
# ------------------------------------------------------------------------------------------------------


def matches(flt: Filter, metadata: Mapping[str, Any]) -> bool:
    """Evaluate a filter (dict or callable) on one metadata dict in Python; same semantics as the SQL form."""
    if callable(flt):
        return bool(flt(metadata))
    validate(flt)  # report a malformed filter even where evaluation would short-circuit past it
    return _match(flt, metadata)


def _match(flt: Mapping[str, Any], md: Mapping[str, Any]) -> bool:
    """A validated filter on one metadata dict."""
    for key, value in flt.items():
        op = _top_op(key)
        if op == "not":
            if _match(value, md):
                return False
        elif op == "and":
            if not all(_match(v, md) for v in value):
                return False
        elif op == "or":
            if not any(_match(v, md) for v in value):
                return False
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
    for op, arg in _field_ops(field, cond):
        if op in _SETS:
            hit = any(_cmp(value, "eq", v) for v in arg)
            ok = hit if op == "in" else (value is not None and not hit)
        elif op == "ne":
            ok = value is not None and not _cmp(value, "eq", arg)
        else:
            ok = _cmp(value, op, arg)
        if not ok:
            return False
    return True
