"""``GET /api/stream``: a subscription as Server-Sent Events (docs/sse.md).

The query carries what a native ``subscribe`` frame carries (docs/protocol.md), as
parameters: the filter (``ids``, ``prefixes``, ``namespaces``, ``globs`` — each
repeatable — and ``all``), ``properties`` (repeatable), ``touches``, ``snapshot``
(default true here), ``from`` and ``where`` (JSON), and ``sub`` (the name frames
carry; default ``stream``). A reader resuming sends ``Last-Event-ID`` (or
``lastEventId=`` in the query, for clients that cannot set headers), which wins over
``from`` and ``snapshot``: a browser reconnects to the same URL with the header.

Everything is checked before the stream starts, so a bad request is a 400 naming the
parameter, not an event. Auth is that of REST reads (``Authorization: Bearer``), plus
``?token=`` for ``EventSource``, which cannot set headers (docs/security.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from pydantic import ValidationError

from ..core.cursor import parse_cursor
from ..core.session.subscribe import plan_subscription
from ..engine.auth import read_bearer
from ..engine.listing import optional_where
from ..engine.tenancy import AuthFailure
from ..errors import BadRequest
from ..transport.http import Response
from ..wire.frames import SubscribeFrame
from ..wire.jsonutil import JSONError, loads
from ..wire.replies import ErrorReply
from .router import Route

if TYPE_CHECKING:
    from ..engine.tenancy import Tenancy
    from ..transport.http import Request
    from ..transport.sse import SseStreams

__all__ = ["STREAM_PATH", "StreamApi", "subscribe_frame"]

STREAM_PATH = "/api/stream"
#: Parameters that may be repeated (each occurrence adds one item).
LISTS = ("ids", "prefixes", "namespaces", "globs", "properties")
#: Parameters given at most once.
SINGLE = ("sub", "all", "snapshot", "touches", "from", "where", "lastEventId", "token")
_BOOLEANS = {"true": True, "1": True, "": True, "false": False, "0": False}

_HEADERS = [
    (b"cache-control", b"no-cache, no-transform"),
    # nginx and others buffer responses unless told not to.
    (b"x-accel-buffering", b"no"),
]


def subscribe_frame(query_string: str, last_event_id: str | None) -> SubscribeFrame:
    """The ``subscribe`` frame a stream's query asks for.

    Raises:
        BadRequest: an unknown or repeated parameter, or a value the frame refuses;
            the message names the parameter.
    """
    lists: dict[str, list[str]] = {name: [] for name in LISTS}
    single: dict[str, str] = {}
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        if name in lists:
            lists[name].append(value)
        elif name in SINGLE:
            if name in single:
                raise BadRequest(f"query parameter {name!r} given twice")
            single[name] = value
        else:
            known = ", ".join((*LISTS, *SINGLE))
            raise BadRequest(f"unknown query parameter {name!r}; known: {known}")
    raw: dict[str, Any] = {"type": "subscribe", "sub": single.get("sub", "stream")}
    raw["filter"] = {k: v for k, v in lists.items() if k != "properties" and v}
    if "all" in single:
        raw["filter"]["all"] = _boolean(single, "all")
    if lists["properties"]:
        raw["properties"] = lists["properties"]
    raw["touches"] = _boolean(single, "touches", False)
    raw["snapshot"] = _boolean(single, "snapshot", True)
    resume = last_event_id or single.get("lastEventId") or single.get("from")
    if resume:
        _check_cursor(resume, "Last-Event-ID" if last_event_id else _resume_name(single))
        raw["from"] = resume
        raw["snapshot"] = False
    if "where" in single:
        try:
            raw["where"] = loads(single["where"])
        except JSONError as exc:
            raise BadRequest(f"query parameter 'where' is not JSON: {exc}") from None
    try:
        return SubscribeFrame.model_validate(raw)
    except ValidationError as exc:
        raise BadRequest(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    """What is wrong, naming the query parameter (the frame's field it became)."""
    error = exc.errors(include_url=False)[0]
    message = str(error["msg"]).removeprefix("Value error, ")
    loc = [part for part in error["loc"] if part != "filter"]
    if not loc:
        return message
    name = {"from": "from"}.get(str(loc[0]), str(loc[0]))
    if len(loc) > 1 and isinstance(loc[1], int):
        return f"query parameter {name!r} (value {loc[1] + 1}): {message}"
    return f"query parameter {name!r}: {message}"


def _boolean(single: dict[str, str], name: str, default: bool = True) -> bool:
    text = single.get(name)
    if text is None:
        return default
    found = _BOOLEANS.get(text.lower())
    if found is None:
        raise BadRequest(f"query parameter {name!r} must be true or false, not {text!r}")
    return found


def _resume_name(single: dict[str, str]) -> str:
    return (
        "query parameter 'lastEventId'" if single.get("lastEventId") else "query parameter 'from'"
    )


def _check_cursor(text: str, source: str) -> None:
    try:
        parse_cursor(text)
    except ValueError as exc:
        raise BadRequest(f"{source} is not a cursor: {exc}") from None


class StreamApi:
    """The handler of ``GET /api/stream``."""

    def __init__(self, streams: SseStreams, tenancy: Tenancy) -> None:
        self.streams = streams
        self.tenancy = tenancy

    def routes(self) -> list[Route]:
        return [Route(STREAM_PATH, {"GET": self.stream})]

    async def stream(self, request: Request) -> Response:
        """Check the request, then stream (hub/transport/sse.py)."""
        last_event_id = request.headers.get("last-event-id") or None
        frame = subscribe_frame(request.query_string, last_event_id)
        optional_where(frame.where)  # a WhereError is a 400 naming the part
        scope, token = await self._scope(request)
        plan = plan_subscription(frame, (), 0, 1, scope)
        if isinstance(plan, ErrorReply):
            raise (
                AuthFailure(403, plan.message)
                if plan.code == "forbidden"
                else BadRequest(plan.message)
            )
        session = self.streams.session(frame, scope, token)
        return Response(
            200, content_type=b"text/event-stream", headers=list(_HEADERS), producer=session.run
        )

    async def _scope(self, request: Request) -> tuple[str, str | None]:
        """What this reader may see ("" = all), as REST reads decide it, and its
        token: the bearer header, else ``?token=`` (EventSource sets no header)."""
        if not self.tenancy.private_reads:
            return "", None
        header = request.headers.get("authorization")
        token: str | None
        if header is not None:
            bearer = read_bearer(header)
            token = bearer if isinstance(bearer, str) else None
        else:
            token = request.query.get("token") or None
        scope = (await self.tenancy.principal(token)).read_prefix
        if scope is None:
            given = header is not None or "token" in request.query
            raise AuthFailure(401, "Invalid token" if given else "Authorization token not provided")
        return scope, token
