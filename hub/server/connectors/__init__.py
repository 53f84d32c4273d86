"""Connectors: external sources that become live entities (FLUX_COMPAT.md §1.10, §6).

Built as a hub extension (:class:`hub.server.app.Extension`): it mounts its routes under
``/api/connectors`` and runs its pollers in the hub's task group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..app import Hub

__all__ = ["ConnectorsExtension"]


class ConnectorsExtension:
    """Placeholder until the connectors land: no routes, nothing to run."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def mount(self) -> None:
        """Register routes with ``self.hub.rest.mount``."""

    async def run(self) -> None:
        """Long-lived work (pollers); returns at once when there is none."""
