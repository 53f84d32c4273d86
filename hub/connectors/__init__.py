"""Connectors: external sources that become live entities (FLUX_COMPAT.md §1.10, §6).

Built as a hub extension (:class:`hub.app.Extension`): it mounts its routes under
``/api/connectors`` and runs its pollers in the hub's task group. docs/connectors.md
describes the endpoints, the generic poller, what persists and the limits.

- :mod:`.base`: the :class:`Connector` interface (Flux's trait) and its data types;
- :mod:`.builtin`: Flux's catalogue: github (:mod:`.github`), and gmail, linkedin,
  calendar listed as not available;
- :mod:`.poller`: the generic HTTP poller;
- :mod:`.singer`: Singer taps — a run (:mod:`.singer_process`: install and child
  process; :mod:`.singer_spec`: configuration and record mapping; :mod:`.singer_api`:
  routes and status entries);
- :mod:`.scheduler`: one hub per job, through Redis leases;
- :mod:`.api`, :mod:`.oauth`: the routes;
- :mod:`.crypto`: AES-256-GCM for stored secrets.
"""

from __future__ import annotations

from .base import Connector, Credentials, FetchResult, OAuthConfig, connector_event
from .builtin import BUILTIN_NAMES
from .extension import ConnectorsExtension

__all__ = [
    "BUILTIN_NAMES",
    "Connector",
    "ConnectorsExtension",
    "Credentials",
    "FetchResult",
    "OAuthConfig",
    "connector_event",
]
