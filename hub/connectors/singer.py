"""Singer taps as connectors: one run of a tap, from its install to its bookmark.

A registered tap (:mod:`.singer_spec`) is a connector job ``tap:<name>``, scheduled by
the :class:`~hub.connectors.scheduler.Scheduler` like a poller: one hub of the cluster
runs it every ``interval_secs``, and a failed run is retried after a back-off
(``interval × 2ⁿ``, at most 300 s or the interval). One run (:meth:`TapRunner.run`):

1. installs the tap's pip requirement into its own virtualenv, once
   (:func:`~.singer_process.install_tap`), or takes the given executable;
2. starts it with its configuration (secrets decrypted into a 0600 file) and its
   last bookmark (``--state``);
3. reads its Singer messages: ``SCHEMA`` (keys and bookmarks of a stream),
   ``RECORD`` (mapped to an event and published in batches of :data:`BATCH_RECORDS`
   through the publish policy every connector uses: property limits, no
   ``flux-core``), ``STATE`` (the records before it are applied first, then the
   value is saved in Redis: a restarted hub resumes from it);
4. records the run's figures. A tap that exits non-zero, stays silent past its idle
   timeout, runs past its run timeout, or writes a line that is not a Singer message
   is killed (its whole process group) and the run fails with that reason; what
   it published until then stays, its bookmark is the last one saved.

Records published again (a re-run after a lost bookmark) carry the same ``eventId``
and are not applied twice (counted as ``duplicates``).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import anyio

from ..core.model import OutcomeStatus
from ..errors import Broken, Closed, LogUnavailable
from ..store.taps import tap_job
from ..wire.jsonutil import JSONError, dumps, loads
from .singer_process import TapProcess, install_tap
from .singer_spec import MappingError, RecordMapper, TapSpec

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from ..engine.ingest import Ingest
    from ..engine.publish import PublishPolicy
    from ..store.taps import TapStore
    from .crypto import SecretBox

__all__ = ["BATCH_BYTES", "BATCH_RECORDS", "RunResult", "TapRunner"]

logger = logging.getLogger("hub.connectors")

#: Records published per ingest call (and most held before a ``STATE`` is saved)...
BATCH_RECORDS = 500
#: ... or fewer, when their lines add up to this many bytes.
BATCH_BYTES = 8 * 1024 * 1024
#: Seconds a finished tap's stderr may take to close (for the error message).
STDERR_GRACE = 1.0
#: Characters of an error kept in the status (as for every connector).
MAX_ERROR_CHARS = 500

#: ``(interval, error or None)``, or None when the tap no longer exists.
RunResult = tuple[float, str | None] | None


class _Run:
    """The counters and first problem of one run."""

    def __init__(self) -> None:
        self.records = 0
        self.duplicates = 0
        self.rejected = 0
        self.problem: str | None = None
        self.problems = 0

    def refuse(self, why: str) -> None:
        self.rejected += 1
        self.problems += 1
        if self.problem is None:
            self.problem = why

    def summary(self) -> str | None:
        if self.problem is None:
            return None
        more = f" (and {self.problems - 1} more)" if self.problems > 1 else ""
        return self.problem + more


class TapRunner:
    """Runs tap jobs for the connectors extension (one call per scheduled run).

    Args:
        taps: the taps' registry, bookmarks and figures.
        box: opens the tap's sealed secrets (None without ``FLUX_ENCRYPTION_KEY``).
        policy: the publish policy connectors share.
        ingest: where events are applied.
        taps_dir: where pip requirements are installed (``<data_dir>/taps``).
        clock: wall time in seconds.
    """

    def __init__(
        self,
        taps: TapStore,
        *,
        box: SecretBox | None,
        policy: PublishPolicy,
        ingest: Ingest,
        taps_dir: Path,
        clock: Callable[[], float],
        min_interval: float,
    ) -> None:
        self.taps = taps
        self.box = box
        self.policy = policy
        self.ingest = ingest
        self.taps_dir = taps_dir
        self.clock = clock
        self.min_interval = min_interval
        # One install of a requirement at a time on this hub.
        self._installing: dict[str, anyio.Lock] = {}

    async def run(self, name: str) -> RunResult:
        """Run a tap once. Records the run's figures, not its status (the scheduler's).

        Raises:
            LogUnavailable: Redis failed before the run started.
        """
        entry = await self.taps.get(name)
        if entry is None:
            return None
        spec = TapSpec.from_json(name, entry)
        if spec is None:
            return self.min_interval, "the stored tap configuration is damaged"
        run = _Run()
        try:
            error = await self._run(spec, run)
        except LogUnavailable as exc:
            error = f"Redis failed: {exc}"
        except OSError as exc:  # the data directory or /tmp: unwritable, full...
            error = f"{exc.strerror or type(exc).__name__}: {exc.filename or exc}"
        except Exception as exc:  # a bug: this run fails, the scheduler goes on
            logger.exception("tap %s: the run failed", name)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(STDERR_GRACE):
                try:
                    await self.taps.record_figures(
                        name, records=run.records, duplicates=run.duplicates, rejected=run.rejected
                    )
                except LogUnavailable as exc:
                    logger.warning("tap %s: cannot record its figures: %s", name, exc)
        error = error or run.summary()
        return spec.interval, None if error is None else _clip(error)

    async def _run(self, spec: TapSpec, run: _Run) -> str | None:
        """The run's failure, or None."""
        config = dict(spec.config)
        secrets: list[str] = []
        if spec.sealed_secrets is not None:
            plain = (
                None if self.box is None else self.box.open(spec.sealed_secrets, tap_job(spec.name))
            )
            if plain is None:
                why = (
                    "cannot be read: FLUX_ENCRYPTION_KEY is not set"
                    if self.box is None
                    else (
                        "cannot be decrypted (FLUX_ENCRYPTION_KEY changed?): register the tap again"
                    )
                )
                return "the stored secrets " + why
            values = loads(plain)
            config.update(values)
            secrets = [v for v in values.values() if isinstance(v, str)]
        try:
            executable = await self._executable(spec)
            state = await self.taps.bookmark(spec.name)
            await self.taps.set_phase(spec.name, "running")
            with anyio.fail_after(spec.timeout):
                return await self._process(spec, run, executable, config, state, secrets)
        except TimeoutError:
            return f"the run did not finish within {spec.timeout:g} s (run timeout)"
        except Broken as exc:
            return str(exc)
        except LogUnavailable as exc:
            return f"Redis failed: {exc}"

    async def _executable(self, spec: TapSpec) -> str:
        if spec.executable is not None:
            return spec.executable
        assert spec.pip is not None
        await self.taps.set_phase(spec.name, "installing")
        lock = self._installing.setdefault(spec.pip, anyio.Lock())
        async with lock:
            bin_dir = await install_tap(self.taps_dir, spec.pip)
        executable = bin_dir / spec.tap
        if not executable.is_file():
            found = sorted(p.name for p in bin_dir.glob("tap-*"))
            raise Broken(
                f"'{spec.pip}' installed no executable '{spec.tap}'"
                f" (it has: {', '.join(found) or 'no tap-*'})"
            )
        return str(executable)

    async def _process(
        self,
        spec: TapSpec,
        run: _Run,
        executable: str,
        config: dict[str, Any],
        state: bytes | None,
        secrets: list[str],
    ) -> str | None:
        failure: str | None = None
        async with TapProcess(
            executable, config, state, idle_timeout=spec.idle_timeout, secrets=secrets
        ) as tap:
            drained = anyio.Event()

            async def drain() -> None:
                await tap.drain_stderr()
                drained.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(drain)
                try:
                    await self._read(spec, run, tap)
                    await tap.finish()
                except (Broken, LogUnavailable) as exc:
                    failure = str(exc) if isinstance(exc, Broken) else f"Redis failed: {exc}"
                except Exception as exc:  # a bug: the run fails, the hub goes on
                    logger.exception("tap %s: the run failed", spec.name)
                    failure = f"{type(exc).__name__}: {exc}"
                if failure is not None:
                    await tap.kill()
                    with anyio.move_on_after(STDERR_GRACE):
                        await drained.wait()
                    if not failure.startswith("the tap exited"):
                        failure += tap.why()
                tg.cancel_scope.cancel()
        return failure

    async def _read(self, spec: TapSpec, run: _Run, tap: TapProcess) -> None:
        """Read the tap's messages to its end, publishing records and saving states."""
        mapper = RecordMapper(spec)
        pending: list[dict[str, Any]] = []
        held = 0  # bytes of the lines behind ``pending``
        number = 0
        try:
            while (line := await tap.next_line()) is not None:
                number += 1
                if not line.strip():
                    continue
                message = _message(line, number)
                kind = message["type"]
                if kind == "RECORD":
                    stream, record = message.get("stream"), message.get("record")
                    if not isinstance(stream, str) or not isinstance(record, dict):
                        raise Broken(
                            f"line {number} of the tap's output: a RECORD needs stream and record"
                        )
                    if not mapper.wanted(stream):
                        continue
                    try:
                        pending.append(mapper.event(stream, record))
                        held += len(line)
                    except MappingError as exc:
                        run.refuse(f"a record of stream '{stream}': {exc}")
                    if len(pending) >= BATCH_RECORDS or held >= BATCH_BYTES:
                        await self._publish(pending, run)
                        held = 0
                elif kind == "SCHEMA":
                    stream = message.get("stream")
                    if isinstance(stream, str):
                        mapper.schema(
                            stream,
                            message.get("key_properties"),
                            message.get("bookmark_properties"),
                        )
                elif kind == "STATE":
                    await self._publish(pending, run)  # the records before it, applied first
                    held = 0
                    if not await self.taps.save_bookmark(spec.name, dumps(message.get("value"))):
                        raise Broken("the tap was deleted while it ran")
                elif kind == "BATCH":
                    raise Broken("the tap sent a BATCH message: turn its batch mode off")
                # ACTIVATE_VERSION and message types of later Singer versions: ignored.
        except Broken:
            await self._publish(pending, run)  # what was read well before the failure
            raise
        await self._publish(pending, run)

    async def _publish(self, pending: list[dict[str, Any]], run: _Run) -> None:
        """Validate and apply a batch (emptied). Policy refusals are counted; a Redis
        failure fails the run (no bookmark is saved past unapplied records)."""
        if not pending:
            return
        events = list(pending)
        pending.clear()
        valid, failed = self.policy.parse_many(events, math.floor(self.clock() * 1000))
        admission = self.policy.admit_trusted(valid)
        for _, raw, exc in failed:
            run.refuse(f"record for {_entity(raw)}: {exc}")
        for _, envelope, why in admission.refused:
            run.refuse(f"record for {envelope.entity_id}: {why}")
        envelopes = [envelope for _, envelope in admission.accepted]
        if not envelopes:
            return
        try:
            applied = await self.ingest.submit(envelopes)
        except (LogUnavailable, Closed) as exc:
            raise Broken(f"publishing failed: {exc}") from None
        for outcome in applied:
            if outcome.status is OutcomeStatus.APPLIED:
                run.records += 1
            elif outcome.status is OutcomeStatus.DUPLICATE:
                run.duplicates += 1
            else:
                run.refuse("a record was refused by the store")


def _message(line: bytes, number: int) -> dict[str, Any]:
    """A Singer message, or Broken naming the line."""
    try:
        message = loads(line)
    except JSONError:
        raise Broken(
            f"line {number} of the tap's output is not a Singer message (not JSON): "
            f"{line[:60].decode(errors='replace')!r}"
        ) from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise Broken(f"line {number} of the tap's output is not a Singer message (no type)")
    return message


def _entity(raw: Any) -> str:
    payload = raw.get("payload") if isinstance(raw, dict) else None
    entity = payload.get("entity_id") if isinstance(payload, dict) else None
    return str(entity)


def _clip(message: str) -> str:
    return message if len(message) <= MAX_ERROR_CHARS else message[: MAX_ERROR_CHARS - 1] + "…"
