"""The lease sweeper: every hub deletes, now and then, the entities whose lease ran out.

Every hub runs one :class:`ExpirySweeper`. Each sweep asks Redis (``expire.lua``, one
atomic call per partition) to delete what is due by Redis's clock, so any number of
hubs may sweep one Redis: an entity expires once, whichever hub's sweep gets there
first, and subscribers of every hub hear of it through the delta log like any
deletion. Nothing is kept in the hub: a hub started after a deadline passed (or after
every hub was down) sweeps it at its first sweep.

Bound: one sweep deletes at most ``sweep_max`` entities per partition (the ids of
their tombstones are made here, in chunks of at most that); a larger backlog drains
over the following sweeps, one every ``sweep_interval`` seconds. An entity is
therefore deleted between its deadline and about one interval after it, unless a
backlog holds it longer (``flux_lease_backlog`` in ``/metrics``).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import anyio

from ..errors import LogUnavailable
from .ids import uuid7

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..config import LeaseSettings
    from ..store.expiry import LeaseTable
    from .metrics import HubMetrics

__all__ = ["ExpirySweeper"]

logger = logging.getLogger("hub.leases")

#: Tombstone ids sent with a sweep call when the last one left nothing due: the ids
#: are made for nothing unless something is due, so the first call takes a few.
FIRST_CALL_IDS = 32


class ExpirySweeper:
    """Sweeps the leases of every partition, every ``settings.sweep_interval`` s.

    Run :meth:`run` in a task group.
    """

    def __init__(
        self,
        leases: LeaseTable,
        settings: LeaseSettings,
        metrics: HubMetrics,
        clock: Callable[[], float],
    ) -> None:
        self.leases = leases
        self.partitions = leases.keys.partitions
        self.interval = settings.sweep_interval
        self.max_per_sweep = settings.sweep_max
        self.metrics = metrics
        self.clock = clock
        #: Per partition, entities due after the last call (sizes the next call).
        self._due = [0] * self.partitions
        self._failing = False

    async def run(self) -> None:
        """Sweep until cancelled; a Redis failure is logged and the next sweep tries
        again."""
        while True:
            await anyio.sleep(self.interval)
            try:
                await self.sweep()
            except LogUnavailable as exc:
                if not self._failing:
                    logger.warning(
                        "lease sweep failed (retrying every %.1f s): %s", self.interval, exc
                    )
                self._failing = True
            else:
                if self._failing:
                    logger.info("lease sweeps work again")
                self._failing = False

    async def sweep(self) -> int:
        """One sweep of every partition.

        Returns:
            How many entities it deleted.

        Raises:
            LogUnavailable: Redis failed (what earlier calls deleted stays deleted).
        """
        total = 0
        for p in range(self.partitions):
            total += await self._sweep_partition(p)
        self.metrics.expiry_backlog = sum(self._due)
        return total

    async def _sweep_partition(self, p: int) -> int:
        deleted = 0
        budget = self.max_per_sweep
        # Invariant: at most ``max_per_sweep`` deletions per partition and sweep.
        while budget > 0:
            want = min(budget, max(FIRST_CALL_IDS, self._due[p]))
            now = math.floor(self.clock() * 1000)
            result = await self.leases.sweep(p, [uuid7(now) for _ in range(want)])
            self._due[p] = result.still_due
            deleted += result.expired
            budget -= want
            if result.expired:
                logger.debug("partition %d: %d leases expired", p, result.expired)
            if not result.still_due:
                break
        self.metrics.expired += deleted
        return deleted
