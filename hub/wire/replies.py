"""The frames the hub sends on the native protocol, typed like the client frames.

Each is a frozen dataclass whose :meth:`value` is the frame as docs/protocol.md writes
it, ready for a :class:`~hub.wire.codec.Codec`. Deltas are not here: they are the hot
path and are encoded once per subscription name by :class:`hub.wire.native.DeltaEncoder`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from .frames import Ref

__all__ = [
    "Ack",
    "Authenticated",
    "Checkpoint",
    "Entities",
    "ErrorReply",
    "Reset",
    "ServerFrame",
    "Snapshot",
    "Subscribed",
    "Synced",
    "Unsubscribed",
]


@dataclass(frozen=True, slots=True)
class Ack:
    """The per-event results of one ``publish``, in its events' order."""

    ref: Ref
    results: list[dict[str, Any] | None]

    def value(self) -> dict[str, Any]:
        return {"type": "ack", "ref": self.ref, "results": self.results}


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A refused request (``ref``), or a subscription that ended (``sub``)."""

    ref: Ref
    code: str
    message: str
    sub: str | None = None

    def value(self) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "type": "error",
            "ref": self.ref,
            "code": self.code,
            "message": self.message,
        }
        if self.sub is not None:
            frame["sub"] = self.sub
        return frame


@dataclass(frozen=True, slots=True)
class Authenticated:
    """An ``auth`` frame's token was accepted."""

    ref: Ref
    namespace: str | None
    admin: bool

    def value(self) -> dict[str, Any]:
        return {
            "type": "authenticated",
            "ref": self.ref,
            "namespace": self.namespace,
            "admin": self.admin,
        }


@dataclass(frozen=True, slots=True)
class Entities:
    """The answer to ``get`` (with ``missing``) or to ``list`` (with ``next``)."""

    ref: Ref
    entities: list[dict[str, Any]]
    missing: list[str] | None = None
    next: str | None = None

    def value(self) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "entities", "ref": self.ref, "entities": self.entities}
        if self.missing is not None:
            frame["missing"] = self.missing
        else:
            frame["next"] = self.next
        return frame


@dataclass(frozen=True, slots=True)
class Subscribed:
    """A subscription was registered; ``cursor`` only when it is live from here."""

    ref: Ref
    sub: str
    cursor: str | None = None

    def value(self) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "subscribed", "ref": self.ref, "sub": self.sub}
        if self.cursor is not None:
            frame["cursor"] = self.cursor
        return frame


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    ref: Ref
    sub: str

    def value(self) -> dict[str, Any]:
        return {"type": "unsubscribed", "ref": self.ref, "sub": self.sub}


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One page of a subscription's snapshot; the last one is empty with ``done``."""

    sub: str
    entities: list[dict[str, Any]]
    done: bool

    def value(self) -> dict[str, Any]:
        return {"type": "snapshot", "sub": self.sub, "entities": self.entities, "done": self.done}


@dataclass(frozen=True, slots=True)
class Synced:
    """The snapshot or catch-up is complete: live from ``cursor`` on."""

    sub: str
    cursor: str

    def value(self) -> dict[str, Any]:
        return {"type": "synced", "sub": self.sub, "cursor": self.cursor}


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Everything up to ``cursor`` was sent (or conflated into what was sent)."""

    sub: str
    cursor: str

    def value(self) -> dict[str, Any]:
        return {"type": "checkpoint", "sub": self.sub, "cursor": self.cursor}


@dataclass(frozen=True, slots=True)
class Reset:
    """The subscription starts over with a snapshot, and why."""

    sub: str
    reason: str

    def value(self) -> dict[str, Any]:
        return {"type": "reset", "sub": self.sub, "reason": self.reason}


#: Every server frame except deltas.
ServerFrame: TypeAlias = (
    Ack
    | ErrorReply
    | Authenticated
    | Entities
    | Subscribed
    | Unsubscribed
    | Snapshot
    | Synced
    | Checkpoint
    | Reset
)
