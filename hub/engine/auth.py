"""Reading credentials from requests, the same way on every endpoint.

Flux parses bearer tokens differently per endpoint (case-insensitive and trimmed for
ingestion and connectors, strict ``Bearer `` elsewhere). FLUX_COMPAT.md decides: the
same everywhere — the lenient way, which accepts everything the strict one did. Each
endpoint keeps its own Flux error strings.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import Enum

__all__ = ["BearerProblem", "constant_time_equal", "hash_token", "read_bearer"]


class BearerProblem(Enum):
    """Why a request carries no usable bearer token."""

    MISSING = "missing"
    MALFORMED = "malformed"
    EMPTY = "empty"


def read_bearer(header: str | None) -> str | BearerProblem:
    """The token of an ``Authorization: Bearer <token>`` header, or what is wrong.

    The scheme is case-insensitive; the token is trimmed.
    """
    if header is None:
        return BearerProblem.MISSING
    scheme, space, token = header.lstrip().partition(" ")
    if scheme.lower() != "bearer":
        return BearerProblem.MALFORMED
    token = token.strip()
    if not space or not token:
        return BearerProblem.EMPTY if scheme and space else BearerProblem.MALFORMED
    return token


def hash_token(token: str) -> str:
    """How a token is stored: SHA-256, hex. Tokens are random UUIDs (122 bits), so a
    fast hash is enough; no token is ever stored or logged in clear."""
    return hashlib.sha256(token.encode()).hexdigest()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
