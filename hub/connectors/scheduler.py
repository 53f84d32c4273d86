"""Running connector jobs: each job polled by exactly one hub, on its own schedule.

A *job* is one registry entry: a user's credentials for a connector, or a generic
poller (see :mod:`hub.store.connectors`). Every hub runs one :class:`Scheduler`:

- every *tick* it lists the registered jobs and claims the lease of each (``claim``
  renews the leases it holds and takes the free ones, in one pipelined round trip);
- it runs one task per job it holds. Before each poll the task renews the lease
  again, and stops if another hub holds it: a hub that stalled longer than the lease
  lasts gives the job up instead of polling it twice;
- a job that is deleted, or whose lease is lost, is cancelled on the next tick (at
  once on the hub that deleted it);
- at shutdown the hub gives its leases back, so another hub takes the jobs on its
  next tick. A hub that dies keeps them only until they expire
  (:attr:`Scheduler.lease_seconds`).

The schedule itself is shared: each poll records the next one in the job's status,
and a hub that takes a job over starts from that time, so a handover neither skips
nor repeats a poll.

Failures back off: after ``n`` failures in a row the next poll waits
``interval * 2**n``, at most :data:`MAX_BACKOFF` seconds (or the interval, if that is
longer). A poll may also say when the next may happen at the earliest (a rate
limit's reset: :class:`~hub.connectors.base.FetchResult`'s ``not_before``); the next
poll then waits until that time too. Nothing a poll does can end the scheduler:
errors are recorded in the status (the poll callback's job) or logged.

Invariant: ``self._running`` maps each job this hub holds and runs to the cancel scope
of its task; a task removes itself when it ends. ``self._leases`` holds the jobs whose
lease the last tick held (a superset of the running ones between ticks).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from typing import TYPE_CHECKING

import anyio

from ..errors import LogUnavailable

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anyio.abc import TaskGroup

    from ..store.connectors import ConnectorStore

__all__ = ["LEASE_TICKS", "MAX_BACKOFF", "PollOutcome", "Scheduler", "backoff", "job_label"]

logger = logging.getLogger("hub.connectors")

#: Longest wait after repeated failures, in seconds (unless the interval is longer).
MAX_BACKOFF = 300.0
#: A lease lasts this many ticks: renewals can miss a few ticks before it lapses.
LEASE_TICKS = 5
#: Seconds given to returning the leases at shutdown.
RELEASE_GRACE = 1.0

#: What one poll did: ``(interval in seconds, error or None, not before)``; None if
#: the job no longer exists. *Not before* (ms since the epoch, or None) holds the next
#: poll back past the interval and the backoff: a rate limit's reset, say.
PollOutcome = tuple[float, str | None, int | None] | None


def job_label(job: str) -> str:
    """A job as logs show it: a credential job without its user (a token's hash)."""
    if job.startswith("cred:"):
        return job.rpartition(":")[0]
    return job


def backoff(interval: float, failures: int) -> float:
    """Seconds until the next poll after ``failures`` failures in a row."""
    if failures <= 0:
        return interval
    return min(interval * 2.0 ** min(failures, 20), max(interval, MAX_BACKOFF))


class Scheduler:
    """Claims, renews and runs connector jobs. Run :meth:`run` in a task group.

    Args:
        store: where jobs, leases and statuses live.
        poll: polls a job once and records nothing itself; returns a
            :data:`PollOutcome`. It must not raise except for
            :class:`~hub.errors.LogUnavailable` (or cancellation).
        can_run: whether this hub knows how to run a job (a hub without some custom
            connector leaves its jobs to the hubs that have it).
        tick: seconds between two looks at the registry.
        clock: wall time in seconds (statuses hold wall times shared by all hubs).
    """

    def __init__(
        self,
        store: ConnectorStore,
        poll: Callable[[str], Awaitable[PollOutcome]],
        *,
        can_run: Callable[[str], bool],
        tick: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.poll = poll
        self.can_run = can_run
        self.tick = tick
        #: How long a lease lasts unless renewed.
        self.lease_seconds = LEASE_TICKS * tick
        self.clock = clock
        #: This hub's name on the leases it holds.
        self.owner = uuid.uuid4().hex
        self._running: dict[str, anyio.CancelScope] = {}
        #: Jobs whose lease this hub claimed last (returned at shutdown).
        self._leases: set[str] = set()
        self._wake: anyio.Event | None = None

    @property
    def running(self) -> frozenset[str]:
        """The jobs this hub holds and runs now."""
        return frozenset(self._running)

    def wake(self) -> None:
        """Look at the registry now (a job was added on this hub)."""
        if self._wake is not None:
            self._wake.set()

    def forget(self, job: str) -> None:
        """Stop running a job at once (it was deleted on this hub)."""
        self._leases.discard(job)
        scope = self._running.pop(job, None)
        if scope is not None:
            scope.cancel()

    async def run(self) -> None:
        """Run until cancelled; then give the leases back."""
        try:
            async with anyio.create_task_group() as tg:
                while True:
                    self._wake = anyio.Event()
                    try:
                        await self._tick(tg)
                    except LogUnavailable as exc:
                        logger.warning("connector scheduler: %s", exc)
                    except Exception:
                        logger.exception("connector scheduler tick failed")
                    with anyio.move_on_after(self.tick):
                        await self._wake.wait()
        finally:
            held = sorted(self._leases)
            self._leases.clear()
            with anyio.CancelScope(shield=True), anyio.move_on_after(RELEASE_GRACE):
                try:
                    await self.store.release(held, self.owner)
                except LogUnavailable as exc:
                    logger.warning("could not return connector leases: %s", exc)

    # ------------------------------------------------------------------ internals

    def _now_ms(self) -> int:
        return math.floor(self.clock() * 1000)

    @property
    def _lease_ms(self) -> int:
        return max(1, math.ceil(self.lease_seconds * 1000))

    async def _tick(self, tg: TaskGroup) -> None:
        jobs = [job for job in await self.store.job_ids() if self.can_run(job)]
        wanted = set(jobs)
        for job in [j for j in self._running if j not in wanted]:
            self.forget(job)  # deleted (on another hub): its lease went with it
        held = await self.store.claim(jobs, self.owner, self._lease_ms)
        self._leases = {job for job, ours in zip(jobs, held, strict=True) if ours}
        for job, ours in zip(jobs, held, strict=True):
            if ours and job not in self._running:
                scope = anyio.CancelScope()
                self._running[job] = scope
                tg.start_soon(self._run_job, job, scope)
            elif not ours and job in self._running:
                logger.info("connector job %s: lease taken by another hub", job_label(job))
                self.forget(job)

    async def _run_job(self, job: str, scope: anyio.CancelScope) -> None:
        with scope:
            try:
                await self._poll_loop(job)
            except LogUnavailable as exc:
                # The lease is still ours: the next tick restarts the job.
                logger.warning("connector job %s paused: %s", job_label(job), exc)
            except Exception:
                logger.exception("connector job %s failed", job_label(job))
        if self._running.get(job) is scope:
            del self._running[job]

    async def _poll_loop(self, job: str) -> None:
        status = (await self.store.statuses([job]))[0]
        failures = status.consecutive_failures
        due = status.next_poll if status.next_poll is not None else self._now_ms()
        while True:
            wait = (due - self._now_ms()) / 1000
            if wait > 0:
                await anyio.sleep(wait)
            if not (await self.store.claim([job], self.owner, self._lease_ms))[0]:
                logger.info("connector job %s: lease taken by another hub", job_label(job))
                return
            started = self._now_ms()
            outcome = await self.poll(job)
            if outcome is None:
                return  # deleted
            interval, error, not_before = outcome
            failures = failures + 1 if error is not None else 0
            due = self._now_ms() + math.ceil(backoff(interval, failures) * 1000)
            if not_before is not None:
                due = max(due, not_before)
            recorded = await self.store.record_poll(job, now_ms=started, next_ms=due, error=error)
            if recorded is None:
                return  # deleted while polling
            failures = recorded
