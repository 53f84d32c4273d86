"""A lease's deadline in the ``flux`` command: ``flux get``, the ``EXPIRES`` column of
``flux list``, and ``flux watch`` (piped: ``expiresAt`` in its JSON lines; on a
terminal: "expires in 8s"), against a real hub."""

from __future__ import annotations

import argparse
import asyncio
import io
import sys

import httpx
import pytest

from hub.app import Hub
from hub.commands import Context, expires_in, format_table, run_verb
from hub.core import format_ms, parse_rfc3339_ms
from hub.store.expiry import LeaseTable

from .test_cli_client import Terminal, piped_watch
from .test_leases import publish

T0 = 1_772_049_867_000


def test_expires_in_counts_down_in_whole_seconds_and_says_due_once_past() -> None:
    at = format_ms(T0)
    assert expires_in(at, T0 - 8_000) == "in 8s"
    assert expires_in(at, T0 - 7_001) == "in 8s"  # rounded up: never "in 0s" early
    assert expires_in(at, T0 - 1) == "in 1s"
    assert expires_in(at, T0 - 125_000) == "in 2m05s"
    assert expires_in(at, T0 - 7_500_000) == "in 2h05m"
    assert expires_in(at, T0) == "due"
    assert expires_in(at, T0 + 3_000) == "due"


def test_list_table_has_an_expires_column_empty_without_a_lease() -> None:
    entities = [
        {"id": "crew/a", "version": 3, "lastUpdated": format_ms(T0), "properties": {"x": 1}},
        {
            "id": "crew/agent-7",
            "version": 1,
            "lastUpdated": format_ms(T0),
            "expiresAt": format_ms(T0 + 10_000),
            "properties": {"s": "on"},
        },
    ]
    header, plain, leased = format_table(entities, now_ms=T0).splitlines()
    assert header.split() == ["ID", "VERSION", "LAST", "UPDATED", "EXPIRES", "PROPERTIES"]
    column = header.index("EXPIRES")
    assert leased[column:].startswith("in 10s ")
    assert plain[column:].startswith(" " * len("EXPIRES") + '  {"x":1}')


def _verb(hub: Hub, verb: str, **args: object) -> str:
    out = io.StringIO()
    context = Context(f"http://127.0.0.1:{hub.port}", None, None, json_output=False, out=out)
    run_verb(context, verb, argparse.Namespace(**args))
    return out.getvalue()


async def test_flux_get_and_list_on_a_terminal_say_when_the_lease_runs_out(
    hub: Hub, http: httpx.AsyncClient
) -> None:
    await publish(http, "crew/agent-7", ttl=30, status="online")
    await publish(http, "crew/plain", x=1)
    deadline = await LeaseTable(hub.store).deadline("crew/agent-7")
    assert deadline is not None
    # The verbs are blocking clients: off the loop that runs the hub.
    got = await asyncio.to_thread(_verb, hub, "get", entity_id="crew/agent-7")
    first = got.splitlines()[0]
    assert f", expires {format_ms(deadline)} (in " in first, first
    assert int(first.rsplit("(in ", 1)[1].removesuffix("s))")) in range(28, 31)
    plain = await asyncio.to_thread(_verb, hub, "get", entity_id="crew/plain")
    assert "expires" not in plain
    listed = await asyncio.to_thread(_verb, hub, "list", prefix="crew/", namespace=None, where=None)
    header, agent, other, total = listed.splitlines()
    assert "EXPIRES" in header.split() and total == "2 entities"
    column = header.index("EXPIRES")
    assert agent[column:].startswith("in ") and other[column : column + 3] == "   "


async def test_flux_watch_piped_tells_each_deadline(
    hub: Hub, base_url: str, http: httpx.AsyncClient
) -> None:
    await publish(http, "crew/w", ttl=30, x=1)
    async with piped_watch(base_url, "crew/") as next_line:
        snapshot = await next_line()
        assert snapshot["kind"] == "snapshot"
        assert parse_rfc3339_ms(snapshot["expiresAt"]) == await LeaseTable(hub.store).deadline(
            "crew/w"
        )
        assert (await next_line())["kind"] == "synced"
        await publish(http, "crew/w", ttl=60, x=1)  # a beat
        beat = await next_line()
        assert (beat["kind"], beat["changes"]) == ("delta", {})
        assert beat["expiresAt"] > snapshot["expiresAt"]
        await publish(http, "crew/w", x=2)  # no ttl: no news
        assert "expiresAt" not in await next_line()
        await publish(http, "crew/w", ttl=0, x=2)  # removed
        removed = await next_line()
        assert "expiresAt" in removed and removed["expiresAt"] is None


@pytest.mark.slow
async def test_flux_watch_in_a_terminal_counts_the_lease_down(
    hub: Hub, base_url: str, http: httpx.AsyncClient
) -> None:
    await publish(http, "crew/t", ttl=30, x=1)
    await publish(http, "crew/u", x=2)
    terminal = Terminal()
    await terminal.start(
        sys.executable, "-m", "hub.cli", "watch", "crew/", env={"FLUX_URL": base_url}
    )
    try:
        await terminal.wait_for("live")
        await terminal.wait_for("expires in ")
        rows = {line.split()[0]: line for line in terminal.screen().splitlines() if line}
        assert "expires in" in rows["crew/t"] and "expires" not in rows["crew/u"]
    finally:
        await terminal.stop()
