"""Unfinished request heads: the bound on slowloris clients.

A client that sends its request head a few bytes at a time (slowloris) holds a
connection, and so one of the hub's ``max_connections`` slots, at almost no cost to
itself. Three bounds keep such clients from starving the others (docs/limits.md):

- a deadline: a head must be complete within ``timeout`` seconds, else 408 (the
  shell, :mod:`hub.transport.http`, arms it);
- at most ``max_per_client`` unfinished heads per client address;
- at most ``max_total`` unfinished heads on the hub.

Policy at either cap: the *oldest* unfinished head (the oldest of that address, at the
per-address cap) is answered 408 and closed, and the new one is read. A normal client's
head arrives in one or two packets, so it is never the oldest for long; a trickling one
is old by construction. Refusing the newcomer instead would hand the hub to whoever
filled the table first, which is exactly what a slowloris client does.

A head is unfinished from its first byte to its end. A connection that has sent
nothing yet is not counted (a burst of legitimate clients connecting at once would
evict each other); it has its own, shorter, wait (``http.HttpConnection``).

No clock and no socket: the shell calls :meth:`UnfinishedHeads.begin` and
:meth:`UnfinishedHeads.end`, and closes what :meth:`~UnfinishedHeads.begin` returns.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["OLDEST_OF_ADDRESS", "OLDEST_ON_HUB", "UnfinishedHeads"]

K = TypeVar("K", bound=Hashable)

#: The 408 message of a head closed at the per-address cap.
OLDEST_OF_ADDRESS = (
    "request head too slow: too many unfinished requests from your address, yours the oldest"
)
#: The 408 message of a head closed at the hub's cap.
OLDEST_ON_HUB = "request head too slow: too many unfinished requests on the hub, yours the oldest"


class UnfinishedHeads(Generic[K]):
    """The connections whose request head has begun and is not complete, oldest first.

    Args:
        timeout: seconds a head may take (kept here for the shell, which arms it).
        max_total: most unfinished heads on the hub.
        max_per_client: most unfinished heads of one client address.
    """

    def __init__(self, *, timeout: float, max_total: int, max_per_client: int) -> None:
        if max_total < 1 or max_per_client < 1:
            raise ValueError("the caps on unfinished heads must be at least 1")
        self.timeout = timeout
        self.max_total = max_total
        self.max_per_client = max_per_client
        #: Heads closed at each cap since the start, for ``/metrics``
        #: (``flux_request_heads_evicted_total``): ``client`` (one address's) and ``hub``.
        self.evicted_at: dict[str, int] = {"client": 0, "hub": 0}
        # Invariant: a key is in _all iff it is in _by_client[_all[key]]; dicts keep
        # insertion order, so the first key of each is the oldest head.
        self._all: dict[K, str] = {}
        self._by_client: dict[str, dict[K, None]] = {}

    @property
    def evicted(self) -> int:
        """Heads closed at either cap since the start."""
        return sum(self.evicted_at.values())

    def __len__(self) -> int:
        return len(self._all)

    def __contains__(self, key: object) -> bool:
        return key in self._all

    def of_client(self, address: str) -> int:
        """Unfinished heads of one address."""
        return len(self._by_client.get(address, ()))

    def begin(self, key: K, address: str) -> list[tuple[K, str]]:
        """Record that ``key``'s head began (a head it had already is replaced).

        Returns:
            The connections to close, oldest first, each with the message of its 408;
            they are no longer recorded. ``key`` itself is never among them.
        """
        self.end(key)
        self._all[key] = address
        mine = self._by_client.setdefault(address, {})
        mine[key] = None
        closed: list[tuple[K, str]] = []
        # Invariant: the newest head is last, and each cap is at least 1, so the
        # oldest one is never ``key``.
        while len(mine) > self.max_per_client:
            oldest = next(iter(mine))
            self.end(oldest)
            closed.append((oldest, OLDEST_OF_ADDRESS))
            self.evicted_at["client"] += 1
        while len(self._all) > self.max_total:
            oldest = next(iter(self._all))
            self.end(oldest)
            closed.append((oldest, OLDEST_ON_HUB))
            self.evicted_at["hub"] += 1
        return closed

    def end(self, key: K) -> None:
        """Forget ``key``'s head (complete, refused or closed); nothing if unknown."""
        address = self._all.pop(key, None)
        if address is None:
            return
        mine = self._by_client[address]
        del mine[key]
        if not mine:
            del self._by_client[address]
