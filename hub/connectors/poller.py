"""The generic HTTP poller: any JSON API becomes a live entity.

A poller is registered with ``POST /api/connectors/generic``. On each poll, one hub
GETs its URL and publishes one event:

- stream ``generic``, source ``poller.<source_id>``;
- ``entity_id`` = ``<namespace>/<entity_key>``;
- ``properties`` = the JSON object returned. A body that is JSON but not an object
  (an array, a number, a string...) is published as ``{"value": <body>}``.

Properties merge as for any event (FLUX_COMPAT.md §3): a key the API stops returning
keeps its last value, and an empty object changes nothing.

Bounds: a poll must finish within ``poll_timeout`` seconds (connection, redirects and
the whole body), and its body may not exceed ``max_poll_bytes`` (after decompression).
Every failure raises :class:`~hub.errors.Broken` with a short message, which the
scheduler records as the poller's ``last_error``.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import httpx

from ..errors import BadRequest, Broken
from ..wire.envelope import serde_type_name
from ..wire.jsonutil import JSONError, dumps, loads, serde_message
from ..wire.names import RESERVED_NAMESPACE, namespace_error
from .base import connector_event

if TYPE_CHECKING:
    from .base import Credentials

__all__ = [
    "MAX_POLL_INTERVAL",
    "POLLER_SOURCE_PREFIX",
    "POLLER_STREAM",
    "GenericPoller",
    "PollerConfig",
    "PollerRequest",
    "as_number",
    "parse_poller_request",
]

POLLER_STREAM = "generic"
POLLER_SOURCE_PREFIX = "poller."
#: Longest poll interval accepted (one day).
MAX_POLL_INTERVAL = 86_400.0
MAX_NAME = 200
MAX_URL = 2048
MAX_ENTITY_KEY = 256
MAX_TOKEN = 8192
USER_AGENT = "flux-hub-poller"

# RFC 9110 §5.6.2 token characters: what a header name may contain.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Headers the HTTP client owns; a key placed there would break the request.
_RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "te", "upgrade"}
)
_AUTH_HINT = 'expected "none", "bearer" or {"api_key_header": "<header name>"}'


@dataclass(frozen=True, slots=True)
class PollerConfig:
    """A registered poller, as stored (its secret sealed, never in clear)."""

    source_id: str
    name: str
    url: str
    #: Seconds between polls.
    poll_interval: float
    entity_key: str
    namespace: str
    #: ``"none"``, ``"bearer"``, or the name of the header that carries the key.
    auth: str
    #: ``auth`` as the API shows it: ``"none"``, ``"bearer"`` or ``{"api_key_header": h}``.
    auth_type: str | dict[str, str]
    #: The token, sealed by :class:`~hub.connectors.crypto.SecretBox`.
    secret: bytes | None
    created_ms: int

    @property
    def entity_id(self) -> str:
        return f"{self.namespace}/{self.entity_key}"

    @property
    def source(self) -> str:
        return POLLER_SOURCE_PREFIX + self.source_id

    def to_json(self) -> bytes:
        return dumps(
            {
                "name": self.name,
                "url": self.url,
                "poll_interval_secs": self.poll_interval,
                "entity_key": self.entity_key,
                "namespace": self.namespace,
                "auth_type": self.auth_type,
                "secret": None if self.secret is None else base64.b64encode(self.secret).decode(),
                "created_ms": self.created_ms,
            }
        )

    @classmethod
    def from_json(cls, source_id: str, data: bytes) -> PollerConfig | None:
        """Read the stored form; None if it is damaged."""
        try:
            value = loads(data)
            secret = value["secret"]
            auth_type = value["auth_type"]
            return cls(
                source_id=source_id,
                name=value["name"],
                url=value["url"],
                poll_interval=float(value["poll_interval_secs"]),
                entity_key=value["entity_key"],
                namespace=value["namespace"],
                auth=auth_type if isinstance(auth_type, str) else auth_type["api_key_header"],
                auth_type=auth_type,
                secret=None if secret is None else base64.b64decode(secret),
                created_ms=int(value["created_ms"]),
            )
        except (JSONError, KeyError, TypeError, ValueError, binascii.Error):
            return None

    def describe(self) -> dict[str, Any]:
        """The public view of the configuration (no secret, ever)."""
        return {
            "source_id": self.source_id,
            "name": self.name,
            "url": self.url,
            "poll_interval_secs": as_number(self.poll_interval),
            "namespace": self.namespace,
            "entity_key": self.entity_key,
            "entity_id": self.entity_id,
            "auth_type": self.auth_type,
        }


@dataclass(frozen=True, slots=True)
class PollerRequest:
    """A validated ``POST /api/connectors/generic`` body."""

    name: str
    url: str
    poll_interval: float
    entity_key: str
    namespace: str
    auth: str
    auth_type: str | dict[str, str]
    token: str | None


def parse_poller_request(body: Any, *, min_interval: float) -> PollerRequest:
    """Validate a poller registration.

    Unknown fields are ignored, as Flux's connector-manager does; among them
    ``flux_namespace_token``, which the hub does not need (it applies the events
    itself).

    Raises:
        BadRequest: 422, naming the field and the problem.
    """
    if not isinstance(body, dict):
        raise _invalid(
            "body",
            "expected a JSON object with name, url, poll_interval_secs, entity_key and namespace",
        )
    name = _string(body, "name", MAX_NAME)
    url = _string(body, "url", MAX_URL)
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise _invalid("url", f"scheme must be http or https, got {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise _invalid("url", "has no host")
    if parts.username is not None or parts.password is not None:
        raise _invalid("url", "must not contain credentials; use auth_type and token")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise _invalid("url", "must not contain spaces or control characters")
    try:
        httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise _invalid("url", f"not a valid URL: {exc}") from None
    interval = body.get("poll_interval_secs")
    if interval is None:
        raise _invalid("poll_interval_secs", "required")
    if isinstance(interval, bool) or not isinstance(interval, int | float):
        raise _invalid("poll_interval_secs", f"expected a number, got {serde_type_name(interval)}")
    if not math.isfinite(interval) or interval < min_interval:
        raise _invalid(
            "poll_interval_secs", f"must be at least {as_number(min_interval)} (seconds)"
        )
    if interval > MAX_POLL_INTERVAL:
        raise _invalid("poll_interval_secs", f"must be at most {as_number(MAX_POLL_INTERVAL)}")
    entity_key = _string(body, "entity_key", MAX_ENTITY_KEY)
    if any(ord(c) < 0x20 for c in entity_key):
        raise _invalid("entity_key", "must not contain control characters")
    namespace = body.get("namespace")
    if not isinstance(namespace, str):
        raise _invalid("namespace", _type_problem(namespace))
    problem = namespace_error(namespace)
    if problem is not None:
        raise _invalid("namespace", problem[0])
    if namespace == RESERVED_NAMESPACE:
        raise _invalid("namespace", f"'{RESERVED_NAMESPACE}' is reserved for the hub")
    auth, auth_type = _auth(body.get("auth_type", "none"))
    token = body.get("token")
    if auth == "none":
        if token is not None:
            raise _invalid("token", 'given, but auth_type is "none"')
    else:
        if token is None:
            raise _invalid("token", f"required when auth_type is {dumps(auth_type).decode()}")
        if not isinstance(token, str):
            raise _invalid("token", _type_problem(token))
        if not token:
            raise _invalid("token", "must not be empty")
        if len(token) > MAX_TOKEN:
            raise _invalid("token", f"at most {MAX_TOKEN} characters")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in token) or not token.isascii():
            raise _invalid("token", "must be printable ASCII (it is sent in a header)")
    return PollerRequest(name, url, float(interval), entity_key, namespace, auth, auth_type, token)


class GenericPoller:
    """The :class:`~hub.connectors.base.Connector` of one registered poller."""

    oauth_config = None

    def __init__(
        self,
        config: PollerConfig,
        client: httpx.AsyncClient,
        *,
        max_bytes: int,
        timeout: float,
    ) -> None:
        self.config = config
        self.client = client
        self.max_bytes = max_bytes
        self.timeout = timeout

    @property
    def name(self) -> str:
        return self.config.source

    @property
    def poll_interval(self) -> float:
        return self.config.poll_interval

    async def fetch(self, credentials: Credentials | None) -> list[dict[str, Any]]:
        """GET the URL once and turn the JSON into one event.

        Raises:
            Broken: the request failed, timed out, got a non-2xx status, or the body
                is too large or not JSON.
        """
        config = self.config
        body = await self._get(None if credentials is None else credentials.access_token)
        try:
            value = loads(body)
        except JSONError as exc:
            raise Broken(f"response is not JSON: {serde_message(exc)}") from None
        properties = value if isinstance(value, dict) else {"value": value}
        return [
            connector_event(
                config.entity_id, properties, stream=POLLER_STREAM, source=config.source
            )
        ]

    async def _get(self, token: str | None) -> bytes:
        config = self.config
        headers = {"accept": "application/json", "user-agent": USER_AGENT}
        if token is not None:
            if config.auth == "bearer":
                headers["authorization"] = f"Bearer {token}"
            else:
                headers[config.auth] = token
        body = bytearray()
        try:
            # The whole poll is bounded, not each read: a server that trickles its
            # body byte by byte would never trip a per-read timeout.
            with anyio.fail_after(self.timeout):
                async with self.client.stream(
                    "GET", config.url, headers=headers, timeout=self.timeout
                ) as response:
                    if not response.is_success:
                        raise Broken(f"HTTP {response.status_code} {response.reason_phrase}")
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > self.max_bytes:
                        raise Broken(self._too_large())
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > self.max_bytes:
                            raise Broken(self._too_large())
        except (TimeoutError, httpx.TimeoutException):
            raise Broken(f"no complete response within {as_number(self.timeout)} s") from None
        except httpx.ConnectError as exc:
            raise Broken(f"cannot connect: {exc or type(exc).__name__}") from None
        except httpx.HTTPError as exc:
            raise Broken(f"request failed: {type(exc).__name__}: {exc}") from None
        return bytes(body)

    def _too_large(self) -> str:
        return f"response is larger than {self.max_bytes} bytes"


# ---------------------------------------------------------------------- helpers


def _invalid(field: str, problem: str) -> BadRequest:
    return BadRequest(f"{field}: {problem}", 422)


def _type_problem(value: Any) -> str:
    return "required" if value is None else f"expected a string, got {serde_type_name(value)}"


def _string(body: dict[str, Any], field: str, limit: int) -> str:
    value = body.get(field)
    if not isinstance(value, str):
        raise _invalid(field, _type_problem(value))
    if not value.strip():
        raise _invalid(field, "must not be empty")
    if len(value) > limit:
        raise _invalid(field, f"at most {limit} characters")
    return value


def _auth(value: Any) -> tuple[str, str | dict[str, str]]:
    if value == "none" or value == "bearer":
        return value, value
    if isinstance(value, dict) and set(value) == {"api_key_header"}:
        header = value["api_key_header"]
        if not isinstance(header, str) or _HEADER_NAME.fullmatch(header) is None:
            raise _invalid("auth_type.api_key_header", "not a valid HTTP header name")
        if header.lower() in _RESERVED_HEADERS:
            raise _invalid("auth_type.api_key_header", f"'{header}' cannot carry a key")
        return header, {"api_key_header": header}
    raise _invalid("auth_type", _AUTH_HINT)


def as_number(value: float) -> int | float:
    """Show whole seconds as integers (``300``, not ``300.0``)."""
    return int(value) if float(value).is_integer() else value
