"""Hubs as real ``flux serve`` processes, for tests that need them killed or separate."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys

from .conftest import timeout

__all__ = ["HubProcess", "free_port"]


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
