"""Routes of Singer taps, and their entries in Flux's connector status endpoints.

``POST``/``GET /api/connectors/singer``, ``GET``/``DELETE /api/connectors/singer/:name``
(docs/connectors.md, "Singer taps"). A tap runs a program of the admin's choosing on
the hub: in Public mode these routes need ``FLUX_ADMIN_TOKEN``, and are refused (403)
on a hub that has none. In Internal mode they are open, as every route is.

:meth:`TapsApi.entries` gives the taps' entries of ``GET /api/connectors`` and
``GET /api/connectors/:name``: Flux's fields (``name``, ``enabled``, ``status``,
``poll_interval_seconds``, ``last_poll``, ``last_error``, ``next_poll``) plus the
run figures of a tap.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from ..api.common import json_body
from ..api.router import Route
from ..core.timefmt import format_ms
from ..engine.auth import BearerProblem, constant_time_equal, read_bearer
from ..errors import BadRequest, LogUnavailable
from ..store.taps import TapFigures, tap_job
from ..transport.http import Request, Response, json_response
from ..wire.jsonutil import dumps
from .poller import as_number
from .singer_spec import TapSpec, parse_tap_request
from .status_view import optional_time

if TYPE_CHECKING:
    from ..config import ConnectorSettings
    from ..store.connectors import ConnectorStore, JobStatus
    from ..store.taps import TapStore
    from .base import Connector
    from .crypto import SecretBox
    from .scheduler import Scheduler

__all__ = ["MAX_TAPS", "SINGER", "TapsApi"]

logger = logging.getLogger("hub.connectors")

#: The path segment of the tap endpoints (never a connector's name).
SINGER = "singer"
#: Taps a cluster holds at most, unless ``FLUX_MAX_TAPS`` says otherwise.
MAX_TAPS = 100
_PREFIX = "/api/connectors/singer"


class TapsState(Protocol):
    """What the handlers read of the connectors extension."""

    settings: ConnectorSettings
    auth_enabled: bool
    admin_token: str | None
    box: SecretBox | None
    store: ConnectorStore
    taps: TapStore
    catalogue: dict[str, Connector]
    scheduler: Scheduler

    def now_ms(self) -> int: ...


class TapsApi:
    """The handlers of ``/api/connectors/singer`` (:meth:`routes`)."""

    def __init__(self, extension: TapsState) -> None:
        self.ext = extension

    def routes(self) -> list[Route]:
        """Matched before ``/api/connectors/{name}``."""
        return [
            Route(_PREFIX, {"GET": self.list_taps, "POST": self.add_tap}),
            Route(_PREFIX + "/{name}", {"GET": self.get_tap, "DELETE": self.delete_tap}),
        ]

    def _require_admin(self, request: Request) -> None:
        if not self.ext.auth_enabled:
            return
        admin = self.ext.admin_token
        if admin is None:
            raise BadRequest(
                "Singer taps run programs on the hub: in Public mode they need FLUX_ADMIN_TOKEN",
                403,
            )
        token = read_bearer(request.headers.get("authorization"))
        if isinstance(token, BearerProblem) or not constant_time_equal(token, admin):
            raise BadRequest("Unauthorized", 401)

    async def add_tap(self, request: Request) -> Response:
        """``POST /api/connectors/singer`` -> 201 ``{"name": …}``."""
        self._require_admin(request)
        reserved = set(self.ext.catalogue) | {"generic", SINGER}
        spec = parse_tap_request(
            json_body(request), min_interval=self.ext.settings.min_poll_interval, reserved=reserved
        )
        sealed = None
        if spec.secrets is not None:
            if self.ext.box is None:
                raise BadRequest(
                    "secrets: Credential storage not available (FLUX_ENCRYPTION_KEY not set)", 500
                )
            sealed = self.ext.box.seal(dumps(spec.secrets), tap_job(spec.name))
        now = self.ext.now_ms()
        stored = TapSpec(
            name=spec.name,
            tap=spec.tap,
            pip=spec.pip,
            executable=spec.executable,
            namespace=spec.namespace,
            config=spec.config,
            sealed_secrets=sealed,
            streams=spec.streams,
            interval=spec.interval,
            timeout=spec.timeout,
            idle_timeout=spec.idle_timeout,
            created_ms=now,
        )
        limit = self.ext.settings.max_taps
        added = await self.ext.taps.add(spec.name, stored.to_json(), max_taps=limit, now_ms=now)
        if added < 0:
            raise BadRequest(f"tap '{spec.name}' exists: delete it first", 409)
        if added == 0:
            raise BadRequest(
                f"tap limit reached: at most {limit} taps (FLUX_MAX_TAPS); delete one first", 409
            )
        self.ext.scheduler.wake()
        return json_response({"name": spec.name}, 201)

    async def list_taps(self, request: Request) -> Response:
        """``GET /api/connectors/singer`` -> ``{"taps": [view, …]}`` by name."""
        self._require_admin(request)
        specs = await self._specs()
        return json_response({"taps": await self._views(specs)})

    async def get_tap(self, request: Request, name: str) -> Response:
        """``GET /api/connectors/singer/:name``: configuration (no secrets) and status."""
        self._require_admin(request)
        entry = await self.ext.taps.get(name)
        spec = None if entry is None else TapSpec.from_json(name, entry)
        if spec is None:
            raise BadRequest(f"Tap '{name}' not found", 404)
        return json_response((await self._views([spec]))[0])

    async def delete_tap(self, request: Request, name: str) -> Response:
        """``DELETE /api/connectors/singer/:name`` -> 204; a run under way is stopped."""
        self._require_admin(request)
        if not await self.ext.taps.delete(name):
            raise BadRequest(f"Tap '{name}' not found", 404)
        self.ext.scheduler.forget(tap_job(name))
        return Response(204, content_type=None)

    # ------------------------------------------------------------------ status

    async def entries(self, only: str | None = None) -> list[dict[str, Any]]:
        """The taps' entries of Flux's status endpoints (all, or the one named).

        A tap's ``status`` is ``configured``, or ``error`` when its last run failed;
        Redis failing gives no entries (the catalogue's answer still goes out).
        """
        try:
            if only is None:
                specs = await self._specs()
            else:
                entry = await self.ext.taps.get(only)
                found = None if entry is None else TapSpec.from_json(only, entry)
                specs = [] if found is None else [found]
            jobs = [tap_job(s.name) for s in specs]
            statuses = await self.ext.store.statuses(jobs)
            figures = await self.ext.taps.figures([s.name for s in specs])
        except LogUnavailable as exc:
            logger.warning("cannot read the taps' status: %s", exc)
            return []
        return [
            _entry(spec, status, figure)
            for spec, status, figure in zip(specs, statuses, figures, strict=True)
        ]

    async def _specs(self) -> list[TapSpec]:
        entries = sorted((await self.ext.taps.taps()).items())
        specs = [TapSpec.from_json(name, data) for name, data in entries]
        return [s for s in specs if s is not None]

    async def _views(self, specs: list[TapSpec]) -> list[dict[str, Any]]:
        statuses = await self.ext.store.statuses([tap_job(s.name) for s in specs])
        figures = await self.ext.taps.figures([s.name for s in specs])
        return [
            {
                **spec.describe(),
                "state": _state(status, figure),
                "created_at": format_ms(spec.created_ms),
                "last_run": optional_time(status.last_poll),
                "last_success": optional_time(status.last_success),
                "last_error": status.last_error,
                "next_run": optional_time(status.next_poll),
                "runs": status.polls,
                "failures": status.failures,
                "consecutive_failures": status.consecutive_failures,
                "records": figure.records,
                "duplicates": figure.duplicates,
                "rejected": figure.rejected,
                "records_total": figure.records_total,
            }
            for spec, status, figure in zip(specs, statuses, figures, strict=True)
        ]


def _state(status: JobStatus, figure: TapFigures) -> str:
    """``installing``/``running`` (now), else ``pending``, ``ok`` or ``error`` (last run)."""
    if figure.phase in ("installing", "running"):
        return figure.phase
    if status.last_poll is None:
        return "pending"
    return "ok" if status.last_error is None else "error"


def _entry(spec: TapSpec, status: JobStatus, figure: TapFigures) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": spec.name,
        "enabled": True,
        "status": "error" if status.last_error is not None else "configured",
        "poll_interval_seconds": as_number(spec.interval),
        "kind": SINGER,
        "tap": spec.tap,
        "state": _state(status, figure),
    }
    optional = {
        "last_poll": optional_time(status.last_poll),
        "last_error": status.last_error,
        "next_poll": optional_time(status.next_poll),
    }
    entry.update({k: v for k, v in optional.items() if v is not None})
    entry.update(
        runs=status.polls,
        failures=status.failures,
        records=figure.records,
        duplicates=figure.duplicates,
        rejected=figure.rejected,
        records_total=figure.records_total,
    )
    return entry
