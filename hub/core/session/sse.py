"""Which events of a Server-Sent Events stream carry an ``id:``, and which id.

An SSE stream is one native subscription; a reader reconnects with the last id it
saw (``Last-Event-ID``) and must get exactly what followed. So an id is the resume
cursor (docs/protocol.md "Cursors and resume"), and only an event after which that
cursor is exact carries one:

- ``subscribed`` of a live-from-now subscription, ``synced`` and ``checkpoint``: their
  cursor — unless merged deltas of a slow consumer are still waiting to go out
  (``behind``): those come later, so the id comes with the checkpoint that follows;
- a ``delta``/``deleted`` that is not ``conflated``, once there is a cursor (after a
  resume's start, or ``synced``): the cursor advanced to its position;
- ``reset``: an empty id, which clears the reader's; its view is being replaced, so a
  reconnection must start with a fresh snapshot, not resume;
- everything else (snapshot pages, deltas before the cursor is known): none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..cursor import format_cursor, parse_cursor

if TYPE_CHECKING:
    from ..cursor import Position

__all__ = ["EventIds"]


class EventIds:
    """The resume position of one SSE stream (see the module docstring).

    Args:
        cursor: the cursor it resumes from, or None (a snapshot, or live from now).
    """

    __slots__ = ("cursor",)

    def __init__(self, cursor: dict[int, Position] | None = None) -> None:
        #: Everything up to here that matches was sent; None while unknown.
        self.cursor = dict(cursor) if cursor is not None else None

    def at(self, cursor: str, behind: bool = False) -> str | None:
        """A ``subscribed``/``synced``/``checkpoint`` frame's cursor: the id to send."""
        if behind:
            return None
        self.cursor = parse_cursor(cursor)
        return cursor

    def delta(self, position: Position) -> str | None:
        """A delta sent (not conflated): the id to send with it."""
        cursor = self.cursor
        if cursor is None:
            return None
        upto = cursor.get(position.partition)
        if upto is None or position > upto:
            cursor[position.partition] = position
        return format_cursor(cursor)

    def reset(self) -> str:
        """The subscription starts over: the (empty) id that clears the reader's."""
        self.cursor = None
        return ""
