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
    from collections.abc import AsyncIterator, Callable

    from .config import Settings

__all__ = ["run", "serve"]

logger = logging.getLogger("hub.gateway")


async def serve(
    settings: Settings, redis_url: str, *, on_ready: Callable[[Hub], None] | None = None
) -> None:
    """Serve on ``redis_url`` until SIGINT or SIGTERM, then shut down cleanly."""
    redis = settings.redis
    keys = Keys(redis.key_prefix, redis.partitions)
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with (
            await Store.connect(
                redis_url, keys, settings.log, reply_timeout=redis.reply_timeout, wait=redis.wait()
            ) as store,
            Hub(settings, store) as hub,
        ):
            freeze_startup_heap()
            if on_ready is not None:
                on_ready(hub)
            async for signum in signals:
                await _drain(hub, signum, signals, settings.gateway.shutdown_drain_seconds)
                break
        logger.info("stopped")


async def _drain(hub: Hub, signum: int, signals: AsyncIterator[int], seconds: float) -> None:
    """The first step of a shutdown: ``/readyz`` answers 503 while the hub still
    serves, for ``seconds`` after a SIGTERM (none after SIGINT, Ctrl-C: nobody routes
    to a terminal), cut short by another signal. Then the hub stops listening,
    finishes what is in flight and closes WebSockets with 1001 (``Hub.__aexit__``)."""
    name = signal.Signals(signum).name
    hub.begin_shutdown()
    if signum != signal.SIGTERM or seconds <= 0:
        logger.info("%s received: shutting down", name)
        return
    logger.info(
        "%s received: /readyz answers 503; still serving for %.3g s "
        "(FLUX_SHUTDOWN_DRAIN_SECONDS), then shutting down",
        name,
        seconds,
    )
    with anyio.move_on_after(seconds):
        async for again in signals:
            logger.info("%s received: shutting down now", signal.Signals(again).name)
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
