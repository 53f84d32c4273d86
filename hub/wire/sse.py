"""Server-Sent Events, the text format (WHATWG HTML §9.2, "event stream"), without I/O.

An event is ``event:``, ``id:`` and ``data:`` lines and a blank line; a comment line
starts with ``:`` (heartbeats); ``retry:`` tells a browser how long to wait before
reconnecting. The hub's events carry one JSON object each (a native frame): compact
JSON has no line break, but data with one is split into several ``data:`` lines, which
a reader joins back with ``\\n``, so any text survives.
"""

from __future__ import annotations

import re

__all__ = ["sse_comment", "sse_event", "sse_retry"]

# A field value ends at CR, LF or CRLF (§9.2.5); an id with NUL is ignored by readers.
_BREAKS = re.compile(rb"\r\n|\r|\n")
_UNSAFE_ID = re.compile(r"[\r\n\x00]")


def sse_event(event: str, data: bytes, event_id: str | None = None) -> bytes:
    """One event. ``event_id``: None for no ``id:`` line; ``""`` for an empty one,
    which clears the reader's last event id (it will reconnect without one).

    Raises:
        ValueError: an event name or id with CR, LF or NUL (it would split the event).
    """
    if _UNSAFE_ID.search(event) or (event_id is not None and _UNSAFE_ID.search(event_id)):
        raise ValueError("an event name or id holds CR, LF or NUL")
    parts = [b"event: ", event.encode(), b"\n"]
    if event_id is not None:
        parts += [b"id: ", event_id.encode(), b"\n"] if event_id else [b"id:\n"]
    for line in _BREAKS.split(data):
        parts += [b"data: ", line, b"\n"]
    parts.append(b"\n")
    return b"".join(parts)


def sse_comment(text: str = "") -> bytes:
    """A comment (ignored by readers): keeps an idle connection and its proxies alive."""
    return (
        b"".join(
            b":" + (b" " + line if line else b"") + b"\n" for line in _BREAKS.split(text.encode())
        )
        + b"\n"
    )


def sse_retry(milliseconds: int) -> bytes:
    """Advice to a reader: wait this long before reconnecting."""
    return b"retry: %d\n\n" % milliseconds
