"""`json.dumps(obj, indent=1)`, byte for byte, at C-encoder speed for lists of rows.

`analyze --json` writes an indented document whose bulk is lists of flat rows (finding rows,
block history, isolation windows: tens of thousands of dicts with the same keys).  CPython's C
encoder does not indent, so `json.dumps(..., indent=1)` falls back to the pure-Python encoder,
which cost 0.74 s of a 24 MB document (the C encoder without indent: 0.30 s).  Here a list of
dicts that share their keys is written column by column: each column's scalars are encoded by
the C helpers (`encode_basestring_ascii`, `int.__repr__`, `float.__repr__` through `map`), and
each row is one `%` formatting of a template holding the keys and the indentation.  Anything
else takes the plain recursive path.  The output equals `json.dumps(obj, indent=1)` with the
defaults (ensure_ascii, allow_nan, no sort_keys, no default): tests/report/test_jsonfast.py
checks that on generated documents and every committed capture's document.
"""
from __future__ import annotations

import json.encoder as _enc
from operator import itemgetter
from typing import Any

_str = _enc.encode_basestring_ascii        # the C function when the _json accelerator is built
_INF = float("inf")
_MIN_ROWS = 8                              # below this the generic path is as fast


def _float(o: float) -> str:
    if o != o:
        return "NaN"
    if o == _INF:
        return "Infinity"
    if o == -_INF:
        return "-Infinity"
    return float.__repr__(o)


def _key(k: Any) -> str:
    """A dict key as json writes it (str; float/int/bool/None converted; anything else TypeError)."""
    if isinstance(k, str):
        return _str(k)
    if k is True:
        return '"true"'
    if k is False:
        return '"false"'
    if k is None:
        return '"null"'
    if isinstance(k, float):
        return _str(_float(k))
    if isinstance(k, int):
        return _str(int.__repr__(k))
    raise TypeError(f"keys must be str, int, float, bool or None, not {k.__class__.__name__}")


def _scalar(o: Any) -> str | None:
    """The JSON of a scalar, None for a container."""
    if isinstance(o, str):
        return _str(o)
    if o is None:
        return "null"
    if o is True:
        return "true"
    if o is False:
        return "false"
    if isinstance(o, int):
        return int.__repr__(o)
    if isinstance(o, float):
        return _float(o)
    if isinstance(o, (list, tuple, dict)):
        return None
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


def _column(vals: list, level: int) -> list[str]:
    """Every value of one column, encoded; C helpers where the column has one scalar type."""
    types = set(map(type, vals))
    if types == {str}:
        return list(map(_str, vals))
    if types == {int}:
        return list(map(int.__repr__, vals))
    if types <= {float, int}:
        return [int.__repr__(v) if type(v) is int else _float(v) for v in vals]
    return [_encode(v, level) for v in vals]


def _rows(items: list, level: int) -> str | None:
    """A list of dicts with one key order, column-wise (None when the list is not that)."""
    first = items[0]
    if not isinstance(first, dict) or not first:
        return None
    keys = tuple(first)
    if set(map(type, items)) != {dict} or not all(map(keys.__eq__, map(tuple, items))):
        return None
    ind_row = "\n" + " " * (level + 1)
    ind_key = "\n" + " " * (level + 2)
    template = "{" + ",".join(ind_key + _key(k).replace("%", "%%") + ": %s" for k in keys) + ind_row + "}"
    if len(keys) == 1:
        cols = [_column([d[keys[0]] for d in items], level + 2)]
    else:   # rows -> columns in C: itemgetter picks each row's values, zip transposes
        cols = [_column(list(c), level + 2) for c in zip(*map(itemgetter(*keys), items))]
    body = ("," + ind_row).join(map(template.__mod__, zip(*cols)))
    return "[" + ind_row + body + "\n" + " " * level + "]"


def _encode(o: Any, level: int) -> str:
    s = _scalar(o)
    if s is not None:
        return s
    ind = "\n" + " " * (level + 1)
    if isinstance(o, dict):
        if not o:
            return "{}"
        return ("{" + ",".join(ind + _key(k) + ": " + _encode(v, level + 1) for k, v in o.items())
                + "\n" + " " * level + "}")
    if not o:
        return "[]"
    if len(o) >= _MIN_ROWS:
        fast = _rows(o if isinstance(o, list) else list(o), level)
        if fast is not None:
            return fast
    return "[" + ",".join(ind + _encode(v, level + 1) for v in o) + "\n" + " " * level + "]"


def dumps_indent1(obj: Any) -> str:
    """Exactly `json.dumps(obj, indent=1)`."""
    return _encode(obj, 0)
