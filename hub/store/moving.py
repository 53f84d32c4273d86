"""Reduce-script calls whose Redis Cluster slot is moving: held back, then sent again
in their order.

While an operator reshards (``redis-cli --cluster reshard`` or ``rebalance``, a master
added), each slot's keys move a few at a time (``MIGRATE ... KEYS``) from the master
that owns it (``MIGRATING``) to the next (``IMPORTING``), and then the slot itself
(``SETSLOT NODE``). Meanwhile a multi-key script can run on neither side: the source
refuses a call that names a key it no longer holds (``ASK``, or ``TRYAGAIN`` when it
still holds some), the target one whose keys it does not all hold (``TRYAGAIN``).
Every reduce call also names a key nobody writes (``Keys.unwritten``), so on a moving
slot *every* call is refused and none runs: a partition's calls cannot overtake each
other, and the way through is to wait until the slot has moved (then ``MOVED`` names
its new master).

:class:`MovingSlots` does that for :class:`~hub.store.cluster.ClusterChannels`:

- a call refused so (:data:`~hub.store.ordered.REDIRECTIONS`) is taken from its
  channel unsettled, in reply order (:attr:`ScriptChannel.redirected`), and its slot
  is *held*: the slot's calls made since wait with it, unwritten, in order;
- the oldest probes the slot: it is sent again after a back-off (``FIRST_DELAY``,
  doubling up to ``MAX_DELAY``), at once to the master a ``MOVED`` names; while it is
  refused the others wait, and once it is answered they are written after it, in
  their order, and the slot is free again;
- a call held longer than the store's reply timeout (``FLUX_REDIS_REPLY_TIMEOUT``,
  counted from its first refusal) fails with :class:`LogUnavailable`, as a call to a
  Redis that does not answer does: its publish is answered 503, and nothing of it ran.

No task of its own: whoever waits for a held call's reply drives the probes of every
held slot (:meth:`MovingSlots.drive`), as whoever waits for a reply reads the replies
before it (hub/store/ordered.py). Bound: the calls held are calls the ingest sent and
has not settled (hub/engine/ingest.py bounds them by its ``queue_size``).

Reads that name several keys of a partition (snapshot.lua, the delta log's head with
its sequence number) are refused the same way, and redis-py gives up on them within
a few redirections: :func:`slot_moving` tells those refusals apart and
:class:`Backoff` paces the retries, within the same reply timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from redis import exceptions as redis_errors

from ..errors import LogUnavailable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from redis.asyncio.cluster import ClusterNode, RedisCluster

    from .ordered import ScriptCall, ScriptChannel

__all__ = ["FIRST_DELAY", "MAX_DELAY", "Backoff", "MovingSlots", "slot_moving", "while_moving"]

T = TypeVar("T")

logger = logging.getLogger("hub.store")

#: Seconds before a held slot is probed the first time: a slot with few keys moves in
#: a few milliseconds.
FIRST_DELAY = 0.005
#: The longest back-off between two probes: a slot with many keys can take seconds
#: (``MIGRATE`` moves ``--cluster-pipeline`` keys, 10 by default, per round trip).
MAX_DELAY = 0.1


@dataclass(eq=False, slots=True)
class _Held:
    """A slot's calls held back while it moves."""

    #: The channel that refused the first call, and the newest call written to it
    #: then: calls written before the slot was held may be refused too, and must be
    #: heard (in order) before any is sent again.
    channel: ScriptChannel
    before: ScriptCall | None
    since: float
    due: float
    delay: float = FIRST_DELAY
    #: Calls refused, in reply order: sent again first.
    refused: list[ScriptCall] = field(default_factory=list)
    #: Calls made since the slot was held, in order: never written yet.
    held: list[ScriptCall] = field(default_factory=list)
    #: The call sent as a probe, while its reply is awaited.
    probe: ScriptCall | None = None
    #: The last ``MOVED``: the slot's new master.
    moved: redis_errors.MovedError | None = None
    probes: int = 0


class MovingSlots:
    """The held slots of one :class:`~hub.store.cluster.ClusterChannels`.

    Args:
        cluster: the cluster client whose slot map routes the probes.
        channel_of: the channel to a master (made on first use).
        timeout: seconds a call may be held, from its first refusal.
    """

    def __init__(
        self,
        cluster: RedisCluster,
        channel_of: Callable[[ClusterNode], ScriptChannel],
        timeout: float,
    ) -> None:
        self._cluster = cluster
        self._channel_of = channel_of
        self.timeout = timeout
        #: Slot -> its held calls. Empty unless a slot moves.
        self.slots: dict[int, _Held] = {}
        #: Slot -> its newest call, written or held: a call for a slot whose master
        #: changed is written only once the calls before it are heard.
        self.last: dict[int, ScriptCall] = {}
        self._driving = asyncio.Lock()

    def refused(self, call: ScriptCall, exc: redis_errors.ResponseError) -> None:
        """Take a call its channel (``call.via``) was refused, in reply order."""
        now = time.monotonic()
        if not call.deadline:
            call.deadline = now + self.timeout
        held = self.slots.get(call.slot)
        if held is None:
            assert call.via is not None
            held = _Held(call.via, call.via.newest(), now, now + FIRST_DELAY)
            self.slots[call.slot] = held
            logger.info("Redis Cluster slot %d is moving (%s): holding its calls", call.slot, exc)
        if call is held.probe:
            held.probe = None
            held.refused.insert(0, call)
            held.delay = min(held.delay * 2, MAX_DELAY)
            held.due = now + held.delay
        else:
            held.refused.append(call)
        if isinstance(exc, redis_errors.MovedError):
            held.moved = exc
            held.due = now

    def hold(self, call: ScriptCall) -> ScriptCall:
        """Hold a new call behind its slot's (:attr:`slots` has the slot)."""
        call.deadline = time.monotonic() + self.timeout
        self.slots[call.slot].held.append(call)
        self.last[call.slot] = call
        return call

    async def drive(self) -> None:
        """Wait until the next held slot is due, and probe it (or every slot due)."""
        async with self._driving:
            if not self.slots:
                return
            first = min(held.due for held in self.slots.values())
            await asyncio.sleep(max(0.0, first - time.monotonic()))
            for slot, held in list(self.slots.items()):
                if held.due <= time.monotonic() and self.slots.get(slot) is held:
                    await self._probe(slot, held)

    def close(self, error: LogUnavailable) -> None:
        """Fail every held call."""
        for held in self.slots.values():
            for call in (*held.refused, *held.held):
                call.settle(error=error)
        self.slots.clear()

    async def _probe(self, slot: int, held: _Held) -> None:
        """Send the oldest call again (unless a probe is out already) and hear it: if
        it is answered, the slot is free."""
        probe = held.probe
        if probe is None:
            before, held.before = held.before, None
            if before is not None and before.via is held.channel:
                await held.channel.hear(before)
            self._expire(slot, held)
            queue = held.refused or held.held
            if not queue:
                del self.slots[slot]
                return
            channel = await self._owner(slot, held)
            if channel is None:  # no master serves it in the map: read it again later
                held.due = time.monotonic() + MAX_DELAY
                return
            probe = held.probe = queue.pop(0)
            held.probes += 1
            await channel.resend([probe])
        channel = probe.via
        if channel is not None:
            await channel.hear(probe)
        # Refused, the hook put it back and backed off; else it was answered there.
        if held.probe is probe and channel is not None and probe.done.is_set():
            held.probe = None
            await self._flush(slot, held, channel)

    async def _flush(self, slot: int, held: _Held, channel: ScriptChannel) -> None:
        """The probe was answered: write the slot's other calls after it, in order,
        and free the slot."""
        batch = [*held.refused, *held.held]
        held.refused, held.held = [], []
        while batch:
            self.last[slot] = batch[-1]
            await channel.resend(batch)
            # Calls made while writing were held: they follow.
            batch, held.held = held.held, []
        if held.refused:
            # Refused while being written: the slot moves again. Those written after
            # them are heard before the next probe.
            held.channel, held.before = channel, channel.newest()
            held.delay = FIRST_DELAY
            held.due = time.monotonic() + held.delay
            return
        del self.slots[slot]
        logger.info(
            "Redis Cluster slot %d moved: its calls held for %.3f s went on (%d probes)",
            slot,
            time.monotonic() - held.since,
            held.probes,
        )

    async def _owner(self, slot: int, held: _Held) -> ScriptChannel | None:
        """The channel to the slot's master now (where the last ``MOVED`` said)."""
        nodes = self._cluster.nodes_manager
        if held.moved is not None:
            moved, held.moved = held.moved, None
            await nodes.move_slot(moved)
        owners = nodes.slots_cache.get(slot)
        return self._channel_of(owners[0]) if owners else None

    def _expire(self, slot: int, held: _Held) -> None:
        now = time.monotonic()
        for queue in (held.refused, held.held):
            late = [call for call in queue if call.deadline <= now]
            if not late:
                continue
            logger.warning(
                "Redis Cluster slot %d still moving after %.1f s: failing %d calls held "
                "since (FLUX_REDIS_REPLY_TIMEOUT)",
                slot,
                now - held.since,
                len(late),
            )
            error = LogUnavailable(
                f"Redis Cluster slot {slot} was moving for longer than the reply timeout "
                f"({self.timeout:g} s): not applied; retrying with the same eventId is safe"
            )
            for call in late:
                queue.remove(call)
                call.settle(error=error)


def slot_moving(exc: BaseException) -> bool:
    """Whether Redis refused a command because its keys' slot is moving, or has just
    moved (it ran nowhere; once the slot has moved it runs): a redirection redis-py
    passed on, its ``TTL exhausted`` after following too many, or a script's access
    to a key that has already left (``non local key``)."""
    if isinstance(exc, (redis_errors.AskError, redis_errors.TryAgainError)):
        return True
    text = str(exc)
    if isinstance(exc, redis_errors.ClusterError) and "TTL exhausted" in text:
        return True
    return isinstance(exc, redis_errors.ResponseError) and "non local key" in text


class Backoff:
    """The pace of a read retried while its slot moves: ``FIRST_DELAY`` doubling up to
    ``MAX_DELAY``, for ``timeout`` s at most."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._deadline = time.monotonic() + timeout
        self._delay = FIRST_DELAY

    async def pause(self) -> bool:
        """Sleep before the next try; False (at once) when the time is up."""
        if time.monotonic() + self._delay > self._deadline:
            return False
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, MAX_DELAY)
        return True

    async def wait(self, exc: BaseException) -> None:
        """Sleep before the next try.

        Raises:
            LogUnavailable: the time is up.
        """
        if not await self.pause():
            raise LogUnavailable(
                f"a Redis Cluster slot was moving for longer than the reply timeout "
                f"({self.timeout:g} s): {exc}"
            ) from exc


async def while_moving(read: Callable[[], Awaitable[T]], within: float) -> T:
    """``read()``, tried again while it fails because its slot is moving.

    Raises:
        LogUnavailable: still moving after ``within`` s.
    """
    backoff: Backoff | None = None
    while True:
        try:
            return await read()
        except (redis_errors.ResponseError, redis_errors.ClusterError) as exc:
            if not slot_moving(exc):
                raise
            backoff = backoff or Backoff(within)
            await backoff.wait(exc)
