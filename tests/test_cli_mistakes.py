"""The ``flux`` command's answers to a new user's obvious mistakes: one line on stderr
saying what is wrong, an exit status that is not 0, no traceback — and nothing done
that the user did not mean.

Found by walking the README as a newcomer: ``flux watch`` against a hub that is not
there drew a blank screen forever, and a traceback on a hub with private reads;
``flux publish`` acknowledged properties that were not an object (the hub skips such an
event) and created an entity with the empty id, which no verb could reach again;
``flux serve`` on a data directory it could not create, and ``serve`` or ``replay`` given
a Redis URL that is not one, printed a traceback; ``flux admin-config`` showed a
misspelt setting as if applied (the hub ignores a field it does not know); and
``flux list | head -1`` ended in a traceback (``watch``: "cannot reach the hub").
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from hub.cli import main
from hub.store import Store

from .conftest import make_settings, running_hub, timeout
from .processes import free_port
from .test_cli_client import Terminal, flux


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_watch_says_when_the_hub_cannot_be_reached(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert main(["--url", url, "watch", "*", "--wait", "0.5"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"flux watch: cannot reach the hub at {url}: no connection to ")
    assert "within 0.5 s (last attempt: " in line and url.rsplit(":", 1)[1] in line


@pytest.mark.parametrize("wait", ["-1", "soon", "inf", "nan"])
def test_watch_refuses_a_wait_that_is_not_seconds(
    wait: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["watch", "*", "--wait", wait])
    assert exited.value.code == 2
    assert "argument --wait: " in capsys.readouterr().err


async def test_watch_wait_0_waits_for_a_hub_that_starts_later(
    store: Store, key_prefix: str
) -> None:
    # The default first-connection wait shortened to 0.3 s in the watching process, so
    # that a watch still bound by it would give up before the hub is up a second later.
    port = free_port()
    program = (
        "import sys, hub.watch; hub.watch.FIRST_CONNECTION_SECONDS = 0.3; "
        "from hub.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    url = f"http://127.0.0.1:{port}"
    following = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        program,
        "--url",
        url,
        "watch",
        "--wait",
        "0",
        "*",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        await asyncio.sleep(1.5)
        assert following.returncode is None, await following.stderr.read()  # type: ignore[union-attr]
        settings = make_settings(key_prefix, gateway={"host": "127.0.0.1", "port": port})
        async with running_hub(settings, store), httpx.AsyncClient() as http:
            payload = {"entity_id": "w/late", "properties": {"up": True}}
            event = {"stream": "s", "source": "t", "payload": payload}
            reply = await http.post(f"{url}/api/events", json=event)
            assert reply.status_code == 200, reply.text
            assert following.stdout is not None
            while True:
                line = await asyncio.wait_for(following.stdout.readline(), timeout(20))
                assert line, await following.stderr.read()  # type: ignore[union-attr]
                if json.loads(line)["id"] == "w/late":
                    break
    finally:
        if following.returncode is None:
            following.kill()
        await following.wait()


async def test_watch_refused_by_private_reads_says_why(store: Store, key_prefix: str) -> None:
    gateway = {"auth_enabled": True, "admin_token": "adm", "private_reads": True}
    async with running_hub(make_settings(key_prefix, gateway=gateway), store) as hub:
        url = f"http://127.0.0.1:{hub.port}"
        for token in ({}, {"FLUX_TOKEN": "not-a-token"}):
            status, out, err = await flux(url, "watch", "crew/", env=token)
            assert (status, out) == (1, ""), err
            assert _one_line(err).startswith("flux watch: unauthorized: ")


async def test_publish_refuses_properties_that_are_not_an_object(
    base_url: str, http: httpx.AsyncClient
) -> None:
    for properties in ("[1, 2]", '"warm"', "21.5", "null"):
        status, out, err = await flux(base_url, "publish", "s", "cli", "bad/x", properties)
        assert (status, out) == (2, ""), (properties, err)
        assert _one_line(err).startswith("flux publish: PROPERTIES_JSON must be a JSON object")
    history = await http.get("/api/events", params={"entity": "bad/x"})
    assert history.json() == []  # nothing was sent


@pytest.mark.parametrize(
    "args",
    [
        ["publish", "s", "cli", "", '{"v": 1}'],
        ["heartbeat", "", '{"v": 1}', "--ttl", "5"],
        ["get", ""],
        ["delete", ""],
        ["history", ""],
    ],
    ids=lambda args: args[0],
)
async def test_verbs_refuse_an_empty_entity_id(
    base_url: str, http: httpx.AsyncClient, args: list[str]
) -> None:
    status, out, err = await flux(base_url, *args)
    assert (status, out) == (2, ""), err
    assert _one_line(err) == f"flux {args[0]}: ENTITY_ID must not be empty"
    listed = (await http.get("/api/state/entities")).json()
    assert "" not in [entity["id"] for entity in listed]


async def test_history_limit_out_of_its_range_is_refused(base_url: str) -> None:
    for limit in ("0", "501", "-3"):
        status, _, err = await flux(base_url, "history", "a/b", "--limit", limit)
        assert status == 2
        assert _one_line(err) == f"flux history: --limit must be from 1 to 500, got {limit}"


async def test_url_without_a_scheme_is_read_as_http(base_url: str) -> None:
    address = base_url.removeprefix("http://")  # 127.0.0.1:PORT, as curl takes it
    status, _, err = await flux(None, "--url", address, "publish", "s", "cli", "u/x", '{"v": 1}')
    assert status == 0, err
    status, out, err = await flux(None, "--url", address, "get", "u/x")
    assert status == 0, err
    assert json.loads(out)["properties"] == {"v": 1}


async def test_history_on_a_terminal_shows_event_times_as_rfc3339(
    base_url: str, http: httpx.AsyncClient
) -> None:
    event = {"stream": "s", "source": "cli", "timestamp": 1796601716638}
    await http.post(
        "/api/events", json={**event, "payload": {"entity_id": "h/x", "properties": {"v": 1}}}
    )
    terminal = Terminal()
    await terminal.start(
        sys.executable, "-m", "hub.cli", "history", "h/x", env={"FLUX_URL": base_url}
    )
    try:
        await terminal.wait_for("1 events, newest first")
        assert terminal.process is not None
        assert await asyncio.wait_for(terminal.process.wait(), timeout(10)) == 0
    finally:
        await terminal.stop()
    assert '2026-12-07T00:01:56.638Z  cli  {"v": 1}' in terminal.screen()
    assert "1796601716638" not in terminal.screen()


def test_serve_on_a_data_dir_it_cannot_use_says_so(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    for data_dir, why in [
        (tmp_path / "a-file", "not a directory"),
        (tmp_path / "a-file" / "below", "not a directory"),
        (Path("/proc/flux-data"), "No such file or directory"),
    ]:
        ran = subprocess.run(
            [sys.executable, "-m", "hub.cli", "serve", "--port", "0", "--data-dir", str(data_dir)],
            capture_output=True,
            text=True,
            timeout=timeout(30),
            check=False,
        )
        assert ran.returncode == 1, ran.stderr
        assert _one_line(ran.stderr) == (
            f"flux serve: cannot use {data_dir} as the data directory: {why}; "
            "choose another with --data-dir or FLUX_DATA_DIR"
        )


@pytest.mark.parametrize(
    ("args", "env", "origin"),
    [
        (["serve", "--port", "0", "--redis", "localhost:6379"], {}, "--redis"),
        (["serve", "--port", "0"], {"FLUX_REDIS_URL": "localhost:6379"}, "FLUX_REDIS_URL"),
        (["replay", "--redis", "http://localhost:6379"], {}, "--redis"),
    ],
    ids=["serve-flag", "serve-env", "replay-flag"],
)
def test_redis_url_that_is_not_one_is_named(
    args: list[str], env: dict[str, str], origin: str
) -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "hub.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=timeout(30),
        check=False,
    )
    assert ran.returncode == 2, ran.stderr
    command = args[0]
    assert _one_line(ran.stderr) == (
        f"flux {command}: {origin}: must be a redis://, rediss:// or unix:// URL"
    )


async def test_admin_config_refuses_a_setting_the_hub_does_not_have(
    base_url: str, http: httpx.AsyncClient
) -> None:
    before = (await http.get("/api/admin/config")).json()
    update = '{"rate_limit_per_namespace_per_minut": 5, "body_size_limit_single_bytes": 2048}'
    status, out, err = await flux(base_url, "admin-config", update)
    assert (status, out) == (2, ""), err
    assert _one_line(err) == (
        "flux admin-config: unknown setting rate_limit_per_namespace_per_minut; the settings "
        f"are {', '.join(before)}"
    )
    assert (await http.get("/api/admin/config")).json() == before  # nothing sent


@pytest.mark.parametrize(
    "verb",
    [["list"], ["history", "pipe/e0", "--limit", "500"], ["watch", "pipe/"]],
    ids=lambda verb: verb[0],
)
async def test_output_cut_short_by_its_reader_ends_quietly(
    base_url: str, http: httpx.AsyncClient, tmp_path: Path, verb: list[str]
) -> None:
    pad = "x" * 500  # more than a pipe's buffer in all: flux meets the closed end
    events = [
        {
            "stream": "s",
            "source": "cli",
            "payload": {
                "entity_id": f"pipe/e{n % 2 if verb[0] == 'history' else n}",
                "properties": {"n": n, "pad": pad},
            },
        }
        for n in range(300)
    ]
    assert (await http.post("/api/events/batch", json={"events": events})).status_code == 200
    # As typed in a shell: `flux list | head -1`, flux's own status and stderr kept.
    flux_command = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "hub.cli", *verb])
    script = f"{flux_command} 2>{tmp_path}/err | head -1 >/dev/null; echo ${{PIPESTATUS[0]}}"
    ran = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        env={**os.environ, "FLUX_URL": base_url},
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(ran.communicate(), timeout(30))
    assert (tmp_path / "err").read_text() == ""  # no traceback, no "cannot reach the hub"
    assert out.decode().strip() == "141"  # as a tool that SIGPIPE ended
