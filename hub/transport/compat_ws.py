"""The Flux-compatible WebSocket session (no subprotocol), FLUX_COMPAT.md §2.

A connection holds a set of entity ids. Empty set: everything (a new connection gets
every update without subscribing, and unsubscribing the last id goes back to that, as
in Flux). ``*`` in the set: everything. Otherwise exact ids only. Invalid frames are
ignored. ``entity_deleted`` and ``metrics_update`` go to every connection.

Bound: at most ``max_ids`` ids per connection; further subscribes are ignored (and
logged), as Flux ignores frames it cannot use.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..core.index import Pattern
from ..wire.compat import parse_client_message

if TYPE_CHECKING:
    from ..engine.fanout import Fanout
    from .ws import WebSocket

__all__ = ["CompatSession"]

logger = logging.getLogger("hub.gateway")

DEFAULT_MAX_IDS = 10_000


class CompatSession:
    """State of one Flux-compatible WebSocket connection."""

    def __init__(
        self, ws: WebSocket, fanout: Fanout, max_ids: int = DEFAULT_MAX_IDS, scope: str | None = ""
    ) -> None:
        self.ws = ws
        self.fanout = fanout
        self.max_ids = max_ids
        self.ids: set[str] = set()
        #: Ids this connection may see start with this; None: not yet known (under
        #: private reads, until its token is checked) — it sees nothing meanwhile.
        self.scope = scope
        if scope is not None:
            fanout.add_compat(self, self.patterns())

    def activate(self, scope: str) -> None:
        """Start receiving, confined to ``scope`` (its token was checked)."""
        self.scope = scope
        self.fanout.add_compat(self, self.patterns())

    def sees(self, entity_id: str) -> bool:
        """Whether this connection may hear of ``entity_id`` at all."""
        return self.scope is not None and entity_id.startswith(self.scope)

    @property
    def receives_all(self) -> bool:
        return not self.ids or "*" in self.ids

    def patterns(self) -> list[Pattern]:
        """The index patterns this connection is registered under."""
        if self.scope is None:
            return []
        if self.receives_all:
            return [Pattern.prefix(self.scope)]
        return [Pattern.exact(i) for i in self.ids if i.startswith(self.scope)]

    def on_message(self, data: bytes, text: bool) -> None:
        if not text:
            return  # Flux ignores binary frames.
        command = parse_client_message(data)
        if command is None:
            return
        entity_id = command.entity_id
        if command.action == "subscribe":
            if entity_id in self.ids:
                return
            if len(self.ids) >= self.max_ids:
                logger.info(
                    "%s: subscription limit (%d) reached; ignored", self.ws.client, self.max_ids
                )
                return
            before = self.patterns() if self.receives_all or entity_id == "*" else None
            self.ids.add(entity_id)
        else:
            if entity_id not in self.ids:
                return
            before = self.patterns() if len(self.ids) == 1 or entity_id == "*" else None
            self.ids.discard(entity_id)
        if self.scope is None:
            return  # not receiving yet: activate() registers what the ids say then
        if before is not None:
            # Switching between "everything" and exact ids: re-register wholly.
            self.fanout.reindex_compat(self, before, self.patterns())
        elif command.action == "subscribe":
            self.fanout.reindex_compat(self, (), [Pattern.exact(entity_id)])
        else:
            self.fanout.reindex_compat(self, [Pattern.exact(entity_id)], ())

    def on_close(self) -> None:
        if self.scope is not None:
            self.fanout.remove_compat(self, self.patterns())

    # Compat output is bounded by the WebSocket's send-buffer cap alone.
    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass
