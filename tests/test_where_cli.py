"""``flux list --where`` and ``flux watch --where``: the real command against a real hub."""

from __future__ import annotations

import httpx

from .native_client import rest_publish as publish
from .test_cli_client import flux, flux_json, piped_watch


async def test_flux_list_where(base_url: str, http: httpx.AsyncClient) -> None:
    await publish(http, "crew/a", {"status": "open", "load": 1, "zone": "a"})
    await publish(http, "crew/b", {"status": "open", "load": 7, "zone": "b", "owner": "w"})
    await publish(http, "crew/c", {"status": "done", "load": 2, "zone": "c"})

    async def ids(*where: str) -> list[str]:
        args = [arg for w in where for arg in ("--where", w)]
        listed = await flux_json(base_url, "list", "--prefix", "crew/", *args)
        return [e["id"] for e in listed]

    assert await ids("status=open") == ["crew/a", "crew/b"]
    assert await ids("status=open", "load<5") == ["crew/a"]
    assert await ids("zone in b,c") == ["crew/b", "crew/c"]
    assert await ids("owner?") == ["crew/b"]
    assert await ids("!owner?", "load>=2") == ["crew/c"]
    assert await ids('{"load": {"gt": 1, "lt": 5}}') == ["crew/c"]
    status, out, err = await flux(base_url, "list", "--where", "load<<")
    assert status == 0  # ("<" compared as a string: nothing is)
    status, out, err = await flux(base_url, "list", "--where", "=5")
    assert (status, out) == (2, "")
    assert err.startswith("flux list: --where '=5': expected NAME=VALUE")
    status, out, err = await flux(base_url, "list", "--where", "load<[1]")
    assert status == 2
    assert err.strip() == "flux list: where.load.lt: 'lt' needs a number or a string"


async def test_flux_watch_where_prints_entries_and_lefts(
    base_url: str, http: httpx.AsyncClient
) -> None:
    status, _, err = await flux(base_url, "watch", "w/", "--where", "nonsense")
    assert status == 2
    assert err.startswith("flux watch: --where 'nonsense': expected NAME=VALUE")
    await publish(http, "w/a", {"status": "open"})
    async with piped_watch(base_url, "w/", "--where", "status=open") as line:
        first = await line()
        assert (first["kind"], first["id"]) == ("snapshot", "w/a")
        assert (await line())["kind"] == "synced"
        await publish(http, "w/b", {"status": "done"})
        await publish(http, "w/a", {"status": "done"})
        left = await line()
        assert (left["kind"], left["id"]) == ("left", "w/a")
        await publish(http, "w/b", {"status": "open"})
        entry = await line()
        assert (entry["kind"], entry["id"], entry["created"]) == ("delta", "w/b", True)
        assert entry["changes"] == {"status": "open"}
