"""``flux serve --workers N``: N hub processes on one port, over one Redis.

The supervisor (this module, in the ``flux serve`` process) starts the embedded Redis
(unless ``--redis`` is given), reserves the port, starts N workers — each a plain
``flux serve`` told by its environment to use that Redis and listen on that port with
``SO_REUSEPORT`` — and watches them:

- a worker that exits unasked is started again, after a back-off (0.5 s, doubling up
  to 30 s, for its crashes in the last minute); a worker that crashes
  :data:`MAX_CRASHES` times within :data:`CRASH_WINDOW` seconds is a crash loop: the
  supervisor says so, stops the others and exits with status 1 rather than spin;
- SIGTERM or SIGINT is passed on to every worker (each drains as a lone hub does:
  ``/readyz`` 503 for ``FLUX_SHUTDOWN_DRAIN_SECONDS`` after a SIGTERM, listener
  closed, in-flight work finished, WebSockets closed with 1001); once all have exited
  the embedded Redis is stopped, last;
- the per-process connection limits are split between the workers so that the
  configured figures bound the whole (:func:`shares`; docs/scaling.md).

Linux only: its ``SO_REUSEPORT`` spreads new connections over the listening sockets
by a hash of their addresses. Elsewhere ``--workers`` above 1 is refused with a
message (run several hubs on one Redis behind a load balancer there).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import ConfigError
from .store import EmbeddedRedis

if TYPE_CHECKING:
    from types import FrameType

    from .config import Settings

__all__ = [
    "CRASH_WINDOW",
    "MAX_CRASHES",
    "MAX_WORKERS",
    "WORKER_ENV",
    "Supervisor",
    "parse_workers",
    "shares",
]

logger = logging.getLogger("hub.supervisor")

#: The environment variable that makes ``flux serve`` a worker (its number, 1..N).
WORKER_ENV = "FLUX_WORKER_INDEX"
MAX_WORKERS = 256
#: Crashes of one worker within CRASH_WINDOW seconds that make a crash loop.
MAX_CRASHES = 5
CRASH_WINDOW = 60.0
#: Back-off before a crashed worker is started again: FIRST_DELAY, doubling, at most MAX_DELAY.
FIRST_DELAY = 0.5
MAX_DELAY = 30.0
#: Seconds the workers get to stop, beyond their drain delay, before they are killed.
STOP_GRACE = 30.0
_PR_SET_PDEATHSIG = 1


def parse_workers(raw: str, source: str) -> int:
    """``auto`` (one per core this process may run on) or a count from 1 to 256.

    Raises:
        ConfigError: anything else; the message names ``source``.
    """
    text = raw.strip().lower()
    if text == "auto":
        return available_cores()
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_WORKERS:
        raise ConfigError(
            f"{source}={raw!r}: give a number of worker processes from 1 to {MAX_WORKERS}, "
            "or auto (one per core)"
        )
    return count


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def shares(total: int, workers: int) -> list[int]:
    """Split a limit between workers: the shares sum to ``total`` (each at least 1, so
    with fewer than one per worker the sum is ``workers``)."""
    base, extra = divmod(total, workers)
    return [max(1, base + (1 if i < extra else 0)) for i in range(workers)]


#: The per-process limits split between the workers, by their environment variable.
SPLIT_LIMITS = {
    "FLUX_MAX_CONNECTIONS": "max_connections",
    "FLUX_MAX_CONNECTIONS_PER_CLIENT": "max_connections_per_client",
    "FLUX_MAX_UNFINISHED_HEADS": "max_unfinished_heads",
    "FLUX_MAX_UNFINISHED_HEADS_PER_CLIENT": "max_unfinished_heads_per_client",
}


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    crashes: list[float] = field(default_factory=list)
    restart_at: float | None = None


class Supervisor:
    """Run N workers until a signal, then stop them and the embedded Redis. See the
    module docstring."""

    def __init__(self, settings: Settings, workers: int) -> None:
        if sys.platform != "linux":
            raise ConfigError(
                "--workers above 1 needs Linux (its SO_REUSEPORT balances connections "
                "between processes); here, run one flux serve per port on a shared "
                "Redis behind a load balancer (docs/scaling.md)"
            )
        self.settings = settings
        self.workers = [_Worker(i + 1) for i in range(workers)]
        self._signals: list[int] = []
        self._forwarded = 0

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (exit status 0) or a crash loop (1)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        with ExitStack() as stack:
            reserved = stack.enter_context(self._reserve_port())
            port = int(reserved.getsockname()[1])
            url = self.settings.redis.url
            if url is None:
                url = stack.enter_context(EmbeddedRedis.configured(self.settings.redis)).url
            env = self._worker_env(url, port)
            logger.info(
                "starting %d workers on %s:%d", len(self.workers), self.settings.gateway.host, port
            )
            try:
                if not self._signals:  # told to stop while the Redis was starting
                    for worker in self.workers:
                        self._start(worker, env)
                status = self._watch(env)
            finally:
                self._stop_all()  # whatever happened, no worker outlives the supervisor
        return status

    # ------------------------------------------------------------------ internals

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.append(signum)

    def _reserve_port(self) -> contextlib.AbstractContextManager[socket.socket]:
        """Bind (without listening) the address with SO_REUSEPORT: the port is ours
        across worker restarts, port 0 picks one for all, and a port in use is
        refused here, once, with the message a lone hub gives."""
        gateway = self.settings.gateway
        host = gateway.host or "0.0.0.0"
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, gateway.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
        except socket.gaierror as exc:
            raise ConfigError(f"cannot listen on {host}: {exc.strerror}; check --host") from None
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"cannot listen on {host}:{gateway.port}: {exc.strerror or exc} (another "
                "flux serve?); choose another with --port or PORT"
            ) from None
        return contextlib.closing(sock)

    def _worker_env(self, url: str, port: int) -> dict[str, str]:
        settings = self.settings
        env = dict(os.environ)
        env.update(
            FLUX_REDIS_URL=url,
            FLUX_HOST=settings.gateway.host,
            PORT=str(port),
            FLUX_DATA_DIR=str(settings.redis.data_dir),
            FLUX_LOG_LEVEL=settings.log_level,
            FLUX_WORKERS="1",
        )
        # An MCP session lives in one process, and the kernel spreads a client's
        # connections over the workers: /mcp goes without sessions unless told otherwise.
        env.setdefault("FLUX_MCP_STATELESS", "true")
        return env

    def _start(self, worker: _Worker, env: dict[str, str]) -> None:
        own = dict(env)
        own[WORKER_ENV] = str(worker.index)
        gateway = self.settings.gateway
        for var, name in SPLIT_LIMITS.items():
            own[var] = str(shares(getattr(gateway, name), len(self.workers))[worker.index - 1])
        worker.process = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "serve"],
            env=own,
            stdin=subprocess.DEVNULL,
            # Signals reach workers from the supervisor only (Ctrl-C: once, not twice).
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        worker.restart_at = None
        logger.info("worker %d started: pid %d", worker.index, worker.process.pid)

    def _watch(self, env: dict[str, str]) -> int:
        """Restart crashed workers until a signal (0) or a crash loop (1)."""
        while not self._signals:
            now = time.monotonic()
            for worker in self.workers:
                process = worker.process
                if process is not None and process.poll() is not None:
                    worker.process = None
                    if self._signals:
                        break
                    if not self._crashed(worker, process, now):
                        return 1
                if worker.process is None and worker.restart_at is not None:
                    if now >= worker.restart_at:
                        self._start(worker, env)
            time.sleep(0.05)
        return 0

    def _crashed(self, worker: _Worker, process: subprocess.Popen[bytes], now: float) -> bool:
        """Note a worker's unasked exit and plan its restart; False: a crash loop."""
        worker.crashes = [t for t in worker.crashes if now - t < CRASH_WINDOW] + [now]
        how = _exit_description(process.returncode)
        if len(worker.crashes) >= MAX_CRASHES:
            logger.critical(
                "worker %d (pid %d) %s: %d exits within %.0f s, a crash loop; stopping "
                "every worker (the worker's log above says why)",
                worker.index,
                process.pid,
                how,
                len(worker.crashes),
                CRASH_WINDOW,
            )
            return False
        delay = min(MAX_DELAY, FIRST_DELAY * 2 ** (len(worker.crashes) - 1))
        logger.warning(
            "worker %d (pid %d) %s; starting it again in %.1f s",
            worker.index,
            process.pid,
            how,
            delay,
        )
        worker.restart_at = now + delay
        return True

    def _stop_all(self) -> None:
        """Pass the signal on (SIGTERM if none: a crash loop), wait, kill stragglers."""
        first = self._signals[0] if self._signals else signal.SIGTERM
        name = signal.Signals(first).name
        running = [w for w in self.workers if w.process is not None]
        logger.info("%s: stopping %d workers", name, len(running))
        self._forward(first)
        deadline = time.monotonic() + self.settings.gateway.shutdown_drain_seconds + STOP_GRACE
        while running:
            if len(self._signals) > self._forwarded:  # a second signal cuts the drain short
                self._forward(self._signals[-1])
            for worker in list(running):
                assert worker.process is not None
                code = worker.process.poll()
                if code is not None:
                    logger.info(
                        "worker %d (pid %d) %s",
                        worker.index,
                        worker.process.pid,
                        _exit_description(code),
                    )
                    running.remove(worker)
                elif time.monotonic() > deadline:
                    logger.warning("worker %d did not stop in time: killing it", worker.index)
                    worker.process.kill()
                    worker.process.wait()
                    running.remove(worker)
            time.sleep(0.02)
        logger.info("every worker has stopped")

    def _forward(self, signum: int) -> None:
        self._forwarded = max(len(self._signals), 1)
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signum)


def _exit_description(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: a worker gets SIGTERM (and drains) if the supervisor dies, even by -9."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
