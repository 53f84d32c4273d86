"""JSON helpers: the one place that decides how JSON is parsed and encoded.

orjson is used throughout: it parses numbers the way serde_json (Flux) does (integers
beyond 64 bits become floats, NaN and Infinity are refused) and is several times faster
than the standard library.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

__all__ = ["JSONEncodeError", "JSONError", "canonical", "dumps", "loads", "serde_message"]

JSONError = orjson.JSONDecodeError
#: What :func:`dumps` and :func:`canonical` raise for a value JSON cannot hold as
#: given (a key that is not a string) or that nests deeper than orjson recurses (254
#: levels, fewer than :func:`loads` accepts).
JSONEncodeError = orjson.JSONEncodeError

_SORTED = orjson.OPT_SORT_KEYS


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON. Raises :data:`JSONError` with orjson's message."""
    return orjson.loads(data)


def dumps(value: Any) -> bytes:
    """Encode a value as compact JSON, keeping object key order."""
    return orjson.dumps(value)


def canonical(value: Any) -> bytes:
    """Encode a property value canonically: compact, object keys sorted.

    Two values that are the same JSON encode to the same bytes, which is how the
    reducers (Python and Lua) decide whether a property changed.
    """
    return orjson.dumps(value, option=_SORTED)


_POSITION = re.compile(r":?\s*line (\d+) column (\d+) \(char \d+\)$")


def serde_message(exc: orjson.JSONDecodeError) -> str:
    """Phrase a parse error the way serde_json does: ``<what> at line L column C``."""
    text = str(exc)
    match = _POSITION.search(text)
    if match is None:
        return text
    return f"{text[: match.start()]} at line {match.group(1)} column {match.group(2)}"
