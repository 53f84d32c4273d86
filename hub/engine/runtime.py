"""Runtime settings: ``GET``/``PUT /api/admin/config`` (FLUX_COMPAT.md §1.9).

Unlike Flux, changes are shared by every hub process and survive restarts: a PUT writes
them to Redis (``<prefix>:config``) and every hub re-reads that hash every
:data:`REFRESH_SECONDS`. Fields never changed by PUT keep their start-up value (env).

Values are validated (Flux accepts anything, including a 0 body limit that blocks
all ingestion): see :data:`BOUNDS`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import anyio

from ..errors import BadRequest, LogUnavailable

if TYPE_CHECKING:
    from ..config import RuntimeDefaults
    from ..store import Store

__all__ = ["BOUNDS", "REFRESH_SECONDS", "RuntimeConfig", "RuntimeValues"]

logger = logging.getLogger("hub.config")

REFRESH_SECONDS = 1.0

#: field -> (smallest, largest) accepted by PUT.
BOUNDS: dict[str, tuple[int, int]] = {
    "rate_limit_per_namespace_per_minute": (1, 1_000_000_000),
    "body_size_limit_single_bytes": (1024, 64 * 1024 * 1024),
    "body_size_limit_batch_bytes": (1024, 64 * 1024 * 1024),
}


@dataclass(frozen=True, slots=True)
class RuntimeValues:
    rate_limit_enabled: bool
    rate_limit_per_namespace_per_minute: int
    body_size_limit_single_bytes: int
    body_size_limit_batch_bytes: int

    def as_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class RuntimeConfig:
    """The current runtime values, kept in step with Redis."""

    def __init__(self, store: Store, defaults: RuntimeDefaults) -> None:
        self.store = store
        self.defaults = RuntimeValues(**defaults.model_dump())
        self.values = self.defaults

    async def refresh(self) -> None:
        """Re-read the shared values from Redis."""
        stored = await self.store.read_runtime_config()
        values = self.defaults
        for name, text in stored.items():
            try:
                values = replace(values, **{name: _decode(name, text)})
            except (TypeError, ValueError):
                logger.warning("ignoring unreadable runtime setting %s=%r in Redis", name, text)
        self.values = values

    async def run(self) -> None:
        """Refresh periodically until cancelled."""
        while True:
            await anyio.sleep(REFRESH_SECONDS)
            try:
                await self.refresh()
            except LogUnavailable as exc:
                logger.debug("runtime config refresh failed: %s", exc)

    @staticmethod
    def parse(body: Any) -> dict[str, Any]:
        """Check a PUT body: any subset of the four fields; unknown fields are ignored
        and ``null`` means "not given" (Flux's fields are all optional).

        Raises:
            BadRequest: (422) a field has the wrong type or is out of bounds.
        """
        if not isinstance(body, dict):
            raise BadRequest(
                "Failed to deserialize the JSON body into the target type: expected an object", 422
            )
        changes: dict[str, Any] = {}
        for f in fields(RuntimeValues):
            value = body.get(f.name)
            if value is None:
                continue
            if f.name == "rate_limit_enabled":
                if not isinstance(value, bool):
                    raise _type_error(f.name, "a boolean", value)
            else:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise _type_error(f.name, "a non-negative integer", value)
                low, high = BOUNDS[f.name]
                if not low <= value <= high:
                    raise BadRequest(f"{f.name} must be between {low} and {high}, got {value}", 422)
            changes[f.name] = value
        return changes

    async def apply(self, changes: dict[str, Any]) -> RuntimeValues:
        """Record checked changes (from :meth:`parse`) for every hub."""
        await self.store.write_runtime_config(
            {name: _encode(value) for name, value in changes.items()}
        )
        self.values = replace(self.values, **changes)
        return self.values


def _type_error(name: str, expected: str, value: Any) -> BadRequest:
    return BadRequest(
        f"Failed to deserialize the JSON body into the target type: {name}: "
        f"expected {expected}, got {value!r}",
        422,
    )


def _encode(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _decode(name: str, text: str) -> Any:
    if name == "rate_limit_enabled":
        if text not in ("true", "false"):
            raise ValueError(text)
        return text == "true"
    if name not in BOUNDS:
        raise TypeError(name)
    return int(text)
