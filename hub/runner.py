"""Running a hub until it is told to stop: what ``flux serve`` does."""

from __future__ import annotations

import logging
import signal
from contextlib import ExitStack
from typing import TYPE_CHECKING

import anyio

from .app import Hub
from .engine.heap import freeze_startup_heap
from .store import EmbeddedRedis, Keys, Store

if TYPE_CHECKING:
    from collections.abc import Callable

    from .config import Settings

__all__ = ["run", "serve"]

logger = logging.getLogger("hub.gateway")


async def serve(
    settings: Settings, redis_url: str, *, on_ready: Callable[[Hub], None] | None = None
) -> None:
    """Serve on ``redis_url`` until SIGINT or SIGTERM, then shut down cleanly."""
    keys = Keys(settings.redis.key_prefix, settings.redis.partitions)
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            await Store.connect(redis_url, keys, settings.log) as store,
            Hub(settings, store) as hub,
        ):
            freeze_startup_heap()
            if on_ready is not None:
                on_ready(hub)
            async for signum in signals:
                logger.info("%s received: shutting down", signal.Signals(signum).name)
                break


def run(settings: Settings, *, on_ready: Callable[[Hub], None] | None = None) -> None:
    """Start the embedded Redis if no URL is configured, then serve (blocking)."""
    with ExitStack() as stack:
        url = settings.redis.url
        if url is None:
            embedded = stack.enter_context(EmbeddedRedis.configured(settings.redis))
            url = embedded.url
        anyio.run(_serve, settings, url, on_ready, backend_options=_backend_options())


async def _serve(settings: Settings, url: str, on_ready: Callable[[Hub], None] | None) -> None:
    await serve(settings, url, on_ready=on_ready)


def _backend_options() -> dict[str, bool]:
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return {}
    return {"use_uvloop": True}
