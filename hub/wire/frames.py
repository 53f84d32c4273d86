"""Frames a client sends on the native protocol (``flux.v1``, ``flux.v1.msgpack``).

One pydantic model per frame type, each with a ``Literal`` ``type`` tag, joined into
one discriminated union; :data:`CLIENT_FRAMES` (its TypeAdapter) is built once, here.
docs/protocol.md documents every frame with examples. Fields are strict: ``"yes"`` is
not a boolean and ``"5"`` not a number, so a client's mistake is named, not guessed
at. Server frames are :mod:`hub.wire.replies` (deltas: :mod:`hub.wire.native`, as
bytes, for speed).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)

__all__ = [
    "CLIENT_FRAMES",
    "AuthFrame",
    "ClientFrame",
    "Filter",
    "GetFrame",
    "ListFrame",
    "PublishFrame",
    "Ref",
    "SubscribeFrame",
    "UnsubscribeFrame",
    "describe_error",
    "ref_of",
]

#: A client's reference for a request, echoed in the reply: a string or an integer
#: (strictly: ``true`` or ``1.0`` are not references).
Ref = StrictStr | StrictInt | None

#: Most items a frame may list (ids of a get, patterns of a filter, properties).
MAX_ITEMS = 10_000


class _Frame(BaseModel):
    # Unknown fields are ignored, so newer clients can talk to older hubs.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class PublishFrame(_Frame):
    """Publish one or many events; answered by one ``ack`` with a result per event.

    Each event is a Flux envelope (``timestamp`` optional) and may carry
    ``if_version``: apply only if the entity is at that version (0: must not exist),
    and ``ttl``: a lease in seconds (hub/core/lease.py).
    """

    type: Literal["publish"]
    ref: Ref = None
    events: list[Any] = Field(min_length=1)


class Filter(_Frame):
    """Which entities a subscription covers: the union of everything given."""

    all: bool = False
    ids: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    prefixes: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    namespaces: list[str] = Field(default_factory=list, max_length=MAX_ITEMS)
    globs: list[str] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _not_empty(self) -> Filter:
        if not (self.all or self.ids or self.prefixes or self.namespaces or self.globs):
            raise ValueError("filter matches nothing: give all, ids, prefixes, namespaces or globs")
        return self


class SubscribeFrame(_Frame):
    """Start a subscription named ``sub`` (unique on the connection)."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, populate_by_name=True)

    type: Literal["subscribe"]
    ref: Ref = None
    sub: str = Field(min_length=1, max_length=128)
    filter: Filter
    #: Only deltas touching these properties, carrying only these; None: all.
    properties: list[str] | None = Field(default=None, max_length=MAX_ITEMS)
    #: Send the current state of every matching entity first.
    snapshot: bool = False
    #: Resume after this cursor instead (exactly the deltas missed).
    from_: str | None = Field(default=None, alias="from")
    #: Also send deltas of events that changed nothing.
    touches: bool = False
    #: A value filter (hub/core/where.py), checked when the subscription is planned.
    where: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_start(self) -> SubscribeFrame:
        if self.snapshot and self.from_ is not None:
            raise ValueError("give either snapshot or from, not both")
        return self


class UnsubscribeFrame(_Frame):
    type: Literal["unsubscribe"]
    ref: Ref = None
    sub: str = Field(min_length=1, max_length=128)


class AuthFrame(_Frame):
    """Speak for a namespace from now on (instead of, or after, the upgrade's token)."""

    type: Literal["auth"]
    ref: Ref = None
    token: str = Field(min_length=1, max_length=4096)


class GetFrame(_Frame):
    """Read entities by id; answered by ``entities``."""

    type: Literal["get"]
    ref: Ref = None
    ids: list[str] = Field(min_length=1, max_length=1000)


class ListFrame(_Frame):
    """Read a page of entities by prefix or namespace; answered by ``entities``."""

    type: Literal["list"]
    ref: Ref = None
    prefix: str = ""
    namespace: str | None = None
    limit: int = Field(default=100, ge=1, le=10_000)
    cursor: str | None = None
    #: A value filter (hub/core/where.py).
    where: dict[str, Any] | None = None


ClientFrame = Annotated[
    PublishFrame | SubscribeFrame | UnsubscribeFrame | GetFrame | ListFrame | AuthFrame,
    Field(discriminator="type"),
]

CLIENT_FRAMES: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)


def describe_error(exc: ValidationError) -> str:
    """One line naming what is wrong with a frame."""
    error = exc.errors(include_url=False)[0]
    kind = error["type"]
    if kind == "union_tag_invalid":
        tag = error.get("ctx", {}).get("tag", "?")
        return f"unknown frame type {tag!r}"
    if kind == "union_tag_not_found":
        return "frame has no 'type'"
    location = ".".join(str(part) for part in error["loc"][1:]) or "frame"
    if kind == "model_attributes_type" or kind == "model_type":
        return f"{location} must be an object"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{location}: {message}"


def ref_of(value: Any) -> Ref:
    """The client reference of a frame that failed validation, if it has a usable one."""
    if isinstance(value, dict):
        ref = value.get("ref")
        if isinstance(ref, str | int) and not isinstance(ref, bool):
            return ref
    return None
