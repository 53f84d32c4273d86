"""Routes under ``/api/connectors``: FLUX_COMPAT.md §1.10, and the generic poller.

Flux endpoints keep Flux's shapes, statuses, error strings and check orders. Our
differences (docs/connectors.md): the single-connector endpoint agrees with the list
in Internal mode, ``last_poll``/``last_error`` (and ``next_poll``) are real, a stored
credential that no longer decrypts reports ``error``, the user of a Public-mode token
is its SHA-256 (the token itself is never stored), and bearer parsing is the hub's
one parser.

Generic poller endpoints (new): ``GET``/``POST /api/connectors/generic``,
``GET``/``DELETE /api/connectors/generic/:id``. Open in Internal mode; in Public mode
they need the admin token (when one is set), since a poller may write to any
namespace and fetch any URL the hub can reach.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any, Protocol

from ..api.common import json_body, unprocessable
from ..api.router import Route, mount
from ..core.timefmt import format_ms
from ..engine.auth import BearerProblem, constant_time_equal, hash_token, read_bearer
from ..engine.ids import uuid7
from ..errors import BadRequest, Broken, LogUnavailable
from ..store.connectors import JobStatus, credential_job, poller_job
from ..transport.http import Request, Response, json_response
from ..wire.envelope import serde_type_name
from ..wire.jsonutil import JSONError, dumps, loads
from .base import Credentials
from .builtin import unavailable_reason
from .crypto import UNDECRYPTABLE
from .oauth import authorize_url, callback_url, exchange_code
from .poller import PollerConfig, as_number, parse_poller_request
from .status_view import optional_time, run_figures, unavailable_view

if TYPE_CHECKING:
    import httpx

    from ..config import ConnectorSettings
    from ..store.connectors import ConnectorStore
    from .base import Connector
    from .crypto import SecretBox
    from .scheduler import Scheduler
    from .singer_api import TapsApi

__all__ = ["GENERIC", "MAX_CREDENTIALS", "ConnectorRoutes"]

logger = logging.getLogger("hub.connectors")

PREFIX = "/api/connectors"
#: The path segment of the generic poller endpoints (never a connector's name).
GENERIC = "generic"
#: Credentials the hub stores at most (each is a job every hub looks at each tick).
MAX_CREDENTIALS = 10_000
#: Internal mode's only user (Flux).
DEFAULT_USER = "default"

_TOKEN_ERRORS = {
    BearerProblem.MISSING: "Authorization token not provided",
    BearerProblem.MALFORMED: "Invalid authorization token format",
    BearerProblem.EMPTY: "Authorization token is empty",
}
_NO_STORE = "Credential storage not available (FLUX_ENCRYPTION_KEY not set)"


class ConnectorsState(Protocol):
    """What the handlers read of the connectors extension (which owns it all)."""

    settings: ConnectorSettings
    #: True in Public mode (``FLUX_AUTH_ENABLED=true``).
    auth_enabled: bool
    #: Guards the generic poller endpoints in Public mode (None: open).
    admin_token: str | None
    #: None without ``FLUX_ENCRYPTION_KEY``: no credentials, no secrets, no OAuth.
    box: SecretBox | None
    store: ConnectorStore
    catalogue: dict[str, Connector]
    client: httpx.AsyncClient
    scheduler: Scheduler
    taps_api: TapsApi

    def now_ms(self) -> int: ...


class ConnectorRoutes:
    """The handlers of ``/api/connectors`` (:meth:`routes`)."""

    def __init__(self, extension: ConnectorsState) -> None:
        self.ext = extension

    def routes(self) -> list[Route]:
        """The routes of ``/api/connectors`` (``generic`` is matched before ``{name}``)."""
        return mount(
            PREFIX,
            [
                Route("/", {"GET": self.list_connectors}),
                Route("/generic", {"GET": self.list_pollers, "POST": self.add_poller}),
                Route(
                    "/generic/{source_id}",
                    {"GET": self.get_poller, "DELETE": self.delete_poller},
                ),
                Route("/{name}", {"GET": self.get_connector}),
                Route("/{name}/token", {"POST": self.store_token, "DELETE": self.delete_token}),
                Route("/{name}/oauth/start", {"GET": self._oauth_start}),
                Route("/{name}/oauth/callback", {"GET": self._oauth_callback}),
            ],
        )

    def _oauth_available(self) -> None:
        if self.ext.box is None:
            # Flux mounts the OAuth routes only with a credential store.
            raise BadRequest("OAuth is not available: FLUX_ENCRYPTION_KEY is not set", 404)

    async def _oauth_start(self, request: Request, name: str) -> Response:
        self._oauth_available()
        return await self.oauth_start(request, name=name)

    async def _oauth_callback(self, request: Request, name: str) -> Response:
        self._oauth_available()
        return await self.oauth_callback(request, name=name)

    # ------------------------------------------------------------------ who is asking

    def _user(self, request: Request) -> str:
        """The credential owner: ``default`` in Internal mode, else the token's hash.

        Raises:
            BadRequest: 401 ``Invalid token: …`` (Public mode, no usable bearer).
        """
        if not self.ext.auth_enabled:
            return DEFAULT_USER
        token = read_bearer(request.headers.get("authorization"))
        if isinstance(token, BearerProblem):
            raise BadRequest(f"Invalid token: {_TOKEN_ERRORS[token]}", 401)
        return hash_token(token)

    def _require_admin(self, request: Request) -> None:
        """Public mode with an admin token: the generic endpoints need it."""
        admin = self.ext.admin_token
        if not self.ext.auth_enabled or admin is None:
            return
        token = read_bearer(request.headers.get("authorization"))
        if isinstance(token, BearerProblem) or not constant_time_equal(token, admin):
            raise BadRequest("Unauthorized", 401)

    def _require_connector(self, name: str) -> None:
        if name not in self.ext.catalogue:
            raise BadRequest(f"Connector '{name}' not found", 404)

    def _require_available(self, name: str) -> None:
        """A connector the hub cannot fetch from takes no credentials: 409."""
        reason = unavailable_reason(self.ext.catalogue[name])
        if reason is not None:
            raise BadRequest(f"{reason}; no credentials were stored", 409)

    # ------------------------------------------------------------------ §1.10 status

    async def _states(self, user: str, names: list[str]) -> dict[str, tuple[str, str | None]]:
        """``name -> (status, problem)`` for a user: configured, not_configured or error."""
        box = self.ext.box
        if box is None:
            return dict.fromkeys(names, ("not_configured", None))
        try:
            stored = await self.ext.store.credentials_of(user, names)
        except LogUnavailable as exc:
            logger.warning("cannot read connector credentials: %s", exc)
            return dict.fromkeys(names, ("error", "credential storage unavailable"))
        states: dict[str, tuple[str, str | None]] = {}
        for name in names:
            blob = stored.get(name)
            if blob is None:
                states[name] = ("not_configured", None)
            elif box.open(blob, credential_job(name, user)) is None:
                states[name] = ("error", "the stored credentials " + UNDECRYPTABLE)
            else:
                states[name] = ("configured", None)
        return states

    async def list_connectors(self, request: Request) -> Response:
        """``GET /api/connectors``: auth (401), then every connector's status."""
        user = self._user(request)
        names = list(self.ext.catalogue)
        states = await self._states(user, names)
        for name in names:
            if unavailable_reason(self.ext.catalogue[name]) is not None:
                states[name] = ("not_available", None)
        connectors = [
            {"name": n, "enabled": states[n][0] == "configured", "status": states[n][0]}
            for n in names
        ]
        # Then the Singer taps, with their run figures beside Flux's fields.
        connectors += await self.ext.taps_api.entries()
        return json_response({"connectors": connectors})

    async def get_connector(self, request: Request, name: str) -> Response:
        """``GET /api/connectors/:name``: name (404), auth (401), then the status."""
        if name not in self.ext.catalogue:
            tap = await self.ext.taps_api.entries(name)
            if tap:
                self._user(request)
                return json_response(tap[0])
        self._require_connector(name)
        user = self._user(request)
        connector = self.ext.catalogue[name]
        reason = unavailable_reason(connector)
        if reason is not None:
            return json_response(unavailable_view(name, connector.poll_interval, reason))
        status, problem = (await self._states(user, [name]))[name]
        detail: dict[str, Any] = {
            "name": name,
            "enabled": status == "configured",
            "status": status,
            "poll_interval_seconds": as_number(connector.poll_interval),
        }
        if status != "not_configured":
            job = await self._job_status(credential_job(name, user))
            # Flux leaves these fields out when unknown; so do we.
            if job is not None and job.last_poll is not None:
                detail["last_poll"] = format_ms(job.last_poll)
            error = job.last_error if job is not None else None
            if error is not None or problem is not None:
                detail["last_error"] = error if error is not None else problem
            if job is not None and job.next_poll is not None:
                detail["next_poll"] = format_ms(job.next_poll)
            if job is not None and job.last_poll is not None:
                detail.update(run_figures(job))
        return json_response(detail)

    async def _job_status(self, job: str) -> JobStatus | None:
        try:
            return (await self.ext.store.statuses([job]))[0]
        except LogUnavailable as exc:
            logger.warning("cannot read connector status: %s", exc)
            return None

    async def store_token(self, request: Request, name: str) -> Response:
        """``POST /api/connectors/:name/token``: body, name, store, auth, upsert."""
        body = json_body(request)
        if not isinstance(body, dict):
            raise unprocessable(
                f"invalid type: {serde_type_name(body)}, expected struct TokenRequest"
            )
        if "token" not in body:
            raise unprocessable("missing field `token`")
        token = body["token"]
        if not isinstance(token, str):
            raise unprocessable(f"token: invalid type: {serde_type_name(token)}, expected a string")
        self._require_connector(name)
        self._require_available(name)
        box = self.ext.box
        if box is None:
            raise BadRequest(_NO_STORE, 500)
        user = self._user(request)
        job = credential_job(name, user)
        sealed = box.seal(Credentials(token).to_json(), job)
        try:
            stored = await self.ext.store.put_credentials(
                name, user, sealed, now_ms=self.ext.now_ms(), max_credentials=MAX_CREDENTIALS
            )
        except LogUnavailable as exc:
            logger.warning("cannot store connector credentials: %s", exc)
            raise BadRequest("Failed to store credentials", 500) from None
        if not stored:
            raise BadRequest(
                f"Failed to store credentials: the hub holds its maximum of {MAX_CREDENTIALS}",
                500,
            )
        self.ext.scheduler.wake()
        return json_response({"success": True})

    async def delete_token(self, request: Request, name: str) -> Response:
        """``DELETE /api/connectors/:name/token``: name, store, auth, delete."""
        self._require_connector(name)
        if self.ext.box is None:
            raise BadRequest(_NO_STORE, 500)
        user = self._user(request)
        try:
            deleted = await self.ext.store.delete_credentials(name, user)
        except LogUnavailable as exc:
            logger.warning("cannot delete connector credentials: %s", exc)
            raise BadRequest("Failed to delete credentials", 500) from None
        if not deleted:
            raise BadRequest(f"No credentials found for connector '{name}'", 404)
        self.ext.scheduler.forget(credential_job(name, user))
        return json_response({"success": True})

    # ------------------------------------------------------------------ §1.10 OAuth

    async def oauth_start(self, request: Request, name: str) -> Response:
        """``GET …/oauth/start``: name (404), auth (401), client (500), then 307."""
        self._require_connector(name)
        self._require_available(name)
        user = self._user(request)
        config = self.ext.catalogue[name].oauth_config
        if config is None:
            raise BadRequest(f"Connector '{name}' does not support OAuth", 404)
        client = self.ext.settings.oauth_clients.get(name)
        if client is None:
            upper = name.upper()
            raise BadRequest(
                f"OAuth not configured for connector '{name}'. Set FLUX_OAUTH_{upper}_CLIENT_ID"
                f" and FLUX_OAUTH_{upper}_CLIENT_SECRET environment variables.",
                500,
            )
        state = str(uuid.uuid4())
        await self.ext.store.put_oauth_state(state, dumps({"connector": name, "user": user}))
        redirect = callback_url(self.ext.settings.oauth_callback_base_url, name)
        location = authorize_url(config, client_id=client[0], redirect_uri=redirect, state=state)
        return Response(307, content_type=None, headers=[(b"location", location.encode())])

    async def oauth_callback(self, request: Request, name: str) -> Response:
        """``GET …/oauth/callback?code&state``: Flux's checks, in Flux's order."""
        query = request.query
        if "error" in query:
            description = query.get("error_description", "Unknown error")
            raise BadRequest(f"OAuth authorization failed: {query['error']} - {description}")
        if "code" not in query:
            raise BadRequest("Missing 'code' parameter")
        if "state" not in query:
            raise BadRequest("Missing 'state' parameter")
        pending = await self.ext.store.take_oauth_state(query["state"])
        flow = _decode_flow(pending)
        if flow is None:
            raise BadRequest("Invalid or expired OAuth state (possible CSRF attack)", 401)
        connector, user = flow
        if connector != name:
            raise BadRequest("Connector name mismatch")
        found = self.ext.catalogue.get(name)
        config = None if found is None else found.oauth_config
        client = self.ext.settings.oauth_clients.get(name)
        if config is None or client is None:
            raise BadRequest(f"OAuth not configured for connector '{name}'", 500)
        settings = self.ext.settings
        try:
            credentials = await exchange_code(
                self.ext.client,
                config.token_url,
                code=query["code"],
                redirect_uri=callback_url(settings.oauth_callback_base_url, name),
                client_id=client[0],
                client_secret=client[1],
                time_limit=settings.poll_timeout,
                max_bytes=settings.max_poll_bytes,
                now_ms=self.ext.now_ms(),
            )
        except Broken as exc:
            raise BadRequest(f"Failed to exchange authorization code: {exc}", 502) from None
        box = self.ext.box
        assert box is not None  # the OAuth routes exist only with a key
        sealed = box.seal(credentials.to_json(), credential_job(name, user))
        try:
            stored = await self.ext.store.put_credentials(
                name, user, sealed, now_ms=self.ext.now_ms(), max_credentials=MAX_CREDENTIALS
            )
        except LogUnavailable as exc:
            raise BadRequest(f"Failed to store credentials: {exc}", 500) from None
        if not stored:
            raise BadRequest(
                f"Failed to store credentials: the hub holds its maximum of {MAX_CREDENTIALS}",
                500,
            )
        self.ext.scheduler.wake()
        return json_response(
            {"success": True, "message": f"Successfully connected {name}", "connector": name}
        )

    # ------------------------------------------------------------------ generic pollers

    async def add_poller(self, request: Request) -> Response:
        """``POST /api/connectors/generic`` -> 201 ``{source_id}``."""
        self._require_admin(request)
        settings = self.ext.settings
        spec = parse_poller_request(json_body(request), min_interval=settings.min_poll_interval)
        now = self.ext.now_ms()
        source_id = uuid7(now)
        secret = None
        if spec.token is not None:
            box = self.ext.box
            if box is None:
                raise BadRequest(_NO_STORE, 500)
            secret = box.seal(spec.token.encode(), poller_job(source_id))
        config = PollerConfig(
            source_id=source_id,
            name=spec.name,
            url=spec.url,
            poll_interval=spec.poll_interval,
            entity_key=spec.entity_key,
            namespace=spec.namespace,
            auth=spec.auth,
            auth_type=spec.auth_type,
            secret=secret,
            created_ms=now,
        )
        added = await self.ext.store.add_poller(
            source_id, config.to_json(), max_pollers=settings.max_pollers, now_ms=now
        )
        if not added:
            raise BadRequest(
                f"poller limit reached: at most {settings.max_pollers} pollers"
                " (FLUX_MAX_POLLERS); delete one first",
                409,
            )
        self.ext.scheduler.wake()
        return json_response({"source_id": source_id}, 201)

    async def list_pollers(self, request: Request) -> Response:
        """``GET /api/connectors/generic`` -> ``{"pollers": [status, …]}``, oldest first."""
        self._require_admin(request)
        entries = sorted((await self.ext.store.pollers()).items())
        configs = [PollerConfig.from_json(source_id, data) for source_id, data in entries]
        valid = [c for c in configs if c is not None]
        statuses = await self.ext.store.statuses([poller_job(c.source_id) for c in valid])
        return json_response(
            {"pollers": [_poller_view(c, s) for c, s in zip(valid, statuses, strict=True)]}
        )

    async def get_poller(self, request: Request, source_id: str) -> Response:
        """``GET /api/connectors/generic/:id``: configuration and status."""
        self._require_admin(request)
        job = poller_job(source_id)
        entry = await self.ext.store.job_entry(job)
        config = None if entry is None else PollerConfig.from_json(source_id, entry)
        if config is None:
            raise BadRequest(f"Poller '{source_id}' not found", 404)
        status = (await self.ext.store.statuses([job]))[0]
        return json_response(_poller_view(config, status))

    async def delete_poller(self, request: Request, source_id: str) -> Response:
        """``DELETE /api/connectors/generic/:id`` -> 204."""
        self._require_admin(request)
        if not await self.ext.store.delete_poller(source_id):
            raise BadRequest(f"Poller '{source_id}' not found", 404)
        self.ext.scheduler.forget(poller_job(source_id))
        return Response(204, content_type=None)


# ---------------------------------------------------------------------- helpers


def _poller_view(config: PollerConfig, status: JobStatus) -> dict[str, Any]:
    if status.last_poll is None:
        state = "pending"
    elif status.last_error is None:
        state = "ok"
    else:
        state = "error"
    return {
        **config.describe(),
        "status": state,
        "created_at": format_ms(config.created_ms),
        "last_poll": optional_time(status.last_poll),
        "last_success": optional_time(status.last_success),
        "last_error": status.last_error,
        "next_poll": optional_time(status.next_poll),
        "polls": status.polls,
        "failures": status.failures,
        "consecutive_failures": status.consecutive_failures,
    }


def _decode_flow(pending: bytes | None) -> tuple[str, str] | None:
    if pending is None:
        return None
    try:
        value = loads(pending)
        return str(value["connector"]), str(value["user"])
    except (JSONError, KeyError, TypeError):
        return None
