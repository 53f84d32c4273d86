"""WebSocket data frames as the hub sends them (RFC 6455 §5.2).

Server frames are never masked and the hub negotiates no extension, so one encoding of
a frame fits every connection: fan-out encodes once and writes the same bytes to all.
"""

from __future__ import annotations

import struct

__all__ = ["encode_frame"]


def encode_frame(payload: bytes, text: bool = True) -> bytes:
    """One unmasked, unfragmented data frame."""
    first = 0x81 if text else 0x82
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload
