"""Who may write and read what: namespaces, tokens, rate limits (FLUX_COMPAT.md §5).

Modes:

- Internal (``FLUX_AUTH_ENABLED`` not ``true``): no tokens; everything is open, except
  the hub's own namespace ``flux-core``, which no client may write.
- Public: a write needs the token of the entity's namespace (the text before the first
  ``/``); reads stay open (Flux's "the world is open for observation") unless
  ``FLUX_PRIVATE_READS=true``, where reading or subscribing also needs a token and is
  confined to its namespace. The admin token reads everything.

Tokens are resolved through the registry (SHA-256 only) and cached per hub for
:data:`CACHE_SECONDS`; a deleted namespace's token stops working at once on the hub
that deleted it and within :data:`REFRESH_SECONDS` on every other. Readers that hold a
token for long (native subscriptions) :meth:`~Tenancy.watch` for that moment and check
their token again.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from ..errors import LogUnavailable
from ..wire.names import RESERVED_NAMESPACE, EntityIdError, parse_entity_id
from .auth import BearerProblem, constant_time_equal, hash_token, read_bearer

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..config import GatewaySettings
    from ..store.registry import Registry
    from .runtime import RuntimeConfig

__all__ = ["AuthFailure", "Principal", "RateLimited", "Tenancy"]

logger = logging.getLogger("hub.auth")

CACHE_SECONDS = 5.0
REFRESH_SECONDS = 1.0
#: Bound of the token cache: past it, it is cleared (and refills on demand).
CACHE_SIZE = 100_000


class AuthFailure(Exception):
    """A request may not do what it asks.

    Attributes:
        status: 400, 401 or 403.
        message: Flux's message for this endpoint.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def code(self) -> str:
        """The native protocol's error code."""
        return {401: "unauthorized", 403: "forbidden"}.get(self.status, "invalid")

    @property
    def batch_message(self) -> str:
        """How Flux reports it for one event of a batch."""
        kind = "Forbidden" if self.status == 403 else "Invalid token"
        return f"authorization failed: {kind}: {self.message}"


class RateLimited(Exception):
    """A namespace's bucket is empty; ``retry_after`` seconds until the next token."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("rate limit exceeded")
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request speaks for: a namespace's owner, the admin, or nobody."""

    namespace: str | None = None
    admin: bool = False

    @property
    def read_prefix(self) -> str | None:
        """Under private reads: the ids it may read start with this ("" = all)."""
        if self.admin:
            return ""
        return self.namespace + "/" if self.namespace is not None else None


ANONYMOUS = Principal()


class Tenancy:
    """Authorization and rate limiting for one hub."""

    def __init__(
        self, registry: Registry, gateway: GatewaySettings, runtime: RuntimeConfig
    ) -> None:
        self.registry = registry
        self.enabled = gateway.auth_enabled
        self.private_reads = gateway.auth_enabled and gateway.private_reads
        self.admin_token = gateway.admin_token
        self.runtime = runtime
        self._cache: dict[str, tuple[str | None, float]] = {}
        self._version = 0
        #: Called when tokens were dropped (a namespace was deleted): see :meth:`watch`.
        self._watchers: set[Callable[[], None]] = set()
        # Statistics.
        self.rate_limited = 0

    # ------------------------------------------------------------------ tokens

    async def run(self) -> None:
        """Drop the token cache whenever a namespace is deleted anywhere."""
        while True:
            await anyio.sleep(REFRESH_SECONDS)
            try:
                version = await self.registry.version()
            except LogUnavailable:
                continue
            if version != self._version:
                self._version = version
                self._drop_tokens()

    def forget(self) -> None:
        """Drop cached tokens now (this hub deleted a namespace)."""
        self._drop_tokens()

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` whenever a namespace was deleted (on this hub at once, on
        another within :data:`REFRESH_SECONDS`), so that a reader holding a token
        checks it again. The callback must not block (it may spawn a task).

        Returns:
            The function that stops the calls.
        """
        self._watchers.add(callback)
        return lambda: self._watchers.discard(callback)

    def _drop_tokens(self) -> None:
        self._cache.clear()
        for callback in list(self._watchers):
            callback()

    async def namespace_of(self, token: str) -> str | None:
        """The namespace a token owns, or None."""
        token_hash = hash_token(token)
        cached = self._cache.get(token_hash)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        namespace = await self.registry.owner(token_hash)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[token_hash] = (namespace, now + CACHE_SECONDS)
        return namespace

    def is_admin(self, token: str | None) -> bool:
        return (
            token is not None
            and self.admin_token is not None
            and constant_time_equal(token, self.admin_token)
        )

    async def principal(self, token: str | None) -> Principal:
        """Who a token speaks for (anonymous when None or unknown)."""
        if token is None:
            return ANONYMOUS
        if self.is_admin(token):
            return Principal(admin=True)
        return Principal(namespace=await self.namespace_of(token))

    async def principal_from_header(self, header: str | None) -> Principal:
        token = read_bearer(header)
        return await self.principal(token if isinstance(token, str) else None)

    # ------------------------------------------------------------------ writes

    async def authorize_write(self, header: str | None, entity_id: Any) -> str | None:
        """Check that a request may write an entity; its namespace (None if it has none).

        Messages are those of Flux's ingestion (§1.11).

        Raises:
            AuthFailure: 401 or 403.
        """
        return await self.authorize_token(read_bearer(header), entity_id)

    def authorize_trusted(self, entity_id: Any) -> None:
        """For a writer the admin configured (a connector), in either mode: any
        namespace but the hub's own.

        Raises:
            AuthFailure: the id is in the hub's reserved namespace.
        """
        _refuse_reserved(entity_id)

    def authorize_open(self, entity_id: Any) -> None:
        """:meth:`authorize_token` when auth is off (nothing to look up: no await).

        Raises:
            AuthFailure: the id is in the hub's reserved namespace.
        """
        assert not self.enabled
        _refuse_reserved(entity_id)

    async def authorize_token(self, token: str | BearerProblem, entity_id: Any) -> str | None:
        """:meth:`authorize_write` for a token already read (or what was wrong with it)."""
        if not self.enabled:
            self.authorize_open(entity_id)
            return None
        if token is BearerProblem.MISSING:
            raise AuthFailure(401, "Authorization token not provided")
        if token is BearerProblem.MALFORMED:
            raise AuthFailure(401, "Invalid authorization token format")
        if token is BearerProblem.EMPTY:
            raise AuthFailure(401, "Authorization token is empty")
        if not isinstance(entity_id, str):
            raise AuthFailure(401, "Missing 'entity_id' field in payload")
        try:
            parsed = parse_entity_id(entity_id)
        except EntityIdError as exc:
            raise AuthFailure(
                401, f"Failed to parse entity_id '{entity_id}': {exc.debug}"
            ) from None
        if parsed.namespace is None:
            raise AuthFailure(
                401,
                f"Entity ID '{entity_id}' missing namespace prefix (expected 'namespace/entity' format)",
            )
        _refuse_reserved(entity_id)
        return await self._owns(token, parsed.namespace, ingestion=True)

    async def authorize_delete(self, header: str | None, entity_id: str) -> str | None:
        """Like :meth:`authorize_write`, with Flux's deletion messages (§1.7)."""
        if not self.enabled:
            _refuse_reserved(entity_id)
            return None
        token = _deletion_token(header)
        try:
            parsed = parse_entity_id(entity_id)
        except EntityIdError as exc:
            raise AuthFailure(400, exc.debug) from None
        if parsed.namespace is None:
            raise AuthFailure(401, "Entity has no namespace")
        _refuse_reserved(entity_id)
        return await self._owns(token, parsed.namespace, ingestion=False)

    async def authorize_delete_prefix(self, header: str | None, prefix: str) -> None:
        """Authorize deleting every id that starts with ``prefix``, as a whole and
        before anything is listed: the prefix must lie within the token's namespace
        (``ns/…``). Used under private reads, where answering per matched id (Flux's
        way) would tell a reader whether another namespace holds such ids.

        Raises:
            AuthFailure: 401 or 403, with Flux's deletion messages (§1.7).
        """
        token = _deletion_token(header)
        namespace, slash, _ = prefix.partition("/")
        if not slash or await self.namespace_of(token) != namespace:
            raise AuthFailure(403, "Token does not own namespace")

    async def _owns(self, token: str, namespace: str, *, ingestion: bool) -> str:
        owner = await self.namespace_of(token)
        if owner == namespace:
            return namespace
        if ingestion:
            if await self.registry.get(namespace) is None:
                raise AuthFailure(
                    401, f"Namespace '{namespace}' not found. Get a namespace at flux-universe.com"
                )
            raise AuthFailure(
                403, f"Token does not have permission to write to namespace '{namespace}'"
            )
        raise AuthFailure(403, "Token does not own namespace")

    # ------------------------------------------------------------------ rate limits

    def limiting(self) -> bool:
        """Rate limits apply in public mode when ``rate_limit_enabled`` (Flux ignored it)."""
        return self.enabled and self.runtime.values.rate_limit_enabled

    async def take(self, namespace: str, wanted: int) -> tuple[int, float]:
        """Take tokens for ``wanted`` events: ``(granted, seconds until the next)``."""
        if not self.limiting():
            return wanted, 0.0
        limit = self.runtime.values.rate_limit_per_namespace_per_minute
        granted, wait_ms = await self.registry.take(namespace, limit, wanted)
        self.rate_limited += wanted - granted
        return granted, wait_ms / 1000

    async def check_one(self, namespace: str | None) -> None:
        """Take one token for a single publish.

        Raises:
            RateLimited: with the real wait, in whole seconds for ``Retry-After``.
        """
        if namespace is None or not self.limiting():
            return
        granted, wait = await self.take(namespace, 1)
        if not granted:
            raise RateLimited(max(1, math.ceil(wait)))


def _deletion_token(header: str | None) -> str:
    """The bearer token of a deletion, or Flux's deletion error (§1.7).

    Raises:
        AuthFailure: 401, no header or no usable bearer token in it.
    """
    token = read_bearer(header)
    if token is BearerProblem.MISSING:
        raise AuthFailure(401, "Missing Authorization header")
    if not isinstance(token, str):
        raise AuthFailure(401, "Invalid Authorization format")
    return token


def _refuse_reserved(entity_id: Any) -> None:
    if (
        isinstance(entity_id, str)
        and entity_id.split("/", 1)[0] == RESERVED_NAMESPACE
        and "/" in entity_id
    ):
        raise AuthFailure(403, f"namespace '{RESERVED_NAMESPACE}' is reserved for the hub")
