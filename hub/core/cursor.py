"""Positions in the delta log, and cursors made of them.

A delta's *position* is its Redis stream id in its partition's delta log, written
``<ms>-<seq>`` for partition 0 and ``<p>:<ms>-<seq>`` for partition ``p`` > 0, so that a
single-partition hub (the default) shows plain stream ids.

A *cursor* is one position per partition, comma-separated (``"1700-0,1:1699-3"``): where
a subscriber is in every partition. Resuming from a cursor delivers exactly the deltas
after it. A partition missing from a cursor is not resumable.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Position", "format_cursor", "parse_cursor", "parse_stream_id"]


def parse_stream_id(text: str) -> tuple[int, int]:
    """``"1700-3"`` -> ``(1700, 3)``.

    Raises:
        ValueError: not a stream id.
    """
    ms, dash, seq = text.partition("-")
    if not dash or not (ms + seq).isascii() or not ms.isdigit() or not seq.isdigit():
        raise ValueError(f"not a stream id: {text!r}")
    return int(ms), int(seq)


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A point in one partition's delta log. Ordered within a partition."""

    partition: int
    ms: int
    seq: int

    @classmethod
    def of(cls, partition: int, stream_id: str) -> Position:
        ms, seq = parse_stream_id(stream_id)
        return cls(partition, ms, seq)

    @classmethod
    def parse(cls, text: str) -> Position:
        """Parse ``<ms>-<seq>`` or ``<p>:<ms>-<seq>``.

        Raises:
            ValueError: malformed.
        """
        head, colon, tail = text.partition(":")
        if not colon:
            return cls.of(0, text)
        if not head.isascii() or not head.isdigit():
            raise ValueError(f"not a position: {text!r}")
        return cls.of(int(head), tail)

    @property
    def stream_id(self) -> str:
        return f"{self.ms}-{self.seq}"

    def __str__(self) -> str:
        if self.partition == 0:
            return self.stream_id
        return f"{self.partition}:{self.stream_id}"


def parse_cursor(text: str) -> dict[int, Position]:
    """Parse a cursor into partition -> position.

    Raises:
        ValueError: malformed, or a partition given twice.
    """
    result: dict[int, Position] = {}
    for part in text.split(","):
        position = Position.parse(part.strip())
        if position.partition in result:
            raise ValueError(f"partition {position.partition} appears twice in {text!r}")
        result[position.partition] = position
    return result


def format_cursor(positions: dict[int, Position]) -> str:
    """The cursor text of partition -> position, in partition order."""
    return ",".join(str(positions[p]) for p in sorted(positions))
