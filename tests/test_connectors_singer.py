"""Singer taps as connectors: the real ``tap-jsonl`` from the package index, a real hub
and real Redis; failing taps are tiny scripts the tests write.

Done means (issue 14): a tap's records become entities through the publish path, a
re-run publishes nothing twice, a restarted hub resumes from the bookmark, and a tap
that crashes, hangs or writes garbage gets a clear status and a backed-off retry —
never a stuck scheduler or a hub crash — and is killed on timeout and at shutdown.

``tap-jsonl`` is installed once per machine, by the hub's own installer, into
``.pytest_cache/flux-taps/`` (tests/taps.py, which ``.ci/run`` runs first); each
test's hub finds it there as already installed (its ``<data_dir>/taps`` links to that
folder).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import shutil
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub.app import Hub
from hub.commands import Context, run_verb
from hub.config import Settings
from hub.connectors.singer_process import install_tap, venv_dir
from hub.store import Store

from .browser import DevTools
from .conftest import make_settings, running_hub, timeout
from .doc_blocks import doc_blocks
from .local_http import until
from .taps import TAP_JSONL, install

KEY = base64.b64encode(bytes(range(32))).decode()


@pytest.fixture(scope="session")
async def taps_cache() -> Path:
    """The folder holding tap-jsonl's virtualenv, installed on first use (~15 s)."""
    return await install()


@pytest.fixture
def data_dir(tmp_path: Path, taps_cache: Path) -> Path:
    data = tmp_path / "flux-data"
    data.mkdir()
    (data / "taps").symlink_to(taps_cache, target_is_directory=True)
    return data


@pytest.fixture
def settings(key_prefix: str, data_dir: Path) -> Settings:
    return make_settings(
        key_prefix,
        connectors={"min_poll_interval": 0.1, "encryption_key": KEY},
        redis={"data_dir": str(data_dir)},
        gateway={"max_value_bytes": 1024},  # a record's property past it is refused
    )


@pytest.fixture
def files(tmp_path: Path) -> Path:
    folder = tmp_path / "orders"
    folder.mkdir()
    return folder


def _client(hub: Hub) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.port}", timeout=timeout(10))


def write_jsonl(path: Path, rows: list[dict[str, Any]], mtime: float) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.utime(path, (mtime, mtime))


def jsonl_tap(files: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": "orders",
        "tap": "tap-jsonl",
        "pip": TAP_JSONL,
        "namespace": "shop",
        "config": {"path": f"{files}/*.jsonl", "stream_name": "orders", "primary_keys": ["id"]},
        "streams": {"orders": {"entity_id": "order-{id}"}},
        "interval_secs": 0.5,
        **extra,
    }


async def register(http: httpx.AsyncClient, body: dict[str, Any]) -> None:
    reply = await http.post("/api/connectors/singer", json=body)
    assert reply.status_code == 201, reply.text


async def tap_until(
    http: httpx.AsyncClient, name: str, check: Callable[[dict[str, Any]], bool], wait: float = 30
) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def ready() -> bool:
        reply = await http.get(f"/api/connectors/singer/{name}")
        assert reply.status_code == 200, reply.text
        found.clear()
        found.update(reply.json())
        return check(found)

    try:
        await until(ready, wait)
    except TimeoutError:
        raise AssertionError(f"tap {name} never got there: {found}") from None
    return found


async def entity(http: httpx.AsyncClient, entity_id: str) -> dict[str, Any]:
    reply = await http.get(f"/api/state/entities/{entity_id.replace('/', '%2F')}")
    assert reply.status_code == 200, reply.text
    value: dict[str, Any] = reply.json()
    return value


async def history(http: httpx.AsyncClient, entity_id: str) -> list[dict[str, Any]]:
    reply = await http.get("/api/events", params={"entity": entity_id, "limit": 100})
    assert reply.status_code == 200, reply.text
    events: list[dict[str, Any]] = reply.json()
    return events


ROWS = [
    {"id": 1, "item": "tea", "total": 4.5},
    {"id": 2, "item": "cake", "total": 3},
    {"id": 3, "item": "jam", "total": 6},
]


# ---------------------------------------------------------------------- tap-jsonl


async def test_tap_records_become_entities_and_a_rerun_publishes_nothing_twice(
    hub: Hub, http: httpx.AsyncClient, files: Path, store: Store
) -> None:
    write_jsonl(files / "a.jsonl", ROWS, 1_700_000_000)
    await register(http, jsonl_tap(files))
    first = await tap_until(http, "orders", lambda t: t["runs"] >= 1)
    assert first["last_error"] is None, first
    assert (first["records"], first["duplicates"], first["rejected"]) == (3, 0, 0)
    order = await entity(http, "shop/order-1")
    # The record's fields, without the tap's _sdc_ metadata.
    assert order["properties"] == {"id": 1, "item": "tea", "total": 4.5}
    [event] = await history(http, "shop/order-2")
    assert event["stream"] == "singer" and event["source"] == "tap.orders"
    assert event["key"] == "orders" and event["eventId"].startswith("tap-")

    # The next run, with the bookmark: tap-jsonl 0.3.1 reads the unchanged file again
    # (it does not skip what its bookmark covers), the same eventIds come back, and
    # nothing is applied twice.
    again = await tap_until(http, "orders", lambda t: t["runs"] >= 2)
    assert (again["records"], again["duplicates"], again["records_total"]) == (0, 3, 3)

    # The same without the bookmark (as if the hub died between publishing and
    # saving it).
    await store.client.delete(store.keys.connector_tap_state("orders"))
    runs = again["runs"]
    rerun = await tap_until(http, "orders", lambda t: t["runs"] > runs)
    assert (rerun["records"], rerun["duplicates"], rerun["records_total"]) == (0, 3, 3)
    for row in ROWS:
        assert len(await history(http, f"shop/order-{row['id']}")) == 1
        assert (await entity(http, f"shop/order-{row['id']}"))["version"] == 1

    # Flux's status endpoints list the tap beside the catalogue, with its figures.
    listed = (await http.get("/api/connectors")).json()["connectors"]
    [tap] = [c for c in listed if c["name"] == "orders"]
    assert tap["kind"] == "singer" and tap["status"] == "configured" and tap["enabled"]
    assert tap["records_total"] == 3 and "last_poll" in tap and "next_poll" in tap
    detail = (await http.get("/api/connectors/orders")).json()
    assert detail["poll_interval_seconds"] == 0.5 and detail["state"] in ("ok", "running")


async def test_restarted_hub_resumes_from_the_bookmark(
    store: Store, settings: Settings, files: Path, tmp_path: Path, taps_cache: Path
) -> None:
    venv_name = venv_dir(taps_cache, TAP_JSONL).name
    write_jsonl(files / "a.jsonl", ROWS, 1_700_000_000)
    # tap-jsonl, behind a wrapper that keeps a copy of the --state file it is given.
    seen = tmp_path / "states"
    seen.mkdir()
    wrapper = script(
        tmp_path,
        "tap-jsonl",
        "args = sys.argv[1:]\n"
        "if '--state' in args:\n"
        "    state = open(args[args.index('--state') + 1]).read()\n"
        f"    open('{seen}/' + str(time.time()), 'w').write(state)\n"
        f"os.execv('{taps_cache}/' + {venv_name!r} + '/bin/tap-jsonl', ['tap-jsonl', *args])",
    )
    tap = jsonl_tap(files, interval_secs=60, executable=wrapper)
    del tap["pip"]
    async with running_hub(settings, store) as first, _client(first) as http:
        await register(http, tap)
        status = await tap_until(http, "orders", lambda t: t["runs"] >= 1)
        assert status["records"] == 3
    bookmark = await store.client.get(store.keys.connector_tap_state("orders"))
    assert bookmark is not None and b"a.jsonl" in bookmark
    # While no hub runs, new lines arrive (in a new file: tap-jsonl's bookmark is a
    # file's modification time).
    write_jsonl(files / "b.jsonl", [{"id": 4, "item": "bun", "total": 2}], 1_700_000_100)
    # The first hub set the next run a minute on, and the next hub keeps that schedule:
    # move it to now, as if the minute had passed.
    await store.client.hset(store.keys.connector_status("tap:orders"), "next_poll", 0)
    async with running_hub(settings, store) as second, _client(second) as http:
        status = await tap_until(http, "orders", lambda t: t["runs"] >= 2)
        assert status["last_error"] is None, status
        # The second hub gave the tap the first hub's bookmark...
        [given] = [json.loads(p.read_text()) for p in seen.iterdir()]
        assert given == json.loads(bookmark)
        # ... and applied only the new line (tap-jsonl read a.jsonl again: duplicates).
        assert (status["records"], status["duplicates"], status["records_total"]) == (1, 3, 4)
        assert (await entity(http, "shop/order-4"))["properties"]["item"] == "bun"
        assert len(await history(http, "shop/order-1")) == 1


async def test_tap_with_secrets_mapping_and_property_selection(
    hub: Hub, http: httpx.AsyncClient, files: Path
) -> None:
    write_jsonl(files / "a.jsonl", ROWS, 1_700_000_000)
    body = jsonl_tap(
        files,
        name="sales",
        config={"stream_name": "orders", "primary_keys": ["id"]},
        secrets={"path": f"{files}/*.jsonl"},  # a secret is merged into the config
        streams={"orders": {"entity_id": "till-{item}", "properties": ["total"]}},
    )
    await register(http, body)
    status = await tap_until(http, "sales", lambda t: t["runs"] >= 1)
    assert status["records"] == 3 and status["has_secrets"] is True
    assert "secrets" not in status and "path" not in status["config"]
    assert (await entity(http, "shop/till-jam"))["properties"] == {"total": 6}


# ---------------------------------------------------------------------- registration


async def test_registration_errors_name_the_field(hub: Hub, http: httpx.AsyncClient) -> None:
    good = jsonl_tap(Path("/nowhere"))
    cases = [
        ({**good, "name": "Bad Name"}, "name: 1 to 32 of [a-z0-9_], starting with a letter"),
        ({**good, "name": "github"}, "name: 'github' is taken by a connector of the catalogue"),
        ({**good, "tap": "../x"}, "tap: an executable's name"),
        ({**good, "executable": "/bin/true"}, "executable: give pip or executable, not both"),
        ({**good, "namespace": "flux-core"}, "namespace: 'flux-core' is reserved for the hub"),
        ({**good, "streams": {}}, "streams: expected an object of at least one stream"),
        ({**good, "streams": {"s": {"entity_id": "x-{"}}}, "streams.s.entity_id: unbalanced"),
        ({**good, "interval_secs": 0.01}, "interval_secs: must be at least 0.1 (seconds)"),
        ({**good, "pip": "--index-url=http://x"}, "pip: a requirement of at most"),
    ]
    for body, message in cases:
        reply = await http.post("/api/connectors/singer", json=body)
        assert reply.status_code == 422, (body, reply.text)
        assert reply.json()["error"].startswith(message), reply.text
    await register(http, good)
    again = await http.post("/api/connectors/singer", json=good)
    assert (again.status_code, again.json()["error"]) == (
        409,
        "tap 'orders' exists: delete it first",
    )
    assert (await http.delete("/api/connectors/singer/orders")).status_code == 204
    assert (await http.get("/api/connectors/singer/orders")).status_code == 404


async def test_public_mode_needs_the_admin_token_for_taps(store: Store, key_prefix: str) -> None:
    open_hub = make_settings(key_prefix, gateway={"auth_enabled": True})
    async with running_hub(open_hub, store) as hub, _client(hub) as http:
        reply = await http.get("/api/connectors/singer")
        assert reply.status_code == 403 and "FLUX_ADMIN_TOKEN" in reply.json()["error"]
    guarded = make_settings(key_prefix, gateway={"auth_enabled": True, "admin_token": "adm"})
    async with running_hub(guarded, store) as hub, _client(hub) as http:
        assert (await http.get("/api/connectors/singer")).status_code == 401
        reply = await http.get("/api/connectors/singer", headers={"authorization": "Bearer adm"})
        assert reply.status_code == 200 and reply.json() == {"taps": []}


# ---------------------------------------------------------------------- failing taps


def script(folder: Path, name: str, body: str) -> str:
    """An executable Python script standing in for a tap."""
    path = folder / name
    path.write_text(f"#!{sys.executable}\nimport os, sys, time\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def fake_tap(name: str, executable: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "tap": "tap-fake",
        "executable": executable,
        "namespace": "lab",
        "streams": {"s": {"entity_id": "{id}"}},
        "interval_secs": 0.2,
        "idle_timeout_secs": 1,
        **extra,
    }


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too (its parent has not reaped it yet).
    stat_line = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}/stat").exists() else ""
    return " Z " not in stat_line


async def test_crashing_hanging_and_garbage_taps_fail_clearly_and_back_off(
    hub: Hub, http: httpx.AsyncClient, tmp_path: Path, files: Path
) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    record = 'print(\'{"type":"RECORD","stream":"s","record":{"id":"x1","v":1}}\', flush=True)'
    crash = script(
        tmp_path, "crash", f"{record}\nprint('Error: bad config', file=sys.stderr)\nsys.exit(3)"
    )
    hang = script(
        tmp_path,
        "hang",
        f"open('{pids}/' + str(os.getpid()), 'w').close()\n"
        "if os.fork() == 0:\n    time.sleep(600)\ntime.sleep(600)",
    )
    garbage = script(tmp_path, "garbage", "print('hello, I am not Singer')")
    for name, executable in [("crash", crash), ("hang", hang), ("garbage", garbage)]:
        await register(http, fake_tap(name, executable))
    # A good tap beside them keeps running: the scheduler is not stuck.
    write_jsonl(files / "a.jsonl", ROWS, 1_700_000_000)
    await register(http, jsonl_tap(files, interval_secs=0.2))

    crashed = await tap_until(http, "crash", lambda t: t["consecutive_failures"] >= 2)
    assert crashed["last_error"] == "the tap exited with status 3: Error: bad config"
    # What it wrote before crashing is published (applied once: later runs repeat it).
    assert crashed["records"] + crashed["duplicates"] == 1
    assert (await entity(http, "lab/x1"))["properties"] == {"id": "x1", "v": 1}
    # Backed off: after 2 failures the next run waits 0.2 × 2² s.
    failures = crashed["consecutive_failures"]
    gap = _ms(crashed["next_run"]) - _ms(crashed["last_run"])
    assert gap >= 200 * 2**failures - 50, crashed

    hung = await tap_until(http, "hang", lambda t: t["failures"] >= 1)
    assert hung["last_error"] == "the tap wrote nothing for 1 s (idle timeout)"
    killed = [int(p.name) for p in pids.iterdir()]
    assert killed and not any(alive(pid) for pid in killed)  # its child too (the group)

    bad = await tap_until(http, "garbage", lambda t: t["failures"] >= 1)
    assert bad["last_error"] == (
        "line 1 of the tap's output is not a Singer message (not JSON): 'hello, I am not Singer'"
    )
    good = await tap_until(http, "orders", lambda t: t["runs"] >= 3)
    assert good["last_error"] is None and good["records_total"] == 3
    listed = (await http.get("/api/connectors")).json()["connectors"]
    assert {c["name"]: c["status"] for c in listed if c.get("kind") == "singer"} == {
        "crash": "error",
        "garbage": "error",
        "hang": "error",
        "orders": "configured",
    }


async def test_tap_jsonl_with_a_bad_config_and_a_missing_executable(
    hub: Hub, http: httpx.AsyncClient, files: Path
) -> None:
    await register(http, jsonl_tap(files, name="nopath", config={"path": 5}))
    failed = await tap_until(http, "nopath", lambda t: t["failures"] >= 1)
    assert failed["last_error"].startswith("the tap exited with status 1"), failed
    await register(http, jsonl_tap(files, name="wrong", tap="tap-nothere"))
    wrong = await tap_until(http, "wrong", lambda t: t["failures"] >= 1)
    assert wrong["last_error"] == (
        f"'{TAP_JSONL}' installed no executable 'tap-nothere' (it has: tap-jsonl)"
    )


async def test_run_timeout_and_hub_shutdown_kill_the_tap(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    # Chatty but endless: never idle, so only the run timeout stops it.
    chatty = script(
        tmp_path,
        "chatty",
        f"open('{pids}/' + str(os.getpid()), 'w').close()\n"
        "while True:\n"
        '    print(\'{"type":"STATE","value":{"n":1}}\', flush=True)\n'
        "    time.sleep(0.05)",
    )
    async with running_hub(settings, store) as hub, _client(hub) as http:
        await register(http, fake_tap("chatty", chatty, timeout_secs=1))
        status = await tap_until(http, "chatty", lambda t: t["failures"] >= 1)
        assert status["last_error"] == "the run did not finish within 1 s (run timeout)"
        # The next run starts; the hub stops while it runs.
        await tap_until(http, "chatty", lambda t: t["state"] == "running")
        await until(lambda: _count(pids, 2))
    for pid in (int(p.name) for p in pids.iterdir()):
        assert not alive(pid), pid


async def _count(folder: Path, n: int) -> bool:
    return len(list(folder.iterdir())) >= n  # noqa: ASYNC240 (a tiny local folder)


def _ms(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000


async def test_install_failure_is_reported(tmp_path: Path) -> None:
    from hub.errors import Broken

    with pytest.raises(Broken, match="pip install ./no-such-dir failed"):
        await install_tap(tmp_path / "taps", "./no-such-dir", time_limit=timeout(60))


# ---------------------------------------------------------------------- flux connectors


async def _a_good_and_a_broken_tap_ran(
    http: httpx.AsyncClient, files: Path, tmp_path: Path
) -> dict[str, Any]:
    """Taps ``orders`` (reads a.jsonl) and ``broken`` (exits 2 with an error), each run
    once; ``orders`` as the API then shows it."""
    write_jsonl(files / "a.jsonl", ROWS, 1_700_000_000)
    await register(http, jsonl_tap(files, interval_secs=60))
    crash = script(
        tmp_path, "crash", "print('Error: no such account', file=sys.stderr)\nsys.exit(2)"
    )
    await register(http, fake_tap("broken", crash, interval_secs=60))
    ran = await tap_until(http, "orders", lambda t: t["runs"] >= 1)
    await tap_until(http, "broken", lambda t: t["runs"] >= 1)
    return ran


async def test_flux_connectors_shows_the_taps_status_fields(
    hub: Hub, http: httpx.AsyncClient, files: Path, tmp_path: Path
) -> None:
    ran = await _a_good_and_a_broken_tap_ran(http, files, tmp_path)
    out = io.StringIO()
    context = Context(f"http://127.0.0.1:{hub.port}", None, None, json_output=False, out=out)
    # The verb is a blocking client: off the loop that runs the hub.
    await asyncio.to_thread(run_verb, context, "connectors", argparse.Namespace())
    lines = {line.split()[0]: line for line in out.getvalue().splitlines()}
    assert lines["NAME"].split() == [
        "NAME",
        "KIND",
        "STATUS",
        "LAST",
        "RUN",
        "RECORDS",
        "NEXT",
        "RUN",
        "LAST",
        "ERROR",
    ]
    assert lines["orders"].split() == [
        "orders",
        "singer",
        "configured",
        ran["last_run"],
        "3/3",
        ran["next_run"],
    ]
    assert lines["broken"].split()[1:3] == ["singer", "error"]
    assert lines["broken"].endswith("the tap exited with status 2: Error: no such account")
    assert lines["github"].split()[:3] == ["github", "builtin", "not_configured"]


async def test_dashboard_shows_the_taps_status_fields(
    hub: Hub, http: httpx.AsyncClient, files: Path, tmp_path: Path, devtools: DevTools
) -> None:
    await _a_good_and_a_broken_tap_ran(http, files, tmp_path)
    await devtools.send("Page.navigate", {"url": f"http://127.0.0.1:{hub.port}/"})
    row = (
        "JSON.stringify([...document.querySelectorAll('#connectors-table tbody tr')]"
        ".map((tr) => [...tr.children].map((td) => td.textContent)))"
    )
    shown: list[list[str]] = []

    async def listed() -> bool:
        shown[:] = json.loads(await devtools.evaluate(row) or "[]")
        return len(shown) >= 2

    try:
        await until(listed, 15)
    except TimeoutError:
        raise AssertionError(f"the page shows {shown}; errors {devtools.page_errors()}") from None
    by_name = {cells[0]: cells for cells in shown}
    name, kind, status, last_run, records, next_run, error = by_name["orders"]
    assert (kind, status, records, error) == ("singer", "configured", "3 / 3", "")
    assert last_run and next_run
    assert by_name["broken"][2] == "error"
    assert by_name["broken"][6] == "the tap exited with status 2: Error: no such account"
    assert by_name["github"][1:3] == ["builtin", "not_configured"]
    assert devtools.page_errors() == []


# ---------------------------------------------------------------------- docs/connectors.md


async def test_the_three_lines_of_docs_connectors_md_add_a_tap(
    hub: Hub, http: httpx.AsyncClient, files: Path
) -> None:
    [block] = [
        b
        for b in doc_blocks()
        if b.path == "docs/connectors.md"
        and b.first_line.startswith("curl -s localhost:3000/api/connectors/singer")
    ]
    assert len(block.text.strip().splitlines()) == 3
    write_jsonl(files / "orders.jsonl", [{"id": 1, "total": 4.5}], 1_700_000_000)
    command = block.text.replace("localhost:3000", f"127.0.0.1:{hub.port}").replace(
        "/srv/orders", str(files)
    )
    shell = await asyncio.create_subprocess_exec(
        "bash", "-c", command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(shell.communicate(), timeout(30))
    assert shell.returncode == 0, err
    assert json.loads(out) == {"name": "orders"}
    status = await tap_until(http, "orders", lambda t: t["runs"] >= 1)
    assert status["last_error"] is None and status["interval_secs"] == 300
    assert (await entity(http, "shop/order-1"))["properties"] == {"id": 1, "total": 4.5}


# ---------------------------------------------------------------------- mapping and bookmarks


async def bookmark_of(store: Store, name: str) -> Any:
    saved = await store.client.get(store.keys.connector_tap_state(name))
    assert isinstance(saved, bytes), saved
    return json.loads(saved)


def singer_lines(*messages: dict[str, Any]) -> str:
    """Python lines printing Singer messages."""
    return "".join(f"print({json.dumps(json.dumps(m))}, flush=True)\n" for m in messages)


async def test_mapping_refusals_skipped_streams_and_bookmark_after_applied_records(
    hub: Hub, http: httpx.AsyncClient, tmp_path: Path, store: Store
) -> None:
    schema = {"type": "SCHEMA", "stream": "users", "schema": {}, "key_properties": ["org", "id"]}
    body = singer_lines(
        schema,
        {"type": "RECORD", "stream": "users", "record": {"org": "a", "id": 1, "n": "x"}},
        {"type": "RECORD", "stream": "users", "record": {"org": "a", "n": "no id"}},
        {"type": "RECORD", "stream": "users", "record": {"org": "b", "id": 2, "big": "y" * 2000}},
        {"type": "RECORD", "stream": "logs", "record": {"id": 9}},  # not mapped: skipped
        {"type": "ACTIVATE_VERSION", "stream": "users", "version": 1},
        {"type": "STATE", "value": {"users": 1}},
    )
    # After its STATE, the tap hangs: the run fails, the bookmark stays saved.
    tap = script(tmp_path, "tap-users", body + "time.sleep(600)")
    await register(http, {**fake_tap("users", tap), "streams": {"users": {}}})
    status = await tap_until(http, "users", lambda t: t["failures"] >= 1)
    assert status["last_error"] == "the tap wrote nothing for 1 s (idle timeout)"
    # The default entity id: <namespace>/<stream>/<key values>.
    assert (await entity(http, "lab/users/a/1"))["properties"] == {"org": "a", "id": 1, "n": "x"}
    assert (status["records"], status["rejected"]) == (1, 2)
    assert (await http.get("/api/state/entities/lab%2Fusers%2Fb%2F2")).status_code == 404
    assert await bookmark_of(store, "users") == {"users": 1}


async def test_a_rejected_record_is_named_and_does_not_block_the_bookmark(
    hub: Hub, http: httpx.AsyncClient, tmp_path: Path, store: Store
) -> None:
    body = singer_lines(
        {"type": "RECORD", "stream": "s", "record": {"id": "ok", "v": 1}},
        {"type": "RECORD", "stream": "s", "record": {"v": 2}},
        {"type": "STATE", "value": {"at": 2}},
    )
    tap = script(tmp_path, "tap-s", body)
    await register(http, {**fake_tap("partial", tap), "interval_secs": 60})
    status = await tap_until(http, "partial", lambda t: t["runs"] >= 1)
    assert status["last_error"] == (
        "a record of stream 's': the record has no field 'id' for the entity_id template"
    )
    assert (status["records"], status["rejected"], status["state"]) == (1, 1, "error")
    assert await bookmark_of(store, "partial") == {"at": 2}


async def test_secrets_reach_the_tap_but_not_its_error(
    hub: Hub, http: httpx.AsyncClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tap = script(
        tmp_path,
        "tap-leaky",
        "import json\n"
        "config = json.load(open(sys.argv[sys.argv.index('--config') + 1]))\n"
        "print('login failed for', config['user'], 'with', config['password'], file=sys.stderr)\n"
        "sys.exit(1)",
    )
    body = {
        **fake_tap("leaky", tap),
        "config": {"user": "ann"},
        "secrets": {"password": "hunter22"},
    }
    await register(http, body)
    status = await tap_until(http, "leaky", lambda t: t["failures"] >= 1)
    assert status["last_error"] == "the tap exited with status 1: login failed for ann with ***"
    listed = await http.get("/api/connectors/singer")
    assert "hunter22" not in listed.text and "hunter22" not in caplog.text


async def test_deleting_a_running_tap_kills_it(
    hub: Hub, http: httpx.AsyncClient, tmp_path: Path, store: Store
) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    hang = script(
        tmp_path, "hang", f"open('{pids}/' + str(os.getpid()), 'w').close()\ntime.sleep(600)"
    )
    await register(http, fake_tap("doomed", hang, idle_timeout_secs=60))
    await tap_until(http, "doomed", lambda t: t["state"] == "running")
    await until(lambda: _count(pids, 1))
    assert (await http.delete("/api/connectors/singer/doomed")).status_code == 204
    [pid] = [int(p.name) for p in pids.iterdir()]

    async def dead() -> bool:
        return not alive(pid)

    await until(dead, 5)
    # Nothing of it is left in Redis: no status was written after the delete.
    assert await store.client.exists(store.keys.connector_status("tap:doomed")) == 0


async def test_a_last_line_without_its_newline_is_read(
    hub: Hub, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    record = json.dumps({"type": "RECORD", "stream": "s", "record": {"id": "last"}})
    tap = script(tmp_path, "tap-terse", f"sys.stdout.write({record!r})")
    await register(http, {**fake_tap("terse", tap), "interval_secs": 60})
    status = await tap_until(http, "terse", lambda t: t["runs"] >= 1)
    assert (status["last_error"], status["records"]) == (None, 1)


async def test_a_line_past_the_bound_fails_the_run(
    hub: Hub, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    record = json.dumps({"type": "RECORD", "stream": "s", "record": {"id": "first"}})
    tap = script(tmp_path, "tap-long", f"print({record!r}, flush=True)\nprint('x' * (5 << 20))")
    await register(http, {**fake_tap("long", tap), "interval_secs": 60})
    status = await tap_until(http, "long", lambda t: t["runs"] >= 1)
    assert status["last_error"] == "line 2 of the tap's output is longer than 4194304 bytes"
    assert status["records"] == 1  # what came before is applied


async def test_two_hubs_never_run_one_tap_at_once(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    # Each run lasts 1 s, longer than a lease (5 ticks of 0.1 s): the holder renews it.
    tap = script(
        tmp_path,
        "tap-slow",
        f"log = open('{log}', 'a')\n"
        "log.write(f'start {time.time()}\\n'); log.flush()\n"
        "time.sleep(1)\n"
        'print(\'{"type": "STATE", "value": {}}\', flush=True)\n'
        "log.write(f'end {time.time()}\\n'); log.flush()",
    )
    async with (
        running_hub(settings, store) as a,
        running_hub(settings, store) as b,
        _client(a) as http,
        _client(b) as other,
    ):
        await register(
            http, {**fake_tap("slow", tap), "interval_secs": 0.2, "idle_timeout_secs": 5}
        )
        await tap_until(other, "slow", lambda t: t["runs"] >= 3, wait=30)
    events = [line.split() for line in log.read_text().splitlines()]
    kinds = [kind for kind, _ in events]
    # start, end, start, end...: never two runs at once, whichever hub ran them.
    assert kinds[: len(kinds) // 2 * 2] == ["start", "end"] * (len(kinds) // 2), kinds


async def test_a_failed_install_is_the_taps_status(
    hub: Hub, http: httpx.AsyncClient, tmp_path: Path, taps_cache: Path
) -> None:
    missing = str(tmp_path / "no-such-package")
    await register(http, jsonl_tap(tmp_path, name="uninstallable", pip=missing, interval_secs=60))
    status = await tap_until(http, "uninstallable", lambda t: t["failures"] >= 1, wait=60)
    assert status["last_error"].startswith(f"pip install {missing} failed (exit status 1): ")
    assert status["state"] == "error"
    # The half-made virtualenv (no .installed marker: it would be redone) is not kept
    # in the shared cache.
    shutil.rmtree(venv_dir(taps_cache, missing))


async def test_an_unwritable_data_directory_is_the_taps_status(
    store: Store, key_prefix: str, tmp_path: Path
) -> None:
    data = tmp_path / "broken-data"
    data.mkdir()
    (data / "taps").write_text("a file where the taps' folder should be")
    settings = make_settings(
        key_prefix,
        connectors={"min_poll_interval": 0.1},
        redis={"data_dir": str(data)},
    )
    async with running_hub(settings, store) as hub, _client(hub) as http:
        await register(http, jsonl_tap(tmp_path, name="nowhere", interval_secs=0.2))
        status = await tap_until(http, "nowhere", lambda t: t["consecutive_failures"] >= 2)
        assert status["last_error"].startswith("File exists: "), status
        # Backed off like any failure, not retried every tick.
        assert _ms(status["next_run"]) - _ms(status["last_run"]) >= 800 - 50
