"""Connector state in Redis: credentials, pollers, poll status, leases, OAuth flows.

Everything here is shared by every hub on the same Redis (docs/connectors.md):

- **credentials** of a (connector, user) and **pollers** are the two registries; each
  entry is one *job* that some hub polls. Job ids: ``cred:<connector>:<user>`` and
  ``poller:<source_id>``.
- a job's **status** (last poll, next poll, last error, counters) is written by the hub
  that polls it and read by any hub that answers a status request;
- a job's **lease** names the one hub that polls it. A hub claims a free lease with
  ``SET NX PX``-like semantics and renews it while it runs the job; a hub that dies
  stops renewing, the lease expires and another hub claims it;
- an **OAuth state** is a pending authorization, single use (``GETDEL``) and expiring.

A credential job's id holds its user, which in Public mode is the SHA-256 of a bearer
token. Such a hash appears only as a hash *field*, never in a key name (key names show
in ``SCAN``, ``MONITOR`` and slow logs): the status and lease keys of a credential job
are named by a digest of the job id instead (:func:`_key_id`).

This module stores opaque bytes: encrypting credentials and secrets is the caller's
job (``hub.connectors.crypto``), so no secret reaches Redis in clear.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from ..errors import LogUnavailable
from .connection import SCRIPT_FAILURES

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from .store import Store

__all__ = [
    "OAUTH_STATE_TTL_MS",
    "ConnectorStore",
    "JobStatus",
    "credential_job",
    "poller_job",
]

#: Flux: an OAuth CSRF state is valid for 600 s. Redis expires it, so no clean-up
#: loop is needed (Flux sweeps every 300 s).
OAUTH_STATE_TTL_MS = 600_000

_FAILURES = SCRIPT_FAILURES

_CREDENTIAL_JOB = "cred:"
_POLLER_JOB = "poller:"
#: Singer taps (hub/store/taps.py).
_TAP_JOB = "tap:"

# Claim or renew a lease: ours -> extend it; free -> take it; another hub's -> no.
# KEYS: lease. ARGV: owner, ttl ms.
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# Give a lease back, only if it is still ours. KEYS: lease. ARGV: owner.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Record one poll, unless the job was deleted meanwhile (the status would outlive it).
# KEYS: registry, status. ARGV: field in the registry, now ms, next poll ms, error
# ('' on success). Returns the consecutive failures, or -1 if the job is gone.
_RECORD = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
redis.call('HSET', KEYS[2], 'last_poll', ARGV[2], 'next_poll', ARGV[3])
redis.call('HINCRBY', KEYS[2], 'polls', 1)
if ARGV[4] == '' then
  redis.call('HSET', KEYS[2], 'last_success', ARGV[2], 'consecutive_failures', 0)
  redis.call('HDEL', KEYS[2], 'last_error')
  return 0
end
redis.call('HSET', KEYS[2], 'last_error', ARGV[4])
redis.call('HINCRBY', KEYS[2], 'failures', 1)
return redis.call('HINCRBY', KEYS[2], 'consecutive_failures', 1)
"""

# Record what a poll published and the connector's own figures, unless the job was
# deleted meanwhile. Each figure is a 'fig:<name>' field; ARGV[2] figures are set,
# the rest (name, amount) pairs are added. KEYS: registry, status. ARGV: field in the
# registry, number of set pairs, then name, value pairs.
_FIGURES = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local sets = tonumber(ARGV[2])
for i = 0, (#ARGV - 2) / 2 - 1 do
  local name, value = 'fig:' .. ARGV[3 + 2 * i], ARGV[4 + 2 * i]
  if i < sets then
    redis.call('HSET', KEYS[2], name, value)
  else
    redis.call('HINCRBY', KEYS[2], name, value)
  end
end
return 1
"""

# Store credentials unless the registry is full (replacing is always allowed); a new
# job's first poll is due at once. KEYS: credentials, status. ARGV: field, blob, max
# credentials, now ms.
_PUT_CREDENTIALS = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
    and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSETNX', KEYS[2], 'next_poll', ARGV[4])
return 1
"""

# Register a poller unless the registry is full; its first poll is due at once.
# KEYS: pollers, status. ARGV: source id, config, max pollers, now ms.
_ADD_POLLER = """
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], 'created', ARGV[4], 'next_poll', ARGV[4])
return 1
"""


def credential_job(connector: str, user: str) -> str:
    """The job id of a user's credentials for a connector."""
    return f"{_CREDENTIAL_JOB}{connector}:{user}"


def poller_job(source_id: str) -> str:
    """The job id of a generic poller."""
    return _POLLER_JOB + source_id


@dataclass(frozen=True, slots=True)
class JobStatus:
    """What the hub that polls a job last recorded (times in ms since the epoch)."""

    #: When the job was registered (pollers only).
    created: int | None = None
    last_poll: int | None = None
    last_success: int | None = None
    next_poll: int | None = None
    #: The error of the last poll; None once a poll succeeds.
    last_error: str | None = None
    polls: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    #: What the last poll published and the connector reported, by name
    #: (:meth:`ConnectorStore.record_figures`); empty until then.
    figures: dict[str, int] = field(default_factory=dict)


class ConnectorStore:
    """Async access to connector state; built over a :class:`~hub.store.Store`.

    Every method raises :class:`~hub.errors.LogUnavailable` when Redis fails.
    """

    def __init__(self, store: Store) -> None:
        self.keys = store.keys
        client = store.client
        self._client = client
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._record = client.register_script(_RECORD)
        self._figures = client.register_script(_FIGURES)
        self._add_poller = client.register_script(_ADD_POLLER)
        self._put_credentials = client.register_script(_PUT_CREDENTIALS)

    # ------------------------------------------------------------------ credentials

    async def credentials_of(self, user: str, connectors: Sequence[str]) -> dict[str, bytes]:
        """The stored (encrypted) credentials of ``user``, by connector name."""
        if not connectors:
            return {}
        fields = [f"{name}:{user}" for name in connectors]
        try:
            blobs = cast(
                "list[bytes | None]",
                await self._client.hmget(self.keys.connector_credentials(), fields),
            )
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while reading credentials: {exc}") from exc
        return {
            name: blob for name, blob in zip(connectors, blobs, strict=True) if blob is not None
        }

    async def put_credentials(
        self, connector: str, user: str, blob: bytes, *, now_ms: int, max_credentials: int
    ) -> bool:
        """Store (or replace) credentials. A new job's first poll is due at once.

        Returns:
            False if ``max_credentials`` are stored already (and these are new).
        """
        keys = [
            self.keys.connector_credentials(),
            self.keys.connector_status(_key_id(credential_job(connector, user))),
        ]
        args: list[str | bytes | int] = [f"{connector}:{user}", blob, max_credentials, now_ms]
        try:
            return bool(await self._put_credentials(keys, args))
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while storing credentials: {exc}") from exc

    async def delete_credentials(self, connector: str, user: str) -> bool:
        """Forget credentials, with their job's status. False if there were none."""
        job = credential_job(connector, user)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hdel(self.keys.connector_credentials(), f"{connector}:{user}")
                pipe.delete(
                    self.keys.connector_status(_key_id(job)),
                    self.keys.connector_lease(_key_id(job)),
                )
                removed, _ = await pipe.execute()
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while deleting credentials: {exc}") from exc
        return bool(removed)

    # ------------------------------------------------------------------ pollers

    async def add_poller(
        self, source_id: str, config: bytes, *, max_pollers: int, now_ms: int
    ) -> bool:
        """Register a poller; False if ``max_pollers`` are already registered."""
        keys = [
            self.keys.connector_pollers(),
            self.keys.connector_status(_key_id(poller_job(source_id))),
        ]
        try:
            args: list[str | bytes | int] = [source_id, config, max_pollers, now_ms]
            added = await self._add_poller(keys, args)
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while adding a poller: {exc}") from exc
        return bool(added)

    async def pollers(self) -> dict[str, bytes]:
        """Every registered poller's config, by source id."""
        try:
            raw = cast(
                "dict[bytes, bytes]", await self._client.hgetall(self.keys.connector_pollers())
            )
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while listing pollers: {exc}") from exc
        return {k.decode(): v for k, v in raw.items()}

    async def delete_poller(self, source_id: str) -> bool:
        """Forget a poller, with its status. False if there was none."""
        job = poller_job(source_id)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hdel(self.keys.connector_pollers(), source_id)
                pipe.delete(
                    self.keys.connector_status(_key_id(job)),
                    self.keys.connector_lease(_key_id(job)),
                )
                removed, _ = await pipe.execute()
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while deleting a poller: {exc}") from exc
        return bool(removed)

    # ------------------------------------------------------------------ jobs

    async def job_ids(self) -> list[str]:
        """Every job of the three registries: credentials, pollers, Singer taps."""
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hkeys(self.keys.connector_credentials())
                pipe.hkeys(self.keys.connector_pollers())
                pipe.hkeys(self.keys.connector_taps())
                credentials, pollers, taps = await pipe.execute()
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while listing connector jobs: {exc}") from exc
        return (
            [_CREDENTIAL_JOB + f.decode() for f in credentials]
            + [_POLLER_JOB + f.decode() for f in pollers]
            + [_TAP_JOB + f.decode() for f in taps]
        )

    async def job_entry(self, job: str) -> bytes | None:
        """The registry entry of a job (credentials or poller config); None if gone."""
        registry, field = self._registry_of(job)
        try:
            return cast("bytes | None", await self._client.hget(registry, field))
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while reading a connector job: {exc}") from exc

    async def statuses(self, jobs: Sequence[str]) -> list[JobStatus]:
        """The recorded status of each job, in order (empty for unknown jobs)."""
        if not jobs:
            return []
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for job in jobs:
                    pipe.hgetall(self.keys.connector_status(_key_id(job)))
                replies = await pipe.execute()
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while reading connector status: {exc}") from exc
        return [_decode_status(reply) for reply in replies]

    async def record_poll(
        self, job: str, *, now_ms: int, next_ms: int, error: str | None
    ) -> int | None:
        """Record a poll's outcome.

        Returns:
            The job's consecutive failures after this poll, or None if the job was
            deleted meanwhile (nothing is written then).
        """
        registry, field = self._registry_of(job)
        keys = [registry, self.keys.connector_status(_key_id(job))]
        try:
            result = int(await self._record(keys, [field, now_ms, next_ms, error or ""]))
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while recording a poll: {exc}") from exc
        return None if result < 0 else result

    async def record_figures(
        self, job: str, figures: Mapping[str, int], totals: Mapping[str, int]
    ) -> None:
        """Set a job's ``figures`` and add ``totals`` to its running sums (nothing if
        the job was deleted meanwhile)."""
        if not figures and not totals:
            return
        registry, name = self._registry_of(job)
        keys = [registry, self.keys.connector_status(_key_id(job))]
        args: list[str | int] = [name, len(figures)]
        for pairs in (figures, totals):
            for key, value in pairs.items():
                args += [key, int(value)]
        try:
            await self._figures(keys, args)
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while recording a poll: {exc}") from exc

    async def claim(self, jobs: Sequence[str], owner: str, ttl_ms: int) -> list[bool]:
        """Claim or renew the lease of each job; True where ``owner`` holds it now."""
        if not jobs:
            return []
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for job in jobs:
                    await self._claim(
                        [self.keys.connector_lease(_key_id(job))], [owner, ttl_ms], pipe
                    )
                replies = await pipe.execute()
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while claiming leases: {exc}") from exc
        return [bool(r) for r in replies]

    async def release(self, jobs: Sequence[str], owner: str) -> None:
        """Give back the leases ``owner`` still holds among ``jobs``."""
        if not jobs:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for job in jobs:
                    await self._release([self.keys.connector_lease(_key_id(job))], [owner], pipe)
                await pipe.execute()
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while releasing leases: {exc}") from exc

    # ------------------------------------------------------------------ OAuth

    async def put_oauth_state(self, state: str, value: bytes) -> None:
        """Remember a pending OAuth flow for :data:`OAUTH_STATE_TTL_MS`."""
        try:
            await self._client.set(self.keys.oauth_state(state), value, px=OAUTH_STATE_TTL_MS)
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while saving an OAuth state: {exc}") from exc

    async def take_oauth_state(self, state: str) -> bytes | None:
        """Consume a pending OAuth flow: the first call gets it, later ones None."""
        try:
            return cast("bytes | None", await self._client.getdel(self.keys.oauth_state(state)))
        except _FAILURES as exc:
            raise LogUnavailable(f"Redis failed while reading an OAuth state: {exc}") from exc

    # ------------------------------------------------------------------ helpers

    def _registry_of(self, job: str) -> tuple[str, str]:
        if job.startswith(_CREDENTIAL_JOB):
            return self.keys.connector_credentials(), job[len(_CREDENTIAL_JOB) :]
        if job.startswith(_POLLER_JOB):
            return self.keys.connector_pollers(), job[len(_POLLER_JOB) :]
        if job.startswith(_TAP_JOB):
            return self.keys.connector_taps(), job[len(_TAP_JOB) :]
        raise ValueError(f"not a connector job id: {job!r}")


def _key_id(job: str) -> str:
    """How a job is named in key names: pollers as is, credentials by a digest."""
    if job.startswith(_CREDENTIAL_JOB):
        return _CREDENTIAL_JOB + hashlib.sha256(job.encode()).hexdigest()[:32]
    return job


def _decode_status(fields: dict[bytes, bytes]) -> JobStatus:
    def number(name: bytes) -> int | None:
        value = fields.get(name)
        return None if value is None else int(value)

    error = fields.get(b"last_error")
    figures = {
        key[4:].decode(errors="replace"): int(value)
        for key, value in fields.items()
        if key.startswith(b"fig:")
    }
    return JobStatus(
        created=number(b"created"),
        last_poll=number(b"last_poll"),
        last_success=number(b"last_success"),
        next_poll=number(b"next_poll"),
        last_error=None if error is None else error.decode(errors="replace"),
        polls=number(b"polls") or 0,
        failures=number(b"failures") or 0,
        consecutive_failures=number(b"consecutive_failures") or 0,
        figures=figures,
    )
