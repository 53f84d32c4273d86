"""Singer taps in Redis: their registry, their bookmarks and their run figures.

A tap is a connector job like a poller (``tap:<name>``): :mod:`hub.store.connectors`
lists it, leases it and records each run's status; this module holds what is particular
to taps (docs/connectors.md, "Singer taps"):

- the **registry** ``{connectors}:taps``: ``<name>`` -> the tap's configuration JSON
  (its secrets sealed by the caller);
- the **bookmark** ``{connectors}:tapstate:<name>``: the tap's last Singer ``STATE``
  value, written only after every record before it was applied, so a restarted hub
  resumes from it;
- **run figures**, beside the generic status fields in ``{connectors}:status:tap:<name>``:
  ``phase`` (``installing``, ``running``, ``idle``), ``records`` (applied by the last
  run), ``duplicates`` (already applied before, by ``eventId``), ``rejected`` (refused
  by the publish policy or the mapping), ``records_total``.

Every write checks that the tap is still registered, in the same script, so a tap
deleted while it runs leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from ..errors import LogUnavailable
from .connection import SCRIPT_FAILURES

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .store import Store

__all__ = ["TAP_JOB", "TapFigures", "TapStore", "tap_job"]

#: Job ids of taps: ``tap:<name>``.
TAP_JOB = "tap:"

_FAILURES = SCRIPT_FAILURES

# Register a tap unless the name is taken or the registry is full; first run at once.
# KEYS: taps, status. ARGV: name, config, max taps, now ms. Returns 1, 0 (full), -1 (taken).
_ADD = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return -1 end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'created', ARGV[4], 'next_poll', ARGV[4], 'phase', 'idle')
return 1
"""

# Write fields of a registered tap's status. KEYS: taps, status. ARGV: name, then
# field/value pairs. Returns 0 if the tap is gone.
_SET = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV, 2))
return 1
"""

# Record a run's figures. KEYS: taps, status. ARGV: name, records, duplicates, rejected.
_FIGURES = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], 'records', ARGV[2], 'duplicates', ARGV[3], 'rejected', ARGV[4],
  'phase', 'idle')
redis.call('HINCRBY', KEYS[2], 'records_total', ARGV[2])
return 1
"""

# Save a bookmark of a registered tap. KEYS: taps, state. ARGV: name, state JSON.
_BOOKMARK = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""


def tap_job(name: str) -> str:
    """The job id of a tap."""
    return TAP_JOB + name


@dataclass(frozen=True, slots=True)
class TapFigures:
    """What the runs of a tap did (beside :class:`~hub.store.connectors.JobStatus`)."""

    #: ``installing``, ``running`` or ``idle``.
    phase: str = "idle"
    #: Records the last finished run applied.
    records: int = 0
    #: Records of the last run already applied before (same ``eventId``).
    duplicates: int = 0
    #: Records of the last run refused (mapping or publish policy).
    rejected: int = 0
    #: Records applied by every run.
    records_total: int = 0


class TapStore:
    """Async access to the taps' registry, bookmarks and figures.

    Every method raises :class:`~hub.errors.LogUnavailable` when Redis fails.
    """

    def __init__(self, store: Store) -> None:
        self.keys = store.keys
        client = store.client
        self._client = client
        self._add = client.register_script(_ADD)
        self._set = client.register_script(_SET)
        self._figures = client.register_script(_FIGURES)
        self._bookmark = client.register_script(_BOOKMARK)

    def _status_keys(self, name: str) -> list[str]:
        return [self.keys.connector_taps(), self.keys.connector_status(tap_job(name))]

    async def add(self, name: str, config: bytes, *, max_taps: int, now_ms: int) -> int:
        """Register a tap: 1 added, 0 the registry is full, -1 the name is taken."""
        args: list[str | bytes | int] = [name, config, max_taps, now_ms]
        try:
            return int(await self._add(self._status_keys(name), args))
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while adding a tap: {exc}") from exc

    async def taps(self) -> dict[str, bytes]:
        """Every registered tap's configuration, by name."""
        try:
            raw = cast("dict[bytes, bytes]", await self._client.hgetall(self.keys.connector_taps()))
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while listing taps: {exc}") from exc
        return {k.decode(): v for k, v in raw.items()}

    async def get(self, name: str) -> bytes | None:
        """One tap's configuration; None if it is not registered."""
        try:
            return cast("bytes | None", await self._client.hget(self.keys.connector_taps(), name))
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while reading a tap: {exc}") from exc

    async def delete(self, name: str) -> bool:
        """Forget a tap with its status, lease and bookmark. False if there was none."""
        job = tap_job(name)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hdel(self.keys.connector_taps(), name)
                pipe.delete(
                    self.keys.connector_status(job),
                    self.keys.connector_lease(job),
                    self.keys.connector_tap_state(name),
                )
                removed, _ = await pipe.execute()
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while deleting a tap: {exc}") from exc
        return bool(removed)

    async def set_phase(self, name: str, phase: str) -> None:
        """Show what a tap is doing now (``installing``, ``running``, ``idle``)."""
        try:
            await self._set(self._status_keys(name), [name, "phase", phase])
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while writing a tap's status: {exc}") from exc

    async def record_figures(
        self, name: str, *, records: int, duplicates: int, rejected: int
    ) -> None:
        """Record what a run did (before the generic status records the run)."""
        args: list[str | int] = [name, records, duplicates, rejected]
        try:
            await self._figures(self._status_keys(name), args)
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while writing a tap's status: {exc}") from exc

    async def figures(self, names: Sequence[str]) -> list[TapFigures]:
        """The run figures of each tap, in order."""
        if not names:
            return []
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hmget(
                        self.keys.connector_status(tap_job(name)),
                        ["phase", "records", "duplicates", "rejected", "records_total"],
                    )
                replies = await pipe.execute()
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while reading tap status: {exc}") from exc
        return [_figures(reply) for reply in replies]

    async def bookmark(self, name: str) -> bytes | None:
        """The tap's last saved ``STATE`` value (JSON), or None."""
        try:
            return cast("bytes | None", await self._client.get(self.keys.connector_tap_state(name)))
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while reading a tap's bookmark: {exc}") from exc

    async def save_bookmark(self, name: str, state: bytes) -> bool:
        """Save a ``STATE`` value; False if the tap was deleted meanwhile."""
        keys = [self.keys.connector_taps(), self.keys.connector_tap_state(name)]
        try:
            return bool(await self._bookmark(keys, [name, state]))
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while saving a tap's bookmark: {exc}") from exc


def _figures(reply: list[bytes | None]) -> TapFigures:
    phase, records, duplicates, rejected, total = reply
    return TapFigures(
        phase=phase.decode() if phase is not None else "idle",
        records=int(records or 0),
        duplicates=int(duplicates or 0),
        rejected=int(rejected or 0),
        records_total=int(total or 0),
    )
