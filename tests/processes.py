"""Real processes for tests: hubs as ``flux serve`` (to kill or keep separate), and
commands run as a user's shell would run them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from .conftest import timeout

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["HubProcess", "free_port", "process_group", "tools_env", "until_ready"]


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tools_env(**extra: str) -> dict[str, str]:
    """A user's shell after activating the venv: this environment with the project's
    tools (``flux``, ``python3``...) first on PATH, and ``extra`` set."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


@contextlib.asynccontextmanager
async def process_group(
    *command: str, env: dict[str, str], cwd: Path | None = None, grace: float | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``command`` in a process group of its own, stdout and stderr piped; stopped (all
    of the group) at the end: SIGTERM and ``grace`` seconds (scaled) to exit, then
    SIGKILL; with no ``grace``, SIGKILL at once."""
    process = await asyncio.create_subprocess_exec(
        *command,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            if grace is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), timeout(grace))
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()


class HubProcess:
    """``flux serve`` on a fixed port over a shared Redis, killable."""

    def __init__(
        self, redis_url: str, key_prefix: str, port: int, env: dict[str, str] | None = None
    ) -> None:
        self.args = [
            sys.executable,
            "-m",
            "hub.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--redis",
            redis_url,
        ]
        self.env = {
            **os.environ,
            "FLUX_KEY_PREFIX": key_prefix,
            "FLUX_LOG_LEVEL": "warning",
            **(env or {}),
        }
        self.port = port
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.args, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = asyncio.get_running_loop().time() + timeout(20)
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                assert asyncio.get_running_loop().time() < deadline, "hub did not start"
                await asyncio.sleep(0.05)

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), timeout(20))


async def until_ready(url: str, wait: float = 30) -> None:
    """Poll ``url``'s ``/readyz`` until it answers 200, as a health check does."""
    deadline = asyncio.get_running_loop().time() + timeout(wait)
    async with httpx.AsyncClient(timeout=timeout(5)) as http:
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            assert asyncio.get_running_loop().time() < deadline, f"{url} never ready"
            await asyncio.sleep(0.1)
