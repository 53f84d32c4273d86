"""Installing and running a Singer tap as a child process.

- :func:`install_tap`: a pip requirement installed (by the hub's own pip) into a
  virtual environment of its own under the hub's data directory (``<data_dir>/taps/<name>-<digest>/``), once: a
  ``.installed`` marker is written last, so a half-done install is redone. The whole
  install is bounded (:data:`INSTALL_TIMEOUT`); pip's last output line is the error.
- :class:`TapProcess`: runs ``<tap> --config <file> [--state <file>]`` in a new
  process group, with the configuration in a ``0600`` file of a ``0700`` temporary
  directory (removed after the run), and reads its stdout line by line, each line at
  most :data:`MAX_LINE_BYTES`. A tap silent longer than its idle timeout, or running
  longer than its run timeout, is killed — the whole process group, with ``SIGKILL`` —
  as it is when the run is cancelled (the hub stops). stderr is drained as it comes;
  its last lines (bounded) say why a tap failed.

A tap gets a small environment (:data:`CHILD_ENV`), never the hub's: the hub's
encryption key and admin token are not a tap's business.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from subprocess import DEVNULL, PIPE, STDOUT
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

from ..errors import Broken
from ..wire.jsonutil import dumps

if TYPE_CHECKING:
    from collections.abc import Mapping

    from anyio.abc import ByteReceiveStream, Process

__all__ = [
    "CHILD_ENV",
    "INSTALL_TIMEOUT",
    "MAX_LINE_BYTES",
    "TapProcess",
    "child_env",
    "install_tap",
    "venv_dir",
]

logger = logging.getLogger("hub.connectors")

#: Longest output line a tap may write (a Singer message); a longer one fails the run.
MAX_LINE_BYTES = 4 * 1024 * 1024
#: Seconds ``python -m venv`` plus ``pip install`` may take, in all.
INSTALL_TIMEOUT = 600.0
#: Lines of stderr kept to explain a failure, each cut at :data:`MAX_STDERR_LINE`.
STDERR_LINES = 20
MAX_STDERR_LINE = 300
#: Seconds given to a killed child to be reaped.
REAP_GRACE = 2.0
#: What a tap (and pip) sees of the hub's environment. pip also gets ``PIP_*`` and
#: the proxy variables, so that a hub behind a proxy or a private index can install.
CHILD_ENV = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TMPDIR",
    "TZ",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
)
_PIP_ENV = re.compile(r"PIP_[A-Z0-9_]+|(?i:https?_proxy|no_proxy)")
_UNSAFE = re.compile(r"[^a-z0-9]+")
_INSTALLED = ".installed"


def child_env(environ: Mapping[str, str], *, pip: bool = False) -> dict[str, str]:
    """The environment of a tap (or of pip, with ``pip=True``) taken from the hub's."""
    env = {name: environ[name] for name in CHILD_ENV if name in environ}
    if pip:
        env.update({k: v for k, v in environ.items() if _PIP_ENV.fullmatch(k)})
    env.setdefault("PATH", os.defpath)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def venv_dir(taps_dir: Path, requirement: str) -> Path:
    """Where the virtual environment of a pip requirement lives."""
    digest = hashlib.sha256(f"{requirement}\0{sys.version_info[:2]}".encode()).hexdigest()[:12]
    stem = _UNSAFE.sub("-", requirement.lower()).strip("-")[:40] or "tap"
    return taps_dir / f"{stem}-{digest}"


async def install_tap(
    taps_dir: Path, requirement: str, *, time_limit: float = INSTALL_TIMEOUT
) -> Path:
    """Install ``requirement`` into its own virtual environment, unless it is there.

    Returns:
        The environment's ``bin`` directory.

    Raises:
        Broken: the install failed or took longer than ``time_limit`` seconds.
    """
    target = venv_dir(taps_dir, requirement)
    bin_dir = target / "bin"
    if (target / _INSTALLED).is_file():
        return bin_dir
    if target.exists():
        await anyio.to_thread.run_sync(shutil.rmtree, target)  # a half-done install
    target.parent.mkdir(parents=True, exist_ok=True)
    env = child_env(os.environ, pip=True)
    try:
        with anyio.fail_after(time_limit):
            await _check(
                [sys.executable, "-m", "venv", "--without-pip", str(target)],
                env,
                "creating its virtualenv",
            )
            # The hub's own pip installs into it (pip >= 22.3): no copy of pip per tap.
            await _check(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "--python",
                    str(bin_dir / "python"),
                    "install",
                    "--no-input",
                    "--disable-pip-version-check",
                    requirement,
                ],
                env,
                f"pip install {requirement}",
            )
    except TimeoutError:
        raise Broken(f"installing {requirement} did not finish within {time_limit:g} s") from None
    (target / _INSTALLED).write_text(requirement + "\n")
    return bin_dir


async def _check(command: list[str], env: dict[str, str], what: str) -> None:
    """Run a command to its end; raise Broken with its last output line if it fails."""
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
    process = await anyio.open_process(
        command, stdin=DEVNULL, stdout=PIPE, stderr=STDOUT, env=env, start_new_session=True
    )
    try:
        assert process.stdout is not None
        await _drain(process.stdout, tail)
        code = await process.wait()
    finally:
        await _kill(process)
    if code != 0:
        last = next((line for line in reversed(tail) if line.strip()), "no output")
        raise Broken(f"{what} failed (exit status {code}): {last}")


class TapProcess:
    """One run of a tap. Use as ``async with``: run :meth:`drain_stderr` in a task, read
    :meth:`next_line` until None, then :meth:`finish`.

    Args:
        executable: the tap's executable.
        config: its configuration, secrets included (written to a 0600 file).
        state: the last bookmark (a ``STATE`` value, JSON), or None.
        idle_timeout: seconds the tap may stay silent on stdout.
        secrets: values to blank out of the stderr lines shown in errors.
    """

    def __init__(
        self,
        executable: str,
        config: dict[str, Any],
        state: bytes | None,
        *,
        idle_timeout: float,
        secrets: list[str],
    ) -> None:
        self.executable = executable
        self.config = config
        self.state = state
        self.idle_timeout = idle_timeout
        self.secrets = [s for s in secrets if len(s) >= 4]
        #: The last lines the tap wrote to stderr.
        self.stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._process: Process | None = None
        self._reader: BufferedByteReceiveStream
        self._dir: str | None = None
        self._number = 0
        self._ended = False

    async def __aenter__(self) -> TapProcess:
        self._dir = tempfile.mkdtemp(prefix="flux-tap-")  # 0700
        folder = Path(self._dir)
        command = [
            self.executable,
            "--config",
            _private(folder / "config.json", dumps(self.config)),
        ]
        if self.state is not None:
            command += ["--state", _private(folder / "state.json", self.state)]
        try:
            self._process = await anyio.open_process(
                command,
                stdin=DEVNULL,
                stdout=PIPE,
                stderr=PIPE,
                env=child_env(os.environ),
                cwd=self._dir,
                start_new_session=True,
            )
        except OSError as exc:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise Broken(f"cannot start {self.executable}: {exc.strerror or exc}") from None
        assert self._process.stdout is not None
        self._reader = BufferedByteReceiveStream(self._process.stdout)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if self._process is not None:
                await _kill(self._process)
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)

    async def drain_stderr(self) -> None:
        """Read stderr to its end, keeping its last lines. Run it in a task."""
        assert self._process is not None and self._process.stderr is not None
        await _drain(self._process.stderr, self.stderr)

    async def next_line(self) -> bytes | None:
        """The tap's next stdout line (without its newline); None at its end.

        Raises:
            Broken: the line is too long, or the tap was silent past the idle timeout.
        """
        if self._ended:
            return None
        self._number += 1
        try:
            with anyio.fail_after(self.idle_timeout):
                return await self._reader.receive_until(b"\n", MAX_LINE_BYTES)
        except TimeoutError:
            raise Broken(
                f"the tap wrote nothing for {self.idle_timeout:g} s (idle timeout)"
            ) from None
        except anyio.DelimiterNotFound:
            raise Broken(
                f"line {self._number} of the tap's output is longer than {MAX_LINE_BYTES} bytes"
            ) from None
        except (anyio.IncompleteRead, anyio.EndOfStream):
            # The end; a last line without its newline is a line all the same.
            self._ended = True
            return self._reader.buffer or None

    async def finish(self) -> None:
        """Wait for the tap to exit (it closed its stdout).

        Raises:
            Broken: it exited with a non-zero status, or did not exit in time.
        """
        assert self._process is not None
        try:
            with anyio.fail_after(self.idle_timeout):
                code = await self._process.wait()
        except TimeoutError:
            raise Broken(
                f"the tap closed its output but did not exit within {self.idle_timeout:g} s"
            ) from None
        if code != 0:
            raise Broken(f"the tap exited with status {code}{self.why()}")

    async def kill(self) -> None:
        """Kill the tap's process group now (a failed run)."""
        if self._process is not None:
            await _kill(self._process)

    def why(self) -> str:
        """``: <the last stderr line>`` (secrets blanked), or nothing."""
        last = next((line for line in reversed(self.stderr) if line.strip()), None)
        if last is None:
            return ""
        for secret in self.secrets:
            last = last.replace(secret, "***")
        return ": " + last


# ---------------------------------------------------------------------- helpers


def _private(path: Path, data: bytes) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    return str(path)


async def _drain(stream: ByteReceiveStream, tail: collections.deque[str]) -> None:
    """Read a stream to its end, keeping its last lines (each cut) in ``tail``."""
    pending = b""
    try:
        async for chunk in stream:
            pending += chunk
            *complete, pending = pending.split(b"\n")
            tail.extend(line[:MAX_STDERR_LINE].decode(errors="replace") for line in complete)
            pending = pending[-MAX_STDERR_LINE:]
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
    if pending:
        tail.append(pending.decode(errors="replace"))


async def _kill(process: Process) -> None:
    """Kill the process group (the tap and anything it started), then reap it."""
    with anyio.CancelScope(shield=True):
        # Even when the tap itself has exited: children it left in its group may not
        # have (Linux does not reuse a pid while it names a process group).
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        with anyio.move_on_after(REAP_GRACE):
            await process.wait()
        await process.aclose()
