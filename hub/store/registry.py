"""Namespaces and their tokens, and the shared rate-limit buckets, in Redis.

Tokens are never stored: a namespace keeps the SHA-256 of its token, and one registry
hash maps token hashes to namespaces (as fields, never in key names), so a request's
token is resolved in one read.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, cast

from ..errors import LogUnavailable
from .connection import REDIS_FAILURES

if TYPE_CHECKING:
    from .store import Store

__all__ = ["Namespace", "Registry"]

_RATE_SOURCE = resources.files(__package__).joinpath("ratelimit.lua").read_text()


# Atomic registration: refuse a taken name, else write the record, the token's reverse
# key and the index, and clear the name's "deleted" mark.
# KEYS: record, token map, index, deleted names. ARGV: id, token hash, created, name.
_REGISTER = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'token', ARGV[2], 'created', ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('SREM', KEYS[4], ARGV[4])
return 1
"""

# Atomic removal; the name is marked deleted until registered again.
# KEYS: record, index, version, deleted names, token map; ARGV: name.
_UNREGISTER = """
local token = redis.call('HGET', KEYS[1], 'token')
if not token then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[5], token)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('INCR', KEYS[3])
return 1
"""


@dataclass(frozen=True, slots=True)
class Namespace:
    """A registered namespace (the token itself is never kept)."""

    name: str
    id: str
    token_hash: str
    created_ms: int


class Registry:
    """The namespace registry and rate-limit buckets of one key prefix."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.keys = store.keys
        client = store.client
        self._register = client.register_script(_REGISTER)
        self._unregister = client.register_script(_UNREGISTER)
        self._rate = client.register_script(_RATE_SOURCE)

    async def register(
        self, name: str, namespace_id: str, token_hash: str, created_ms: int
    ) -> bool:
        """Record a new namespace; False if the name is taken."""
        keys = [
            self.keys.namespace(name),
            self.keys.namespace_tokens(),
            self.keys.namespaces(),
            self.keys.deleted_namespaces(),
        ]
        return bool(
            await self._call(self._register, keys, [namespace_id, token_hash, created_ms, name])
        )

    async def unregister(self, name: str) -> bool:
        """Forget a namespace and its token; False if it was not registered."""
        keys = [
            self.keys.namespace(name),
            self.keys.namespaces(),
            self.keys.namespaces_version(),
            self.keys.deleted_namespaces(),
            self.keys.namespace_tokens(),
        ]
        return bool(await self._call(self._unregister, keys, [name]))

    async def get(self, name: str) -> Namespace | None:
        try:
            fields = cast(
                "dict[bytes, bytes]", await self.store.client.hgetall(self.keys.namespace(name))
            )
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed while reading a namespace: {exc}") from exc
        if not fields:
            return None
        return Namespace(
            name, fields[b"id"].decode(), fields[b"token"].decode(), int(fields[b"created"])
        )

    async def was_deleted(self, name: str) -> bool:
        """Whether ``name`` was registered, then deleted, and not registered since."""
        try:
            return bool(await self.store.client.sismember(self.keys.deleted_namespaces(), name))
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed while reading the registry: {exc}") from exc

    async def owner(self, token_hash: str) -> str | None:
        """The namespace a token (by its hash) belongs to."""
        try:
            name = await self.store.client.hget(self.keys.namespace_tokens(), token_hash)
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed while reading a token: {exc}") from exc
        return name.decode() if isinstance(name, bytes) else None

    async def names(self) -> list[str]:
        """Every registered namespace name, oldest first."""
        try:
            names = cast(
                "list[bytes]", await self.store.client.zrange(self.keys.namespaces(), 0, -1)
            )
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed while listing namespaces: {exc}") from exc
        return [n.decode() for n in names]

    async def version(self) -> int:
        """Bumped by every deletion: a hub that sees it change drops its token cache."""
        try:
            value = await self.store.client.get(self.keys.namespaces_version())
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed while reading the registry: {exc}") from exc
        return int(value or 0)

    async def take(self, namespace: str, limit_per_minute: int, wanted: int) -> tuple[int, int]:
        """Take up to ``wanted`` tokens of a namespace's bucket.

        Returns:
            ``(granted, ms until one more token)``.
        """
        reply = await self._call(
            self._rate, [self.keys.rate_bucket(namespace)], [limit_per_minute, wanted]
        )
        granted, wait = cast("list[int]", reply)
        return int(granted), int(wait)

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except REDIS_FAILURES as exc:
            raise LogUnavailable(f"Redis failed: {exc}") from exc
