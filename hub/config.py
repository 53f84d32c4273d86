"""Settings: one frozen object, grouped, read once.

:meth:`Settings.from_env` is called once, in :mod:`hub.cli`; the object is passed down
explicitly and no other module reads ``os.environ``. Every variable is listed in the
README's configuration table.

Four values are also *runtime* settings (FLUX_COMPAT.md §1.9), changed through
``PUT /api/admin/config``: ``rate_limit_enabled``, ``rate_limit_per_namespace_per_minute``,
``body_size_limit_single_bytes`` and ``body_size_limit_batch_bytes``. The values here
are their start-up defaults; see :mod:`hub.engine.runtime`.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_REPLY_TIMEOUT",
    "FanoutSettings",
    "GatewaySettings",
    "IngestSettings",
    "LeaseSettings",
    "LogSettings",
    "RedisSettings",
    "ConnectorSettings",
    "RuntimeDefaults",
    "Settings",
]

DEFAULT_PORT = 3000
#: Seconds the store waits for Redis's reply to a command (``FLUX_REDIS_REPLY_TIMEOUT``).
DEFAULT_REPLY_TIMEOUT = 30.0
MiB = 1024 * 1024


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RedisSettings(_Frozen):
    """Where the state lives."""

    #: An external Redis (``redis://``, ``rediss://``, ``unix://``); None: embedded.
    url: str | None = None
    #: Data directory of the embedded Redis (AOF and lock file).
    data_dir: Path = Path("flux-data")
    #: AOF fsync policy of the embedded Redis (README: what each can lose).
    appendfsync: Literal["everysec", "always", "no"] = "everysec"
    #: The redis-server (or valkey-server) binary; None: search (see embedded.py).
    server_binary: str | None = None
    #: How long to wait for the embedded server to load its data and answer.
    start_timeout: float = Field(default=120.0, gt=0)
    #: Seconds to wait for Redis's reply to a command before the call fails (503
    #: ``unavailable``; docs/faults.md, a stalled Redis). It also bounds a reconnection
    #: (at most 5 s) and the wait for a free pooled connection. At least 0.1 s: a batch
    #: of 512 events with ``appendfsync always`` takes tens of ms. At most 300 s: past
    #: the proxies' and clients' own timeouts (nginx's 120 s in deploy/) nobody is
    #: left to hear the answer.
    reply_timeout: float = Field(default=DEFAULT_REPLY_TIMEOUT, ge=0.1, le=300)
    #: Prefix of every key the hub writes; lets several hubs share a Redis.
    key_prefix: str = Field(default="flux", pattern=r"^[A-Za-z0-9_.:-]+$")
    #: Number of partitions (Redis Cluster hash tags) the logs and state are split in.
    partitions: int = Field(default=1, ge=1, le=1024)
    #: Replicas that must confirm each write (Redis WAIT) before it is acknowledged;
    #: 0: acknowledge once the master applied it (docs/scaling.md, "Redis Cluster").
    wait_replicas: int = Field(default=0, ge=0, le=16)
    #: How long a write waits for those replicas before it is answered 503.
    wait_timeout_ms: int = Field(default=1000, ge=1, le=60_000)

    def wait(self) -> tuple[int, int] | None:
        """``(replicas, timeout_ms)`` for the store's WAIT, or None without one."""
        return (self.wait_replicas, self.wait_timeout_ms) if self.wait_replicas else None

    @field_validator("url")
    @classmethod
    def _url_is_redis(cls, value: str | None) -> str | None:
        # redis-py's own refusal comes later, as a traceback from deep in the pool.
        if value is not None and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value


class LogSettings(_Frozen):
    """Retention of the logs kept in Redis. Trimming is approximate (``MAXLEN ~``)."""

    #: Event-log entries kept per partition (0: keep all). Bounds history and replay.
    event_log_maxlen: int = Field(default=1_000_000, ge=0)
    #: Delta-log entries kept per partition: how far back a resume can reach.
    delta_log_maxlen: int = Field(default=100_000, ge=1000)
    #: Also drop deltas older than this many seconds (0: no age limit).
    delta_log_max_age_seconds: int = Field(default=0, ge=0)
    #: Events remembered per entity for ``GET /api/events`` (its limit is at most 500).
    history_per_entity: int = Field(default=500, ge=1, le=100_000)
    #: How long a client ``eventId`` is remembered for de-duplication.
    dedup_ttl_seconds: int = Field(default=24 * 3600, ge=1)


class IngestSettings(_Frozen):
    """How publishes are coalesced into reduce-script calls."""

    #: Most events carried by one script call.
    max_batch: int = Field(default=512, ge=1, le=10_000)
    #: Events waiting for a script call; at the bound, publishers wait (backpressure).
    queue_size: int = Field(default=16_384, ge=1)


class LeaseSettings(_Frozen):
    """Sweeping entities whose time-to-live ran out (docs/semantics.md, "Leases")."""

    #: Seconds between two sweeps of this hub (every hub sweeps; each sweep is atomic).
    sweep_interval: float = Field(default=1.0, gt=0, le=3600)
    #: Most entities one sweep expires per partition; a larger backlog drains over
    #: the following sweeps.
    sweep_max: int = Field(default=1000, ge=1, le=10_000)


class GatewaySettings(_Frozen):
    """The HTTP/WebSocket front door: address, auth and limits."""

    host: str = "0.0.0.0"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    auth_enabled: bool = False
    #: With auth: reading and subscribing also need a token, confined to its namespace.
    private_reads: bool = False
    #: Guards admin operations; None leaves them open (as Flux does).
    admin_token: str | None = None
    #: Absolute cap on any request body, whatever the runtime limits say.
    max_body_bytes: int = Field(default=64 * MiB, ge=1024)
    #: ``/mcp`` without sessions: every request stands alone, so any process may answer
    #: it (``--workers``, a balancer without affinity); no resource subscriptions.
    mcp_stateless: bool = False
    #: Largest WebSocket message accepted from a client. Compat connections are closed
    #: with 1009 past it; native ones get an error frame, up to 4 times this size,
    #: and are closed with 1009 beyond that.
    max_frame_bytes: int = Field(default=1 * MiB, ge=1024)
    #: Events one native publish frame may carry.
    max_events_per_frame: int = Field(default=1000, ge=1)
    #: Native subscriptions one connection may hold.
    max_subscriptions: int = Field(default=100, ge=1)
    #: Native requests (publish, get, list) read ahead of the one being handled, per
    #: connection; past it the hub stops reading that socket until it catches up.
    max_pending_requests: int = Field(default=64, ge=1)
    #: Open connections (HTTP and WebSocket) per hub process; more are refused.
    max_connections: int = Field(default=10_000, ge=1)
    #: Open connections from one client address; more are refused.
    max_connections_per_client: int = Field(default=1000, ge=1)
    #: Events one REST batch may carry.
    max_events_per_batch: int = Field(default=10_000, ge=1)
    #: Properties one event may carry. At most 3,000: the reduce script passes them
    #: to Redis commands as arguments, and Lua's unpack() stops near 8,000.
    max_properties: int = Field(default=1000, ge=1, le=3000)
    #: Bytes of one property value (as JSON).
    max_value_bytes: int = Field(default=1024 * 1024, ge=16)
    #: Nesting of objects and arrays inside one property value.
    max_nesting_depth: int = Field(default=32, ge=1, le=512)
    #: Entities one batch delete may name or match (Flux ``max_batch_delete``).
    max_batch_delete: int = Field(default=10_000, ge=1)
    #: Seconds a client may take to send a request's head and body.
    request_timeout: float = Field(default=30.0, gt=0)
    #: Seconds a client may take to send a request's head (the first request's from
    #: the moment it connected); at most ``request_timeout`` applies. Past it: 408.
    header_timeout: float = Field(default=10.0, gt=0)
    #: Requests whose head has begun and is not complete, on the whole hub; past it,
    #: the oldest is answered 408 and closed (slowloris: docs/limits.md).
    max_unfinished_heads: int = Field(default=1000, ge=1)
    #: The same, per client address.
    max_unfinished_heads_per_client: int = Field(default=100, ge=1)
    #: Seconds an idle keep-alive HTTP connection is kept.
    keepalive_timeout: float = Field(default=75.0, gt=0)
    #: On SIGTERM, seconds ``/readyz`` answers 503 while the hub still serves, so that
    #: load balancers stop routing to it before it stops listening (docs/scaling.md).
    shutdown_drain_seconds: float = Field(default=0.0, ge=0, le=3600)
    #: This process's number among the workers of ``flux serve --workers`` (1..N; set
    #: by the supervisor, which makes it listen with SO_REUSEPORT); 0: a lone hub.
    worker: int = Field(default=0, ge=0)


class FanoutSettings(_Frozen):
    """Pushing deltas to WebSocket subscribers."""

    #: Bytes buffered for one slow connection before it is closed with 1013.
    max_send_buffer_bytes: int = Field(default=8 * MiB, ge=64 * 1024)
    #: Bytes buffered for a native connection before its deltas are conflated.
    conflate_after_bytes: int = Field(default=1 * MiB, ge=16 * 1024)
    #: Conflated (subscription, entity) deltas one native connection may have
    #: pending; past it, it is closed with 1013 and resumes.
    max_pending_entities: int = Field(default=10_000, ge=1)
    #: Deltas held for a subscription while its snapshot or catch-up is read; past
    #: it, the subscription is reset and read again.
    max_held_deltas: int = Field(default=100_000, ge=1000)
    #: Entities per snapshot page (one atomic Redis read, one snapshot frame).
    snapshot_page: int = Field(default=500, ge=1, le=10_000)
    #: Seconds between checkpoint frames to live native subscriptions.
    checkpoint_interval: float = Field(default=10.0, gt=0)
    #: Seconds between heartbeat comments on ``GET /api/stream`` (Server-Sent Events).
    sse_heartbeat_interval: float = Field(default=15.0, gt=0)
    #: The reconnection delay, in ms, ``GET /api/stream`` advises (``retry:``).
    sse_retry_ms: int = Field(default=2000, ge=0, le=3_600_000)
    #: Delta-log entries read per XREAD.
    read_count: int = Field(default=1000, ge=1)
    #: Seconds between compat ``metrics_update`` messages (Flux: 2).
    metrics_interval: float = Field(default=2.0, gt=0)


class ConnectorSettings(_Frozen):
    """Connectors: credentials, OAuth, and the generic HTTP poller."""

    #: Base64 of 32 bytes (AES-256-GCM) for stored credentials; None: connectors that
    #: need credentials are disabled (as in Flux).
    encryption_key: str | None = None
    #: Public base URL of the hub, for OAuth redirect URIs.
    oauth_callback_base_url: str = "http://localhost:3000"
    #: ``FLUX_OAUTH_<NAME>_CLIENT_ID`` / ``_CLIENT_SECRET`` pairs, by connector name.
    oauth_clients: dict[str, tuple[str, str]] = Field(default_factory=dict)
    #: Generic pollers one hub cluster may hold.
    max_pollers: int = Field(default=1000, ge=0)
    #: Singer taps one hub cluster may hold (0: taps cannot be registered).
    max_taps: int = Field(default=100, ge=0)
    #: Shortest poll interval accepted, in seconds.
    min_poll_interval: float = Field(default=1.0, gt=0)
    #: Largest response body a poller reads.
    max_poll_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: Seconds a poll request may take.
    poll_timeout: float = Field(default=10.0, gt=0)
    #: The GitHub connector's API root; ``https://<host>/api/v3`` for GitHub Enterprise.
    github_api_url: str = "https://api.github.com"

    @field_validator("github_api_url")
    @classmethod
    def _api_url_is_http(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                "must be an http(s) URL with a host, e.g. https://github.example.com/api/v3"
            )
        if parts.query or parts.fragment or parts.username is not None:
            raise ValueError("must not have a query, a fragment or credentials")
        return value.rstrip("/")

    @field_validator("encryption_key")
    @classmethod
    def _key_is_32_bytes(cls, value: str | None) -> str | None:
        # Checked here so that a bad key stops `flux serve` naming the variable.
        if value is not None:
            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("must be base64 (e.g. `openssl rand -base64 32`)") from None
            if len(raw) != 32:
                raise ValueError(f"must decode to 32 bytes (AES-256), not {len(raw)}")
        return value


class RuntimeDefaults(_Frozen):
    """Start-up values of the settings ``PUT /api/admin/config`` can change."""

    rate_limit_enabled: bool = True
    rate_limit_per_namespace_per_minute: int = Field(default=10_000, ge=1)
    body_size_limit_single_bytes: int = Field(default=1 * MiB, ge=1024)
    body_size_limit_batch_bytes: int = Field(default=10 * MiB, ge=1024)


class Settings(_Frozen):
    """Everything the hub is configured with."""

    redis: RedisSettings = RedisSettings()
    log: LogSettings = LogSettings()
    ingest: IngestSettings = IngestSettings()
    leases: LeaseSettings = LeaseSettings()
    gateway: GatewaySettings = GatewaySettings()
    fanout: FanoutSettings = FanoutSettings()
    runtime: RuntimeDefaults = RuntimeDefaults()
    connectors: ConnectorSettings = ConnectorSettings()
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Settings:
        """Build settings from environment variables, then apply ``overrides``.

        Args:
            env: the environment (``os.environ`` in the CLI).
            overrides: dotted names (``gateway.port``) set by command-line flags.

        Raises:
            ConfigError: a variable or flag has a value that does not parse or is
                out of range; the message names it.
        """
        tree: dict[str, dict[str, Any]] = {}
        names: dict[tuple[str, str], str] = {}
        for var, (group, field, parse) in _ENV.items():
            raw = env.get(var)
            if raw is None or raw == "" and var not in _EMPTY_IS_VALUE:
                continue
            try:
                tree.setdefault(group, {})[field] = parse(raw)
            except ValueError:
                raise ConfigError(f"{var}={raw!r}: not a valid value") from None
            names[(group, field)] = var
        for dotted, value in overrides.items():
            if value is None:
                continue
            group, _, field = dotted.partition(".")
            tree.setdefault(group, {})[field] = value
            names[(group, field)] = _FLAGS.get(dotted, "--" + field.replace("_", "-"))
        oauth = _oauth_clients(env)
        if oauth:
            tree.setdefault("connectors", {})["oauth_clients"] = oauth
        level = tree.pop("", {}).get("log_level")
        try:
            groups: dict[str, Any] = {
                name: _GROUPS[name](**values) for name, values in tree.items()
            }
            if level:
                groups["log_level"] = level
            return cls(**groups)
        except ValidationError as exc:
            raise ConfigError(_explain(exc, names)) from None


#: Flags whose name is not their field's (``serve --redis`` sets ``redis.url``).
_FLAGS = {"redis.url": "--redis"}


def _bool(raw: str) -> bool:
    # Flux turns auth on only for the exact string "true"; other booleans accept the
    # usual spellings and refuse anything else.
    value = raw.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError(raw)


def _flux_flag(raw: str) -> bool:
    """``FLUX_AUTH_ENABLED``: only the exact string ``true`` enables (Flux)."""
    return raw == "true"


_GROUPS: dict[str, Callable[..., _Frozen]] = {
    "redis": RedisSettings,
    "log": LogSettings,
    "ingest": IngestSettings,
    "leases": LeaseSettings,
    "gateway": GatewaySettings,
    "fanout": FanoutSettings,
    "runtime": RuntimeDefaults,
    "connectors": ConnectorSettings,
}

# variable -> (group, field, parser). Group "" holds top-level fields.
_ENV: dict[str, tuple[str, str, Callable[[str], Any]]] = {
    "FLUX_REDIS_URL": ("redis", "url", str),
    "FLUX_DATA_DIR": ("redis", "data_dir", Path),
    "FLUX_APPENDFSYNC": ("redis", "appendfsync", str),
    "FLUX_REDIS_SERVER": ("redis", "server_binary", str),
    "FLUX_REDIS_START_TIMEOUT": ("redis", "start_timeout", float),
    "FLUX_REDIS_REPLY_TIMEOUT": ("redis", "reply_timeout", float),
    "FLUX_KEY_PREFIX": ("redis", "key_prefix", str),
    "FLUX_PARTITIONS": ("redis", "partitions", int),
    "FLUX_REDIS_WAIT_REPLICAS": ("redis", "wait_replicas", int),
    "FLUX_REDIS_WAIT_TIMEOUT_MS": ("redis", "wait_timeout_ms", int),
    "FLUX_EVENT_LOG_MAXLEN": ("log", "event_log_maxlen", int),
    "FLUX_DELTA_LOG_MAXLEN": ("log", "delta_log_maxlen", int),
    "FLUX_DELTA_LOG_MAX_AGE_SECONDS": ("log", "delta_log_max_age_seconds", int),
    "FLUX_HISTORY_PER_ENTITY": ("log", "history_per_entity", int),
    "FLUX_DEDUP_TTL_SECONDS": ("log", "dedup_ttl_seconds", int),
    "FLUX_INGEST_MAX_BATCH": ("ingest", "max_batch", int),
    "FLUX_INGEST_QUEUE_SIZE": ("ingest", "queue_size", int),
    "FLUX_LEASE_SWEEP_INTERVAL": ("leases", "sweep_interval", float),
    "FLUX_LEASE_SWEEP_MAX": ("leases", "sweep_max", int),
    "FLUX_HOST": ("gateway", "host", str),
    "PORT": ("gateway", "port", int),
    "FLUX_AUTH_ENABLED": ("gateway", "auth_enabled", _flux_flag),
    "FLUX_PRIVATE_READS": ("gateway", "private_reads", _bool),
    "FLUX_MCP_STATELESS": ("gateway", "mcp_stateless", _bool),
    "FLUX_MAX_CONNECTIONS_PER_CLIENT": ("gateway", "max_connections_per_client", int),
    "FLUX_MAX_EVENTS_PER_BATCH": ("gateway", "max_events_per_batch", int),
    "FLUX_MAX_PROPERTIES": ("gateway", "max_properties", int),
    "FLUX_MAX_VALUE_BYTES": ("gateway", "max_value_bytes", int),
    "FLUX_MAX_NESTING_DEPTH": ("gateway", "max_nesting_depth", int),
    "FLUX_ADMIN_TOKEN": ("gateway", "admin_token", str),
    "FLUX_MAX_BODY_BYTES": ("gateway", "max_body_bytes", int),
    "FLUX_MAX_FRAME_BYTES": ("gateway", "max_frame_bytes", int),
    "FLUX_MAX_CONNECTIONS": ("gateway", "max_connections", int),
    "FLUX_MAX_EVENTS_PER_FRAME": ("gateway", "max_events_per_frame", int),
    "FLUX_MAX_SUBSCRIPTIONS": ("gateway", "max_subscriptions", int),
    "FLUX_MAX_PENDING_REQUESTS": ("gateway", "max_pending_requests", int),
    "FLUX_MAX_BATCH_DELETE": ("gateway", "max_batch_delete", int),
    "FLUX_REQUEST_TIMEOUT": ("gateway", "request_timeout", float),
    "FLUX_HEADER_TIMEOUT": ("gateway", "header_timeout", float),
    "FLUX_MAX_UNFINISHED_HEADS": ("gateway", "max_unfinished_heads", int),
    "FLUX_MAX_UNFINISHED_HEADS_PER_CLIENT": ("gateway", "max_unfinished_heads_per_client", int),
    "FLUX_KEEPALIVE_TIMEOUT": ("gateway", "keepalive_timeout", float),
    "FLUX_SHUTDOWN_DRAIN_SECONDS": ("gateway", "shutdown_drain_seconds", float),
    "FLUX_MAX_SEND_BUFFER_BYTES": ("fanout", "max_send_buffer_bytes", int),
    "FLUX_CONFLATE_AFTER_BYTES": ("fanout", "conflate_after_bytes", int),
    "FLUX_MAX_PENDING_ENTITIES": ("fanout", "max_pending_entities", int),
    "FLUX_MAX_HELD_DELTAS": ("fanout", "max_held_deltas", int),
    "FLUX_SNAPSHOT_PAGE": ("fanout", "snapshot_page", int),
    "FLUX_CHECKPOINT_INTERVAL": ("fanout", "checkpoint_interval", float),
    "FLUX_SSE_HEARTBEAT_SECONDS": ("fanout", "sse_heartbeat_interval", float),
    "FLUX_SSE_RETRY_MS": ("fanout", "sse_retry_ms", int),
    "FLUX_METRICS_INTERVAL": ("fanout", "metrics_interval", float),
    "FLUX_RATE_LIMIT_ENABLED": ("runtime", "rate_limit_enabled", _bool),
    "FLUX_RATE_LIMIT_PER_NAMESPACE_PER_MINUTE": (
        "runtime",
        "rate_limit_per_namespace_per_minute",
        int,
    ),
    "FLUX_BODY_SIZE_LIMIT_SINGLE_BYTES": ("runtime", "body_size_limit_single_bytes", int),
    "FLUX_BODY_SIZE_LIMIT_BATCH_BYTES": ("runtime", "body_size_limit_batch_bytes", int),
    "FLUX_LOG_LEVEL": ("", "log_level", str.lower),
    "FLUX_ENCRYPTION_KEY": ("connectors", "encryption_key", str),
    "FLUX_OAUTH_CALLBACK_BASE_URL": ("connectors", "oauth_callback_base_url", str),
    "FLUX_MAX_POLLERS": ("connectors", "max_pollers", int),
    "FLUX_MAX_TAPS": ("connectors", "max_taps", int),
    "FLUX_MIN_POLL_INTERVAL": ("connectors", "min_poll_interval", float),
    "FLUX_GITHUB_API_URL": ("connectors", "github_api_url", str),
    "FLUX_MAX_POLL_BYTES": ("connectors", "max_poll_bytes", int),
    "FLUX_POLL_TIMEOUT": ("connectors", "poll_timeout", float),
}

# Flux: FLUX_ADMIN_TOKEN set but empty means "Bearer " + nothing, which no client can
# send, so admin writes are off. We keep that meaning rather than treating it as unset.
_EMPTY_IS_VALUE = frozenset({"FLUX_ADMIN_TOKEN"})


def _oauth_clients(env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """``FLUX_OAUTH_<NAME>_CLIENT_ID`` and ``..._CLIENT_SECRET`` pairs, by lower-case name."""
    clients: dict[str, tuple[str, str]] = {}
    for var, client_id in env.items():
        if var.startswith("FLUX_OAUTH_") and var.endswith("_CLIENT_ID") and client_id:
            name = var[len("FLUX_OAUTH_") : -len("_CLIENT_ID")]
            secret = env.get(f"FLUX_OAUTH_{name}_CLIENT_SECRET")
            if name and secret:
                clients[name.lower()] = (client_id, secret)
    return clients


def _explain(exc: ValidationError, names: dict[tuple[str, str], str]) -> str:
    parts = []
    for error in exc.errors():
        loc = tuple(str(p) for p in error["loc"])
        field = loc[-1] if loc else "?"
        origin = next((n for (g, f), n in names.items() if f == field), field)
        parts.append(f"{origin}: {str(error['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)
