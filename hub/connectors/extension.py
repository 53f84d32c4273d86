"""The connectors extension: catalogue, secrets, HTTP client and scheduler of one hub.

Built by the composition root (:class:`~hub.app.Hub`), which serves
:meth:`ConnectorsExtension.routes` and runs :meth:`ConnectorsExtension.run` in its
task group. Routes are in :mod:`.api`; the polling of one job is :meth:`_poll` here.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from ..core.model import OutcomeStatus
from ..errors import Broken, Closed, LogUnavailable
from ..store.connectors import ConnectorStore
from ..store.taps import TAP_JOB, TapStore
from .api import ConnectorRoutes
from .base import CONNECTOR_NAME, Credentials, FetchResult
from .builtin import builtin_connectors, unavailable_reason
from .crypto import UNDECRYPTABLE, SecretBox
from .openapi import CONNECTOR_OPERATIONS, CONNECTOR_SCHEMAS
from .poller import GenericPoller, PollerConfig
from .scheduler import PollOutcome, Scheduler
from .singer import TapRunner
from .singer_api import SINGER, TapsApi
from .singer_openapi import TAP_OPERATIONS, TAP_SCHEMAS

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ..api.openapi import JsonObject, Operations
    from ..api.router import Route
    from ..config import ConnectorSettings, GatewaySettings
    from ..engine.ingest import Ingest
    from ..engine.publish import PublishPolicy
    from ..store import Store
    from .base import Connector

__all__ = ["FETCH_TIMEOUT_FACTOR", "MAX_EVENTS_PER_POLL", "ConnectorsExtension"]

logger = logging.getLogger("hub.connectors")

#: Most events one poll may publish; a connector returning more fails that poll.
MAX_EVENTS_PER_POLL = 10_000
#: A connector's ``fetch`` may take this many times ``poll_timeout`` (it may make
#: several requests); past it, the poll fails.
FETCH_TIMEOUT_FACTOR = 6
#: Longest scheduler tick: how soon a hub notices jobs added or moved elsewhere.
MAX_TICK = 1.0
#: Shortest tick, whatever ``min_poll_interval`` says: each tick is a Redis round trip.
MIN_TICK = 0.05
#: Seconds given to closing the HTTP client at shutdown.
CLOSE_GRACE = 1.0
#: Connections the pollers' HTTP client keeps open at most.
MAX_HTTP_CONNECTIONS = 100
#: Redirects a poll or token exchange follows.
MAX_REDIRECTS = 5
#: Characters of an error message kept in a status.
MAX_ERROR_CHARS = 500

#: Where Singer taps' pip requirements are installed when the hub is not told
#: (``hub.app`` passes ``<FLUX_DATA_DIR>/taps``).
DEFAULT_TAPS_DIR = Path("flux-data", "taps")

_CREDENTIAL_PREFIX = "cred:"
_POLLER_PREFIX = "poller:"


class ConnectorsExtension:
    """Connectors of FLUX_COMPAT.md §1.10 and §6, plus the generic HTTP poller.

    Attributes are read by the route handlers (:mod:`.api`).

    Raises:
        ConfigError: ``FLUX_ENCRYPTION_KEY`` is set but is not base64 of 32 bytes.
    """

    def __init__(
        self,
        settings: ConnectorSettings,
        gateway: GatewaySettings,
        *,
        store: Store,
        ingest: Ingest,
        policy: PublishPolicy,
        clock: Callable[[], float],
        taps_dir: Path = DEFAULT_TAPS_DIR,
    ) -> None:
        self.settings = settings
        self.ingest = ingest
        #: The checks every way in shares. A connector is configured by the admin,
        #: so its events are not rate-limited per namespace; like every writer, it
        #: may not write the hub's own namespace.
        self.policy = policy
        self.clock = clock
        #: True in Public mode (``FLUX_AUTH_ENABLED=true``).
        self.auth_enabled = gateway.auth_enabled
        #: Guards the generic poller endpoints in Public mode (None: open).
        self.admin_token = gateway.admin_token
        #: None without ``FLUX_ENCRYPTION_KEY``: no credentials, no secrets, no OAuth.
        self.box = (
            SecretBox.from_setting(settings.encryption_key)
            if settings.encryption_key is not None
            else None
        )
        self.store = ConnectorStore(store)
        # One client for every poll and token exchange; it reads no environment
        # (proxies, .netrc): the hub's settings are its only configuration.
        self.client = httpx.AsyncClient(
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            trust_env=False,
            timeout=settings.poll_timeout,
            limits=httpx.Limits(max_connections=MAX_HTTP_CONNECTIONS),
        )
        #: Connectors by name, in listing order; :meth:`add` extends it.
        self.catalogue: dict[str, Connector] = {
            c.name: c
            for c in builtin_connectors(
                self.client,
                github_api_url=settings.github_api_url,
                timeout=settings.poll_timeout,
                clock=clock,
            )
        }
        self.scheduler = Scheduler(
            self.store,
            self._poll,
            can_run=self._can_run,
            tick=max(MIN_TICK, min(MAX_TICK, settings.min_poll_interval)),
            clock=clock,
        )
        self.api = ConnectorRoutes(self)
        #: Singer taps: registry, runs, routes (docs/connectors.md, "Singer taps").
        self.taps = TapStore(store)
        self.tap_runner = TapRunner(
            self.taps,
            box=self.box,
            policy=policy,
            ingest=ingest,
            taps_dir=taps_dir,
            clock=clock,
            min_interval=settings.min_poll_interval,
        )
        self.taps_api = TapsApi(self)

    def add(self, connector: Connector) -> None:
        """Add a connector to the catalogue (listed, configurable and polled).

        Raises:
            ValueError: the name is taken or not a valid connector name.
        """
        name = connector.name
        if CONNECTOR_NAME.fullmatch(name) is None or name in ("generic", SINGER):
            raise ValueError(
                f"invalid connector name {name!r}: [a-z][a-z0-9_]*, not 'generic' or 'singer'"
            )
        if name in self.catalogue:
            raise ValueError(f"connector {name!r} already exists")
        self.catalogue[name] = connector

    def routes(self) -> list[Route]:
        """``/api/connectors`` and everything under it."""
        return self.taps_api.routes() + self.api.routes()

    def openapi(self) -> tuple[Operations, Mapping[str, JsonObject]]:
        """The OpenAPI operations of :meth:`routes` and the schemas they refer to."""
        return {**CONNECTOR_OPERATIONS, **TAP_OPERATIONS}, {**CONNECTOR_SCHEMAS, **TAP_SCHEMAS}

    async def run(self) -> None:
        """Run the scheduler until cancelled; then close the HTTP client."""
        try:
            await self.scheduler.run()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_GRACE):
                await self.client.aclose()

    # ------------------------------------------------------------------ polling

    def now_ms(self) -> int:
        return math.floor(self.clock() * 1000)

    def _can_run(self, job: str) -> bool:
        if job.startswith(_CREDENTIAL_PREFIX):
            found = self.catalogue.get(job[len(_CREDENTIAL_PREFIX) :].partition(":")[0])
            # A connector that is not available is never polled.
            return found is not None and unavailable_reason(found) is None
        return job.startswith((_POLLER_PREFIX, TAP_JOB))

    async def _poll(self, job: str) -> PollOutcome:
        """Poll one job once: fetch, validate, publish. Records nothing itself.

        Raises:
            LogUnavailable: Redis failed while reading the job.
        """
        if job.startswith(TAP_JOB):
            ran = await self.tap_runner.run(job[len(TAP_JOB) :])
            return None if ran is None else (*ran, None)
        entry = await self.store.job_entry(job)
        if entry is None:
            return None
        connector: Connector
        credentials: Credentials | None = None
        if job.startswith(_POLLER_PREFIX):
            config = PollerConfig.from_json(job[len(_POLLER_PREFIX) :], entry)
            if config is None:
                return (
                    self.settings.min_poll_interval,
                    "the stored poller configuration is damaged",
                    None,
                )
            connector = GenericPoller(
                config,
                self.client,
                max_bytes=self.settings.max_poll_bytes,
                timeout=self.settings.poll_timeout,
            )
            if config.secret is not None:
                token = self._open(config.secret, job)
                if token is None:
                    return config.poll_interval, "the stored token " + self._unreadable(), None
                credentials = Credentials(token.decode())
        else:
            name = job[len(_CREDENTIAL_PREFIX) :].partition(":")[0]
            found = self.catalogue.get(name)
            if found is None or unavailable_reason(found) is not None:
                return None
            connector = found
            plain = self._open(entry, job)
            credentials = None if plain is None else Credentials.from_json(plain)
            if credentials is None:
                return connector.poll_interval, "the stored credentials " + self._unreadable(), None
        interval = connector.poll_interval
        limit = FETCH_TIMEOUT_FACTOR * self.settings.poll_timeout
        fetched: list[dict[str, Any]] | FetchResult
        try:
            with anyio.fail_after(limit):
                fetched = await connector.fetch(credentials)
        except TimeoutError:
            fetched = FetchResult([], f"fetch did not finish within {limit:g} s")
        except (Broken, NotImplementedError) as exc:
            fetched = FetchResult([], str(exc) or type(exc).__name__)
        except Exception as exc:
            # Not the message: it may quote a secret (a header value, say).
            logger.warning("connector %s failed: %s", connector.name, type(exc).__name__)
            fetched = FetchResult([], f"{type(exc).__name__}: {exc}")
        if not isinstance(fetched, FetchResult):
            fetched = FetchResult(fetched)
        error, counts = await self._publish(fetched.events)
        if job.startswith(_CREDENTIAL_PREFIX):
            # This poll's counts and the connector's figures, in the job's status.
            figures = {**fetched.figures, **counts}
            await self.store.record_figures(job, figures, {"records_total": counts["records"]})
        if fetched.error is not None:
            # The fetch's own error first: it says why the events may be incomplete.
            error = fetched.error if error is None else f"{fetched.error}; {error}"
        return interval, None if error is None else _clip(error), fetched.not_before

    def _open(self, sealed: bytes, job: str) -> bytes | None:
        return None if self.box is None else self.box.open(sealed, job)

    def _unreadable(self) -> str:
        if self.box is None:
            return "cannot be read: FLUX_ENCRYPTION_KEY is not set"
        return UNDECRYPTABLE

    async def _publish(self, events: Any) -> tuple[str | None, dict[str, int]]:
        """Validate and apply a poll's events.

        Returns:
            The error to record (or None), and the counts of the events applied
            (``records``), dropped as already applied (``duplicates``: a repeated
            ``eventId``) and refused (``rejected``).
        """
        counts = {"records": 0, "duplicates": 0, "rejected": 0}
        if not isinstance(events, list):
            return f"fetch returned {type(events).__name__}, not a list of events", counts
        if len(events) > MAX_EVENTS_PER_POLL:
            counts["rejected"] = len(events)
            error = f"fetch returned {len(events)} events (at most {MAX_EVENTS_PER_POLL})"
            return error, counts
        valid, failed = self.policy.parse_many(events, self.now_ms())
        admission = self.policy.admit_trusted(valid)
        refusals = [(n, str(exc)) for n, _, exc in failed]
        refusals += [(n, str(why)) for n, _, why in admission.refused]
        problems = [f"event {n}: {why}" for n, why in sorted(refusals)]
        envelopes = [envelope for _, envelope in admission.accepted]
        counts["rejected"] = len(refusals)
        if envelopes:
            try:
                applied = await self.ingest.submit(envelopes)
            except (LogUnavailable, Closed) as exc:
                problems.insert(0, f"publishing failed: {exc}")
            else:
                for outcome in applied:
                    if outcome.status is OutcomeStatus.APPLIED:
                        counts["records"] += 1
                    elif outcome.status is OutcomeStatus.DUPLICATE:
                        counts["duplicates"] += 1
                    else:
                        counts["rejected"] += 1
        if not problems:
            return None, counts
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        return _clip(problems[0] + more), counts


def _clip(message: str) -> str:
    if len(message) <= MAX_ERROR_CHARS:
        return message
    return message[: MAX_ERROR_CHARS - 1] + "…"
