"""Event ids: UUIDv7 (RFC 9562 §5.7), as Flux generates them."""

from __future__ import annotations

import os
import time
import uuid

__all__ = ["uuid7"]


def uuid7(now_ms: int | None = None) -> str:
    """A new UUIDv7: 48 bits of Unix milliseconds, then 74 random bits."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(os.urandom(10), "big")
    value = value & ~(0xF << 76) | (0x7 << 76)  # version 7
    value = value & ~(0x3 << 62) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))
