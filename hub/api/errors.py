"""One mapping from the exceptions handlers raise to HTTP responses.

Handlers raise; :func:`response_for` is the only place that decides the status, the
body and the headers of an error (the WebSocket counterpart is
:func:`hub.errors.close_code_for`). Every body is ``{"error": <Flux's message>,
"code": <slug>}``: ``error`` is what Flux clients read, ``code`` a stable kind a
program may branch on (docs/compat.md; the slugs are ``ERROR_CODES`` of
:mod:`hub.transport.responses`, plus ``invalid_event`` here).
"""

from __future__ import annotations

from ..engine.tenancy import AuthFailure, RateLimited
from ..errors import Closed, InvalidEvent, LogUnavailable, Overloaded, ProtocolError
from ..transport.http import Response, error_response
from .router import MethodNotAllowed

__all__ = ["INVALID_EVENT", "response_for"]

#: The ``code`` of a 400 for an event that breaks an envelope rule (FLUX_COMPAT.md §1.2).
INVALID_EVENT = "invalid_event"


def response_for(exc: Exception) -> Response | None:
    """The response that reports ``exc`` to an HTTP client; None for a bug (re-raise).

    - :class:`MethodNotAllowed`: 405 with ``Allow`` (RFC 9110 §15.5.6);
    - :class:`AuthFailure`: its 400/401/403 and Flux's message;
    - :class:`RateLimited`: 429 with ``Retry-After``;
    - :class:`ProtocolError`: its status (400, 404, 409, 413, 422); an
      :class:`InvalidEvent` at 400 has the code ``invalid_event``;
    - :class:`Overloaded`, :class:`LogUnavailable`, :class:`Closed`: 503 with
      ``Retry-After: 1``: nothing was applied, the client may retry.
    """
    if isinstance(exc, MethodNotAllowed):
        return error_response(405, str(exc), [(b"allow", exc.allowed.encode())])
    if isinstance(exc, AuthFailure):
        return error_response(exc.status, exc.message)
    if isinstance(exc, RateLimited):
        return error_response(
            429, "rate limit exceeded", [(b"retry-after", b"%d" % exc.retry_after)]
        )
    if isinstance(exc, ProtocolError):
        code = INVALID_EVENT if isinstance(exc, InvalidEvent) and exc.status == 400 else None
        return error_response(exc.status, str(exc), code=code)
    if isinstance(exc, Overloaded):
        return error_response(503, str(exc), [(b"retry-after", b"1")])
    if isinstance(exc, LogUnavailable | Closed):
        return error_response(503, f"storage unavailable: {exc}", [(b"retry-after", b"1")])
    return None
