"""The ``flux`` command as a client: the Flux skill's sequence, errors, ``watch``."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from hub.store import Store

from .conftest import make_settings, running_hub, timeout

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


async def flux(
    base_url: str | None, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run ``flux ARGS`` with FLUX_URL set (unless None); ``(status, stdout, stderr)``."""
    url = {} if base_url is None else {"FLUX_URL": base_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub.cli",
        *args,
        env={**os.environ, **url, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout(30))
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def flux_json(base_url: str, *args: str, env: dict[str, str] | None = None) -> Any:
    status, out, err = await flux(base_url, *args, env=env)
    assert status == 0, err
    return json.loads(out)


@asynccontextmanager
async def piped_watch(
    base_url: str, *args: str
) -> AsyncIterator[Callable[[], Awaitable[dict[str, Any]]]]:
    """``flux watch ARGS`` with its output piped (JSON lines): yields a reader of its
    next line (15 s at most); interrupted (SIGINT) at the end, and waited for."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub.cli",
        "watch",
        *args,
        env={**os.environ, "FLUX_URL": base_url},
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None

    async def line() -> dict[str, Any]:
        assert process.stdout is not None
        got: dict[str, Any] = json.loads(
            await asyncio.wait_for(process.stdout.readline(), timeout(15))
        )
        return got

    try:
        yield line
    finally:
        process.send_signal(2)
        await asyncio.wait_for(process.wait(), timeout(10))


async def test_cli_runs_the_flux_skill_sequence(base_url: str, http: httpx.AsyncClient) -> None:
    health = await flux_json(base_url, "health")
    assert health["reachable"] is True
    published = await flux_json(
        base_url, "publish", "sensors", "agent-1", "lab/temp-1", '{"celsius": 21.5}'
    )
    assert published["stream"] == "sensors" and len(published["eventId"]) == 36
    entity = await flux_json(base_url, "get", "lab/temp-1")
    assert entity["properties"] == {"celsius": 21.5}
    listed = await flux_json(base_url, "list", "--prefix", "lab/")
    assert [e["id"] for e in listed] == ["lab/temp-1"]
    by_namespace = await flux_json(base_url, "list", "--namespace", "lab")
    assert [e["id"] for e in by_namespace] == ["lab/temp-1"]
    events = [
        {
            "stream": "sensors",
            "source": "agent-1",
            "payload": {"entity_id": f"lab/b{n}", "properties": {"n": n}},
        }
        for n in range(3)
    ]
    batch = await flux_json(base_url, "batch", json.dumps(events))
    assert batch["successful"] == 3 and batch["failed"] == 0
    deleted = await flux_json(base_url, "delete", "lab/temp-1")
    assert deleted["entity_id"] == "lab/temp-1"
    swept = await flux_json(base_url, "batch-delete", '{"prefix": "lab/b"}')
    assert swept["deleted"] == 3
    assert await flux_json(base_url, "list", "--prefix", "lab/") == []
    connectors = await flux_json(base_url, "connectors")
    assert "connectors" in connectors
    config = await flux_json(base_url, "admin-config")
    assert config["rate_limit_enabled"] is True
    updated = await flux_json(
        base_url, "admin-config", '{"rate_limit_per_namespace_per_minute": 500}'
    )
    assert updated["rate_limit_per_namespace_per_minute"] == 500
    history = await flux_json(base_url, "history", "lab/temp-1")
    assert len(history) == 2  # the publish and the tombstone


async def test_cli_reports_errors_with_an_exit_status(base_url: str) -> None:
    status, _, err = await flux(base_url, "get", "no/such")
    assert (status, err.strip()) == (1, "flux get: 404: Entity not found")
    status, _, err = await flux(base_url, "publish", "BAD", "s", "x", "{}")
    assert status == 1 and "invalid stream format 'BAD'" in err
    status, _, err = await flux(base_url, "publish", "s", "s", "x", "{oops")
    assert status == 2 and "PROPERTIES_JSON is not valid JSON" in err
    status, _, err = await flux("http://127.0.0.1:9", "health")
    assert status == 1 and "cannot reach the hub at http://127.0.0.1:9" in err
    status, _, err = await flux(base_url, "frobnicate")
    assert status == 2 and "invalid choice" in err


async def test_cli_registers_a_namespace_with_the_admin_token(
    store: Store, key_prefix: str
) -> None:
    settings = make_settings(key_prefix, gateway={"auth_enabled": True, "admin_token": "adm"})
    async with running_hub(settings, store) as hub:
        url = f"http://127.0.0.1:{hub.port}"
        status, _, err = await flux(url, "namespace", "register", "team")
        assert status == 1 and "Admin token required" in err
        created = await flux_json(
            url, "namespace", "register", "team", env={"FLUX_ADMIN_TOKEN": "adm"}
        )
        token = created["token"]
        published = await flux_json(
            url, "publish", "s", "cli", "team/x", '{"v": 1}', env={"FLUX_TOKEN": token}
        )
        assert published["stream"] == "s"
        info = await flux_json(url, "namespace", "get", "team")
        assert info["entityCount"] == 1


class Terminal:
    """A program running in a pseudo-terminal; everything it writes is collected."""

    def __init__(self) -> None:
        self.output = ""
        self.process: asyncio.subprocess.Process | None = None
        self._master = -1

    async def start(self, *args: str, env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        self._master = master
        os.set_blocking(master, False)
        self.process = await asyncio.create_subprocess_exec(
            *args,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**os.environ, **env, "COLUMNS": "120", "LINES": "30"},
        )
        os.close(slave)
        asyncio.get_running_loop().add_reader(master, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self._master, 65536)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self._master)
            return
        self.output += data.decode(errors="replace")

    def screen(self) -> str:
        """The latest redraw, without escape codes."""
        return ANSI.sub("", self.output.rsplit("\x1b[2J", 1)[-1])

    async def wait_for(self, text: str) -> None:
        deadline = asyncio.get_running_loop().time() + timeout(15)
        while text not in self.screen():
            assert asyncio.get_running_loop().time() < deadline, (
                f"{text!r} never shown:\n{self.screen()}"
            )
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(2)  # Ctrl-C
            await asyncio.wait_for(self.process.wait(), timeout(10))
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._master)
        os.close(self._master)


@pytest.mark.slow
async def test_watch_in_a_terminal_shows_a_value_published_after_it_started(
    base_url: str, http: httpx.AsyncClient
) -> None:
    await http.post(
        "/api/events",
        json={
            "stream": "s",
            "source": "t",
            "payload": {"entity_id": "room/a", "properties": {"temp": 20}},
        },
    )
    terminal = Terminal()
    await terminal.start(
        sys.executable, "-m", "hub.cli", "watch", "room/", env={"FLUX_URL": base_url}
    )
    try:
        await terminal.wait_for("live")
        await terminal.wait_for('{"temp":20}')
        await http.post(
            "/api/events",
            json={
                "stream": "s",
                "source": "t",
                "payload": {"entity_id": "room/b", "properties": {"temp": 23.5}},
            },
        )
        await terminal.wait_for("room/b")
        await terminal.wait_for('{"temp":23.5}')
        assert "2 entities" in terminal.screen()
    finally:
        await terminal.stop()
    assert terminal.process is not None and terminal.process.returncode == 0


async def test_watch_piped_prints_json_lines(base_url: str, http: httpx.AsyncClient) -> None:
    async with piped_watch(base_url, "pipe/x") as next_line:
        first = await next_line()
        assert first["kind"] == "synced"
        await http.post(
            "/api/events",
            json={
                "stream": "s",
                "source": "t",
                "payload": {"entity_id": "pipe/x", "properties": {"v": 1}},
            },
        )
        line = await next_line()
        assert (line["kind"], line["id"], line["changes"], line["created"]) == (
            "delta",
            "pipe/x",
            {"v": 1},
            True,
        )
