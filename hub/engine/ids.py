"""Event ids: UUIDv7 (RFC 9562 §5.7), as Flux generates them.

Made from a PRNG seeded from the OS (and reseeded in a forked child): ``os.urandom``
plus ``uuid.UUID`` cost ~2.5 µs per id, a tenth of the hub's CPU per event in batch
ingest (bench/RESULTS.md). Event ids need uniqueness, not secrecy.
"""

from __future__ import annotations

import os
import random
import time

__all__ = ["uuid7"]

_random = random.Random(os.urandom(32))


def _reseed() -> None:
    _random.seed(os.urandom(32))


os.register_at_fork(after_in_child=_reseed)


def uuid7(now_ms: int | None = None) -> str:
    """A new UUIDv7: 48 bits of Unix milliseconds, then 74 random bits."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    rand = _random.getrandbits(74)
    value = (
        (ms & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | (rand >> 62) << 64
        | 0x2 << 62
        | (rand & (1 << 62) - 1)
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
