"""The one timestamp format the hub emits: RFC 3339, UTC, millisecond precision.

Flux used two (``+00:00`` with nanoseconds over HTTP, ``Z`` over WebSocket); we use
``2026-02-25T20:04:27.638Z`` everywhere (FLUX_COMPAT.md, "Fix or extend"). Both of
Flux's forms parse; every client we know of parses ours.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

__all__ = ["format_ms", "parse_rfc3339_ms"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def format_ms(ms: int) -> str:
    """Format milliseconds since the epoch as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    seconds, millis = divmod(ms, 1000)
    t = time.gmtime(seconds)
    return (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
        f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{millis:03d}Z"
    )


def parse_rfc3339_ms(text: str) -> int:
    """Parse an RFC 3339 / ISO 8601 timestamp into milliseconds since the epoch.

    A timestamp without an offset is taken as UTC.

    Raises:
        ValueError: if ``text`` is not such a timestamp.
    """
    value = text.strip()
    if value.endswith(("z", "Z")):
        value = value[:-1] + "+00:00"
    # fromisoformat accepts at most 6 fraction digits before Python 3.12's wider
    # grammar; chrono (Flux) emits 9, so cut the extra precision off.
    head, dot, tail = value.partition(".")
    if dot:
        digits = len(tail) - len(tail.lstrip("0123456789"))
        if digits > 6:
            tail = tail[:6] + tail[digits:]
        value = f"{head}.{tail}"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    # Integer arithmetic: going through a float timestamp loses a millisecond now and
    # then, and int() would round times before 1970 the wrong way.
    return (parsed - _EPOCH) // _MILLISECOND
