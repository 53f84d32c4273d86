"""The write path's Redis shapes: reduce.lua's arguments, and its replies as
:class:`Applied` results."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.model import OutcomeStatus
from .batches import Applied
from .cluster import ClusterChannels

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..config import LogSettings
    from .batches import Submission
    from .keys import Keys
    from .ordered import ScriptCall, ScriptChannel

__all__ = ["PendingApply", "reduce_call"]

_STATUS = {
    b"ok": OutcomeStatus.APPLIED,
    b"dup": OutcomeStatus.DUPLICATE,
    b"conflict": OutcomeStatus.CONFLICT,
}


class PendingApply:
    """Events sent to Redis by :meth:`Store.send_apply`; :meth:`result` waits for them."""

    def __init__(
        self,
        channel: ScriptChannel | ClusterChannels,
        count: int,
        calls: list[tuple[int, list[int], ScriptCall]],
    ) -> None:
        self._channel = channel
        self._count = count
        self._calls = calls
        #: After :meth:`partial`: whether some events' call waits for a moving slot.
        self.held = False

    async def result(self) -> list[Applied]:
        """The outcome of each event, in the order given.

        Raises:
            LogUnavailable: Redis failed or refused (see :meth:`Store.apply`).
        """
        results: list[Applied | None] = [None] * self._count
        for p, indexes, call in self._calls:
            _fill(results, p, indexes, await self._channel.reply(call))
        return [r for r in results if r is not None]

    async def partial(self) -> list[Applied | None]:
        """As :meth:`result`, without waiting for the calls that a Redis Cluster slot
        being moved holds (hub/store/moving.py): their events' outcomes are None and
        :attr:`held` is True; :meth:`result` then waits for everything.

        Raises:
            LogUnavailable: as :meth:`result`.
        """
        channel = self._channel
        if not isinstance(channel, ClusterChannels):
            return [*(await self.result())]
        results: list[Applied | None] = [None] * self._count
        for p, indexes, call in self._calls:
            reply = await channel.answer(call)
            if reply is None:
                self.held = True
            else:
                _fill(results, p, indexes, reply)
        return results


def _fill(results: list[Applied | None], p: int, indexes: list[int], reply: list[bytes]) -> None:
    for n, i in enumerate(indexes):
        status, version, dpos, epos = reply[4 * n : 4 * n + 4]
        results[i] = Applied(_STATUS[status], int(version), dpos.decode(), epos.decode(), p)


def reduce_call(
    keys: Keys, log: LogSettings, p: int, items: Sequence[Submission], now_ms: int
) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of one reduce.lua call applying ``items`` (all of partition
    ``p``), in the order the script reads them."""
    spare = keys.stats(p)
    key_list = [
        keys.event_log(p),
        keys.delta_log(p),
        keys.ids(p),
        spare,
        keys.namespace_stats(p),
        keys.leases(p),
    ]
    args: list[Any] = [
        now_ms,
        log.event_log_maxlen,
        log.delta_log_maxlen,
        log.history_per_entity,
        log.dedup_ttl_seconds,
        len(items),
        f"{now_ms - log.delta_log_max_age_seconds * 1000}-0"
        if log.delta_log_max_age_seconds
        else "",
    ]
    for item in items:
        change = item.change
        entity_id = change.entity_id
        key_list.append(keys.entity(p, entity_id) if entity_id is not None else spare)
        key_list.append(keys.history(p, entity_id) if entity_id is not None else spare)
        key_list.append(keys.dedup(p, change.dedup_id) if change.dedup_id else spare)
        args += (
            # The ttl rides on the kind (U30000): no argument more per event without one.
            change.kind.value if change.ttl_ms is None else f"{change.kind.value}{change.ttl_ms}",
            change.dedup_id or "",
            "" if change.if_version is None else change.if_version,
            item.stored,
            entity_id if entity_id is not None else "",
            change.source,
            len(change.properties),
        )
        for name, value in change.properties.items():
            args += (name, value)
    return key_list, args
