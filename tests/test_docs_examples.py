"""Every example of the README files and docs/, executed as a user copy-pastes it.

:data:`ELSEWHERE` names the blocks run by another test (which reads them from the same
file); every other block is run here, by the test of :data:`HERE` that names it.
``test_every_example_is_accounted_for`` fails on a block that is in neither — an
example added to the docs needs a test before it lands — and on a claim that is no
longer true (a named test that does not read the file).

Examples address ``localhost:3000``; here that becomes the test hub's address, and
nothing else of a block changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from hub.app import Hub
from hub.wire.frames import CLIENT_FRAMES

from .browser import DevTools
from .conftest import timeout
from .doc_blocks import ROOT, Block, addressed, doc_blocks, json_values, like
from .native_client import Native, event, rest_publish
from .processes import free_port, process_group, tools_env, until_ready

#: Blocks another test executes: (file, first line) -> (that test's file, what it does).
#: The named file must mention the documentation file it reads.
ELSEWHERE: dict[tuple[str, str], tuple[str, str]] = {
    (
        "README.md",
        "python3 -m venv .venv && . .venv/bin/activate && pip install . && flux serve",
    ): (".ci/run", "installs the project in a fresh venv and runs it until /readyz answers"),
    (
        "README.md",
        'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[dev]" && pytest',
    ): (".ci/run", "is this command (in a fresh venv), plus lint, types and coverage"),
    ("README.md", "# worker.py: claims every open task, once, even when several workers race."): (
        "tests/test_readme_python.py",
        "runs worker.py and planner.py as two processes",
    ),
    ("README.md", "# planner.py: posts a task and waits until a worker has it."): (
        "tests/test_readme_python.py",
        "runs worker.py and planner.py as two processes",
    ),
    ("clients/python/README.md", "import asyncio"): (
        "tests/test_readme_python.py",
        "runs the example to its end and checks what it prints",
    ),
    ("deploy/README.md", "yamllint --strict ."): (
        "tests/test_deploy_configs.py",
        "runs the four commands from the repository root (and shows each tool a broken copy)",
    ),
    ("deploy/README.md", 'nginx -t -p "$(mktemp -d)" -c "$PWD/deploy/nginx/standalone.conf"'): (
        "tests/test_deploy_configs.py",
        "runs it, then nginx -t of both shipped configs as an unprivileged user",
    ),
    ("deploy/README.md", "root=$(mktemp -d)"): (
        "tests/test_deploy_configs.py",
        "runs it: verify silent, the sandbox scores 3.0; a broken copy of the unit is reported",
    ),
    ("docs/scaling.md", "FLUX_SHUTDOWN_DRAIN_SECONDS=5 flux serve --workers auto"): (
        "tests/test_workers.py",
        "runs it as written: one worker per core serve, 503 while draining, a second SIGTERM",
    ),
    ("docs/scaling.md", "FLUX_PARTITIONS=16 flux serve --redis redis://10.0.0.11:6379"): (
        "tests/test_cluster.py",
        "runs it as written against a local Redis Cluster: it serves, publishes, stops",
    ),
    ("docs/api.md", "curl -s localhost:3000/openapi.json | python -m json.tool > openapi.json"): (
        "tests/test_openapi.py",
        "runs the sh blocks of docs/api.md against a live hub",
    ),
    ("docs/api.md", "curl -s localhost:3000/openapi.json | python -c '"): (
        "tests/test_openapi.py",
        "runs the sh blocks of docs/api.md against a live hub",
    ),
    ("docs/api.md", "st run http://localhost:3000/openapi.json \\"): (
        "tests/test_openapi_live.py",
        "runs schemathesis with these arguments, in both auth modes",
    ),
    (
        "docs/connectors.md",
        "curl -s localhost:3000/api/connectors/singer -H 'content-type: application/json' -d "
        """'{"name": "orders", "tap": "tap-jsonl", "pip": "tap-jsonl==0.3.1", "namespace": "shop",""",
    ): (
        "tests/test_connectors_singer.py",
        "runs the three lines against a hub, with the real tap-jsonl, and checks the entity",
    ),
    (
        "docs/connectors.md",
        "curl -s localhost:3000/api/connectors/github/token -H 'content-type: application/json' \\",
    ): (
        "tests/test_connectors_github_hub.py",
        "runs it against a hub polling a local GitHub that replays recorded answers",
    ),
    ("docs/connectors.md", '{"success":true}'): (
        "tests/test_connectors_github_hub.py",
        "compares what the GitHub setup example prints with this block",
    ),
    ("clients/js/README.md", "flux serve --port 3000 &"): (
        "tests/test_js_client.py",
        "runs what `npm test` runs (node --test test/) against a hub, with FLUX_TEST_URL",
    ),
    (
        "docs/presence.md",
        "curl -s localhost:3000/api/events -H 'content-type: application/json' -d '{",
    ): (
        "tests/test_presence.py",
        "runs the beat, then checks the entity's lease",
    ),
    (
        "docs/presence.md",
        'flux publish presence agent-7 crew/agent-7 \'{"status": "online"}\' --ttl 10   # one beat',
    ): (
        "tests/test_presence.py",
        "runs both lines: the lease, then the heartbeat until Ctrl-C deletes the entity",
    ),
    ("docs/presence.md", "curl -s localhost:3000/api/state/entities/crew%2Fagent-7"): (
        "tests/test_presence.py",
        "runs it after a beat and matches what it prints with the comment: expiresAt is the lease's",
    ),
    ("docs/presence.md", "import asyncio"): (
        "tests/test_presence.py",
        "runs the agent (to its end: entity deleted) and the observer (a death, a departure)",
    ),
    ("docs/presence.md", "from flux_client import SyncFluxClient"): (
        "tests/test_presence.py",
        "runs it and checks the entity's history: online, busy, deleted",
    ),
    ("docs/mcp.md", "{"): (
        "tests/test_mcp_docs.py",
        "uses both MCP client configurations as written, with the SDK's stdio and HTTP clients",
    ),
    (
        "docs/mcp.md",
        "# claim.py NAME: claims one open crew task with compare-and-set, waiting for one if none.",
    ): ("tests/test_mcp_docs.py", "runs two claim.py agents racing for two tasks"),
    ("docs/sse.md", "curl -N 'localhost:3000/api/stream?namespaces=crew'"): (
        "tests/test_sse_docs.py",
        "runs it with real curl and compares what it prints with the next block",
    ),
    ("docs/sse.md", "retry: 2000"): (
        "tests/test_sse_docs.py",
        "compares what the first curl command prints (a claim made meanwhile) with it",
    ),
    (
        "docs/sse.md",
        "curl -N -H \"Last-Event-ID: $LAST_ID\" 'localhost:3000/api/stream?namespaces=crew'",
    ): (
        "tests/test_sse_docs.py",
        "runs it with the id the first command printed: the next change only, no snapshot",
    ),
    ("docs/sse.md", "<!doctype html>"): (
        "tests/test_sse_docs.py",
        "opens the page in Chromium: live, resumed after the hub closes it and after a restart",
    ),
}

_CONNECTORS = ("tests/test_docs_connectors.py", "compares it with the live hub's answer")
ELSEWHERE.update(
    {
        ("docs/connectors.md", first_line): _CONNECTORS
        for first_line in (
            '{"connectors": [',
            '{"name": "orders", "enabled": true, "status": "configured", "poll_interval_seconds": 300,',
            '{"name": "github", "enabled": true, "status": "configured", "poll_interval_seconds": 300,',
            '{"name": "weather", "url": "https://api.example.com/now", "poll_interval_secs": 60,',
            '{"source_id": "0193…", "name": "weather", "url": "https://api.example.com/now",',
            "NAME      KIND     STATUS          LAST RUN                  RECORDS  NEXT RUN                  LAST ERROR",
        )
    }
)

#: Blocks that are not commands to run, and why.
NOT_EXAMPLES: dict[tuple[str, str], str] = {
    (
        "docs/connectors.md",
        "<auth_url>?client_id=…&redirect_uri=<base>/api/connectors/<n>/oauth/callback&scope=<space-joined>&state=<uuid4>&response_type=code",
    ): "the form of the redirect (tests/test_connectors_oauth.py checks each part of it)",
    (
        "docs/architecture.md",
        "             hub/app.py  the composition root: builds every component, runs their loops",
    ): "a diagram of the modules (tests/test_architecture.py checks the layering it draws)",
}

#: Blocks run by a test of this module: (file, first line) -> the test's name.
HERE: dict[tuple[str, str], str] = {
    ("README.md", "# publish an event (timestamp may be omitted: the hub's time is used)"): (
        "test_readme_first_session"
    ),
    ("README.md", "flux publish sensors agent-1 matt/sensor-01 '{\"temp\": 22}'"): (
        "test_readme_flux_commands"
    ),
    ("README.md", "# planner: post a task"): "test_readme_shell_agents",
    (
        "README.md",
        "flux serve --port 3000                                   # owns the embedded Redis",
    ): ("test_readme_two_hubs"),
    (
        "README.md",
        "flux replay                      # the embedded Redis of ./flux-data (or --data-dir DIR)",
    ): ("test_readme_replay"),
    (
        "clients/js/README.md",
        "cd clients/js && npm install          # only for Node 20 (ws) and the tests",
    ): ("test_js_readme_node_example"),
    (
        "clients/js/README.md",
        "import WebSocket from 'ws';           // Node 20 only; Node >= 22: leave it out",
    ): ("test_js_readme_node_example"),
    ("README.md", "<!doctype html>"): "test_readme_browser_agents",
    ("README.md", "curl -s localhost:3000/api/events -H 'content-type: application/json' -d '{"): (
        "test_readme_browser_agents"
    ),
    ("clients/js/README.md", "<!doctype html>"): "test_js_readme_page",
    ("docs/tenancy.md", '{"id": "flux-core/directory", "properties": {'): (
        "test_tenancy_directory_example"
    ),
}


def _key(block: Block) -> tuple[str, str]:
    return (block.path, block.first_line)


def _protocol_frames(block: Block) -> bool:
    return block.path == "docs/protocol.md" and block.lang == "json"


def _bench_command(block: Block) -> bool:
    return block.path == "bench/README.md"


def test_every_example_is_accounted_for() -> None:
    names = {name for name in globals() if name.startswith("test_")}
    unaccounted = []
    for block in doc_blocks():
        key = _key(block)
        if key in ELSEWHERE:
            runner, _ = ELSEWHERE[key]
            source = (ROOT / runner).read_text(encoding="utf-8")
            assert Path(block.path).name in source, f"{runner} does not read {block.path}"
        elif key in HERE:
            assert HERE[key] in names, f"{block}: no test {HERE[key]} here"
        elif not (
            key in NOT_EXAMPLES
            or _protocol_frames(block)
            or _bench_command(block)
            or block.first_line.startswith("→ ")  # protocol.md's example session
        ):
            unaccounted.append(str(block))
    assert not unaccounted, "examples no test runs:\n" + "\n".join(unaccounted)


def _blocks(path: str, first_line: str = "") -> list[Block]:
    found = [b for b in doc_blocks() if b.path == path and b.first_line.startswith(first_line)]
    assert found, f"no block of {path} starts {first_line!r}"
    return found


def _block(path: str, first_line: str) -> str:
    return _blocks(path, first_line)[0].text


def _shell_env(base_url: str) -> dict[str, str]:
    """A user's shell: the project's ``flux`` and ``python3`` on PATH, FLUX_URL set."""
    return tools_env(FLUX_URL=base_url, FLUX_LOG_LEVEL="warning")


async def _sh(script: str, env: dict[str, str], cwd: Path | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        script,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout(60))
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _background(
    script: str, env: dict[str, str], cwd: Path | None = None
) -> contextlib.AbstractAsyncContextManager[asyncio.subprocess.Process]:
    """A shell script running in its own process group, stopped (all of it) at the end."""
    return process_group("bash", "-c", script, env=env, cwd=cwd, grace=20)


async def _line_with(process: asyncio.subprocess.Process, wanted: str, wait: float) -> list[str]:
    """Lines of the process's stdout up to the first containing ``wanted``."""
    assert process.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(timeout(wait)):
        while True:
            raw = await process.stdout.readline()
            if not raw:
                assert process.stderr is not None
                err = (await process.stderr.read()).decode()
                raise AssertionError(f"ended before {wanted!r}: {lines} {err}")
            lines.append(raw.decode().rstrip("\n"))
            if wanted in lines[-1]:
                return lines


# ------------------------------------------------------------------------ README.md


async def test_readme_first_session(base_url: str) -> None:
    """The curl session: each ``# {…}`` comment is what the command before it prints."""
    block = _block("README.md", "# publish an event")
    status, out, err = await _sh(addressed(block, base_url), _shell_env(base_url))
    assert status == 0, err
    # curl -s prints each body without a newline: split the output into its JSON values.
    bodies = [json.dumps(value, separators=(",", ":")) for value in json_values(out)]
    expected = [line.removeprefix("# ") for line in block.splitlines() if line.startswith("# {")]
    assert len(bodies) == 5, out  # publish, get, list, history, delete
    for pattern, body in zip(expected, bodies, strict=False):
        assert like(pattern, body), (pattern, body)
    assert not any('"error"' in body for body in bodies), out


async def test_readme_flux_commands(base_url: str) -> None:
    """``flux publish``, ``get``, ``watch`` (piped: JSON lines) and ``--help``, line by line."""
    lines = _block("README.md", "flux publish sensors").splitlines()
    env = _shell_env(base_url)
    for line in lines:
        command = line.split("  #")[0].strip()
        if command.startswith("flux watch"):
            async with _background(command, env) as watch:
                seen = await _line_with(watch, "matt/sensor-01", 20)
            assert json.loads(seen[-1])["properties"]["temp"] == 22
            continue
        status, out, err = await _sh(command, env)
        assert status == 0, (command, err)
        if command.startswith("flux get"):
            assert json.loads(out)["properties"] == {"temp": 22}
        if command == "flux --help":
            assert "publish" in out and "watch" in out


async def test_readme_shell_agents(base_url: str) -> None:
    """The planner line and worker.sh, pasted as one block: the worker claims the task."""
    script = _block("README.md", "# planner: post a task")
    async with _background(script, _shell_env(base_url)) as shell:
        await _line_with(shell, "claimed crew/task-2", 30)
    async with httpx.AsyncClient(base_url=base_url) as http:
        entity = (await http.get("/api/state/entities/crew%2Ftask-2")).json()
    assert entity["properties"] == {"state": "claimed", "owner": "worker-sh"}


async def test_readme_two_hubs(tmp_path: Path) -> None:
    """Two ``flux serve`` on one embedded Redis: a write on one is read on the other."""
    first, second = free_port(), free_port()
    lines = [
        line.split("  #")[0].strip()
        for line in _block("README.md", "flux serve --port 3000").splitlines()
    ]
    lines = [
        line.replace("--port 3001", f"--port {second}").replace("--port 3000", f"--port {first}")
        for line in lines
    ]
    env = {**_shell_env(""), "FLUX_HOST": "127.0.0.1"}
    async with contextlib.AsyncExitStack() as stack:
        for line, port in zip(lines, (first, second), strict=True):
            await stack.enter_async_context(_background(line, env, tmp_path))
            await until_ready(f"http://127.0.0.1:{port}", 60)
        async with httpx.AsyncClient() as http:
            published = await http.post(
                f"http://127.0.0.1:{second}/api/events",
                json={
                    "stream": "s",
                    "source": "doc",
                    "payload": {"entity_id": "two/hubs", "properties": {"on": True}},
                },
            )
            assert published.status_code == 200, published.text
            read = await http.get(f"http://127.0.0.1:{first}/api/state/entities/two%2Fhubs")
            assert read.json()["properties"] == {"on": True}


async def test_readme_replay(redis_url: str, hub: Hub, base_url: str, tmp_path: Path) -> None:
    """``flux replay --redis URL --json`` on a live hub's Redis; ``flux replay`` alone on a
    data directory of ``flux serve``'s."""
    local, external = _block("README.md", "flux replay").splitlines()
    async with httpx.AsyncClient(base_url=base_url) as http:
        await rest_publish(http, "r/1", {"n": 1}, source="doc")
    env = {**_shell_env(base_url), "FLUX_KEY_PREFIX": hub.settings.redis.key_prefix}
    command = external.split("  #")[0].strip().replace("URL", redis_url)
    status, out, err = await _sh(command, env)
    assert status == 0, err
    assert json.loads(out)["status"] == 0, out
    # `flux replay` in the directory where `flux serve` ran (./flux-data), once it stopped.
    port = free_port()
    async with _background(f"flux serve --host 127.0.0.1 --port {port}", env, tmp_path):
        await until_ready(f"http://127.0.0.1:{port}", 60)
    status, out, err = await _sh(local.split("  #")[0].strip(), env, tmp_path)
    assert status == 0, err


# ------------------------------------------------------------------ clients/js/README.md


async def test_js_readme_node_example(base_url: str, tmp_path: Path) -> None:
    """The Node example, next to a copy of the module, with the packages `npm install`
    put in clients/js: it publishes, claims, and prints the deltas it then sees."""
    js = ROOT / "clients" / "js"
    if not (js / "node_modules" / "ws").is_dir():
        pytest.skip("clients/js has no node_modules: run `npm ci` there (.ci/run does)")
    (tmp_path / "flux-client.js").write_text((js / "flux-client.js").read_text())
    (tmp_path / "node_modules").symlink_to(js / "node_modules")
    (tmp_path / "package.json").write_text((js / "package.json").read_text())
    code = addressed(_block("clients/js/README.md", "import WebSocket from 'ws';"), base_url)
    (tmp_path / "example.mjs").write_text(code)
    async with _background("node example.mjs", _shell_env(base_url), tmp_path) as node:
        async with httpx.AsyncClient(base_url=base_url) as http:
            deadline = asyncio.get_running_loop().time() + timeout(20)
            while True:  # the example publishes crew/task-7 first, then claims it
                entity = (await http.get("/api/state/entities/crew%2Ftask-7")).json()
                if entity.get("properties", {}).get("owner") == "worker-3":
                    break
                assert asyncio.get_running_loop().time() < deadline, entity
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # the subscription is live (its snapshot is read)
            await rest_publish(http, "crew/task-8", {"state": "open"}, source="doc")
            seen = await _line_with(node, "crew/task-8", 20)
    assert "state: 'open'" in seen[-1]


# ------------------------------------------------------------------------ docs/tenancy.md


async def test_tenancy_directory_example(base_url: str) -> None:
    """The directory entity has the shape docs/tenancy.md shows."""
    (doc,) = json_values(_block("docs/tenancy.md", '{"id": "flux-core/directory"'))
    async with httpx.AsyncClient(base_url=base_url) as http:
        await rest_publish(http, "crew/a", {"n": 1}, source="doc")
        deadline = asyncio.get_running_loop().time() + timeout(20)
        while True:
            reply = await http.get("/api/state/entities/flux-core%2Fdirectory")
            if reply.status_code == 200 and "crew" in reply.json()["properties"]["namespaces"]:
                break
            assert asyncio.get_running_loop().time() < deadline, reply.text
            await asyncio.sleep(0.2)
    real = reply.json()
    assert _shape_problems(doc["properties"], real["properties"]) == []


# ------------------------------------------------------------------------ docs/protocol.md

CLIENT_TYPES = {"publish", "subscribe", "unsubscribe", "get", "list", "auth"}


def _protocol_examples() -> list[dict[str, Any]]:
    frames = []
    for block in doc_blocks():
        if _protocol_frames(block):
            frames += json_values(block.text)
    return frames


def test_protocol_client_frame_examples_are_accepted() -> None:
    clients = [frame for frame in _protocol_examples() if frame.get("type") in CLIENT_TYPES]
    assert {frame["type"] for frame in clients} >= CLIENT_TYPES - {"auth"}
    for frame in clients:
        try:
            CLIENT_FRAMES.validate_python(frame)
        except ValidationError as exc:  # pragma: no cover - the failure message
            raise AssertionError(f"docs/protocol.md: {frame} is refused: {exc}") from exc


def _shape_problems(doc: Any, real: Any, path: str = "") -> list[str]:
    """How the hub's ``real`` value differs in shape from the documented one."""
    where = path or "frame"
    if isinstance(doc, dict):
        if not isinstance(real, dict):
            return [f"{where}: an object in the doc, {real!r} from the hub"]
        problems = []
        if set(doc) != set(real):
            problems.append(f"{where}: keys {sorted(doc)} in the doc, {sorted(real)} from the hub")
        for key in doc.keys() & real.keys():
            problems += _shape_problems(doc[key], real[key], f"{path}.{key}".lstrip("."))
        return problems
    if isinstance(doc, list):
        if not isinstance(real, list):
            return [f"{where}: a list in the doc, {real!r} from the hub"]
        return [
            problem
            for index, (d, r) in enumerate(zip(doc, real, strict=False))
            for problem in _shape_problems(d, r, f"{path}[{index}]")
        ]
    if doc is None or real is None:
        return [] if doc is real or doc is None else [f"{where}: null in the doc, {real!r}"]
    if type(doc) is not type(real):
        return [f"{where}: {doc!r} in the doc, {real!r} from the hub"]
    return []


async def _real_server_frames(ws_url: str, base_url: str) -> dict[str, list[dict[str, Any]]]:
    """One of each server frame, from a real session that mirrors the docs' examples."""
    frames: dict[str, list[dict[str, Any]]] = {}

    def keep(frame: dict[str, Any]) -> dict[str, Any]:
        frames.setdefault(frame["type"], []).append(frame)
        return frame

    client = await Native.connect(ws_url)
    try:
        keep(
            await client.request(
                {
                    "type": "subscribe",
                    "ref": 2,
                    "sub": "tasks",
                    "filter": {"prefixes": ["crew/task-"]},
                    "snapshot": True,
                },
                "subscribed",
            )
        )
        keep(await client.recv_type("snapshot"))
        keep(await client.recv_type("synced"))
        first = event("crew/task-7", state="open")
        late = {**event("crew/task-7", owner="worker-3"), "eventId": "w3-000042", "if_version": 9}
        keep(await client.request({"type": "publish", "ref": 1, "events": [first, late]}, "ack"))
        keep(await client.recv_type("delta"))  # created
        claim = {**event("crew/task-7", owner="worker-3"), "if_version": 1}
        await client.request({"type": "publish", "ref": 1, "events": [claim]}, "ack")
        keep(await client.recv_type("delta"))
        keep(
            await client.request(
                {"type": "get", "ref": 4, "ids": ["crew/task-7", "crew/task-8"]}, "entities"
            )
        )
        keep(
            await client.request(
                {"type": "subscribe", "ref": 2, "sub": "live", "filter": {"all": True}},
                "subscribed",
            )
        )
        async with httpx.AsyncClient(base_url=base_url) as http:
            await http.delete("/api/state/entities/crew%2Ftask-7")
        keep(await client.recv_type("deleted"))
        keep(
            await client.request({"type": "unsubscribe", "ref": 3, "sub": "tasks"}, "unsubscribed")
        )
        keep(await client.request({"type": "get", "ref": 9}, "error"))
        # A where subscription: an entry and a left (Value filters).
        where = {"state": "open", "load": {"lt": 5}}
        await client.publish(event("crew/task-9", state="done", load=2, zone="a"))
        subscribe = {"type": "subscribe", "sub": "open-tasks", "filter": {"namespaces": ["crew"]}}
        await client.send({**subscribe, "where": where, "snapshot": True})
        await client.recv_type("synced")
        await client.publish(event("crew/task-9", state="open"))
        # The entry (the other subscriptions' deltas of the same event may come first).
        while not (entry := await client.recv_type("delta")).get("entered"):
            pass
        keep(entry)
        await client.publish(event("crew/task-9", load=7))
        keep(await client.recv_type("left"))
        # A lease: an entity that shows its deadline, and a beat that moves it.
        await client.publish({**event("crew/agent-7", status="online"), "ttl": 10})
        listed = {"type": "list", "ref": 5, "prefix": "crew/agent-"}
        keep(await client.request(listed, "entities"))
        await client.publish({**event("crew/agent-7", status="online"), "ttl": 10})
        while (beat := await client.recv_type("delta"))["set"] or beat["id"] != "crew/agent-7":
            pass
        keep(beat)
    finally:
        await client.close()
    return frames


async def test_protocol_server_frame_examples_match_the_hub(ws_url: str, base_url: str) -> None:
    """Each server frame documented has the keys and value types the hub sends."""
    real = await _real_server_frames(ws_url, base_url)
    problems = []
    for doc in _protocol_examples():
        kind = str(doc.get("type"))
        if kind in CLIENT_TYPES or kind in ("checkpoint", "reset"):
            continue  # checkpoint/reset: tests/test_wire_replies.py serializes them as shown
        candidates = real.get(kind, [])
        assert candidates, f"the session produced no {kind!r} frame"
        if all(_shape_problems(doc, frame) for frame in candidates):
            problems.append(f"{kind}: {_shape_problems(doc, candidates[0])}")
    assert not problems, "\n".join(problems)


async def test_protocol_example_session(ws_url: str, base_url: str) -> None:
    """docs/protocol.md's example session, replayed frame by frame: the hub answers with
    frames of the same shape and the same stable values (positions and times differ)."""
    (block,) = [b for b in doc_blocks() if b.first_line.startswith("→ ")]
    steps = [
        (line[0], json.loads(line[2:]))
        for line in block.text.splitlines()
        if line.startswith(("→ ", "← "))
    ]
    async with httpx.AsyncClient(base_url=base_url) as http:
        await rest_publish(http, "crew/task-7", {"state": "open"}, source="doc", stream="crew")
        client = await Native.connect(ws_url)
        cursor = ""
        try:
            for direction, frame in steps:
                if direction == "→":
                    if "from" in frame:  # "the connection drops; the client reconnects"
                        await client.close()
                        await http.delete("/api/state/entities/crew%2Ftask-7")
                        client = await Native.connect(ws_url)
                        frame = {**frame, "from": cursor}
                    await client.send(frame)
                    continue
                real = await client.recv()
                assert _shape_problems(frame, real) == [], (frame, real)
                for stable in ("type", "sub", "ref", "id", "base", "version", "set", "done"):
                    assert real.get(stable) == frame.get(stable), (stable, frame, real)
                if real["type"] == "snapshot" and frame["entities"]:
                    assert real["entities"][0]["properties"] == frame["entities"][0]["properties"]
                cursor = real.get("position") or real.get("cursor") or cursor
        finally:
            await client.close()


# ------------------------------------------------------------------------ bench/README.md


def test_bench_readme_commands_use_flags_the_scripts_have() -> None:
    """Benchmarks run for 1-11 minutes on a quiet machine, so the suite does not run them;
    it checks that every script and flag the README shows exists (``--help``). Each
    script's ``--help`` runs once (the README shows 18 commands of 10), all at once:
    each is a Python start-up, 0.6-1.6 s of imports."""
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    flags: dict[tuple[str, ...], set[str]] = {}
    for block in doc_blocks():
        if not _bench_command(block):
            continue
        for line in block.text.splitlines():
            command = line.split("  #")[0].split(">")[0].strip().removeprefix("nohup ")
            if extras := re.fullmatch(r"pip install -e '\.\[([a-z,]+)\]'", command):
                declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                for extra in extras.group(1).split(","):
                    assert extra in declared["optional-dependencies"], extra
                continue
            if not command.startswith("python bench/"):
                continue
            script, *args = command.removeprefix("python ").split()
            subcommand = [arg for arg in args[:1] if not arg.startswith("-")]
            wanted = flags.setdefault((script, *subcommand), set())
            wanted.update(arg for arg in args if arg.startswith("--"))

    def shown(script: str, *subcommand: str) -> str:
        return subprocess.run(
            [sys.executable, str(ROOT / script), *subcommand, "--help"],
            capture_output=True,
            text=True,
            timeout=timeout(60),
            check=True,
        ).stdout

    with ThreadPoolExecutor(max_workers=4) as pool:
        helps = dict(zip(flags, pool.map(lambda key: shown(*key), flags), strict=True))
    for key, wanted in flags.items():
        for flag in sorted(wanted):
            assert flag in helps[key], f"bench/README.md: {key[0]} has no {flag}"


# ------------------------------------------------------------------ pages, in Chromium


async def _page_text(tools: DevTools, expression: str, wanted: str, wait: float) -> str:
    """Poll a page expression until its text contains ``wanted``."""
    deadline = asyncio.get_running_loop().time() + timeout(wait)
    text = ""
    while wanted not in text:
        assert asyncio.get_running_loop().time() < deadline, (wanted, text, tools.page_errors())
        await asyncio.sleep(0.1)
        text = str(await tools.evaluate(expression))
    return text


async def test_readme_browser_agents(devtools: DevTools, base_url: str, tmp_path: Path) -> None:
    """agents.html, opened as a file: a click posts a task that the page's worker claims;
    a task posted with the README's curl command is claimed too."""
    page = tmp_path / "agents.html"
    page.write_text(addressed(_block("README.md", "<!doctype html>"), base_url))
    await devtools.send("Page.navigate", {"url": page.as_uri()})
    log = "document.getElementById('log')?.textContent ?? ''"
    # The page connects both agents before it wires the button.
    deadline = asyncio.get_running_loop().time() + timeout(20)
    while not await devtools.evaluate("!!document.getElementById('post')?.onclick"):
        assert asyncio.get_running_loop().time() < deadline, devtools.page_errors()
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # the worker's subscription is live
    await devtools.evaluate("document.getElementById('post').click()")
    text = await _page_text(devtools, log, "worker-1: claimed crew/task-", 20)
    assert "planner: posted crew/task-" in text
    curl = _block("README.md", "curl -s localhost:3000/api/events")
    status, _, err = await _sh(addressed(curl, base_url), _shell_env(base_url))
    assert status == 0, err
    await _page_text(devtools, log, "worker-1: claimed crew/task-from-shell", 20)
    assert devtools.page_errors() == []


async def test_js_readme_page(devtools: DevTools, base_url: str, tmp_path: Path) -> None:
    """clients/js/README.md's page: it writes crew/task-7 and lists it, live."""
    page = tmp_path / "tasks.html"
    page.write_text(addressed(_block("clients/js/README.md", "<!doctype html>"), base_url))
    await devtools.send("Page.navigate", {"url": page.as_uri()})
    tasks = "document.getElementById('tasks')?.textContent ?? ''"
    await _page_text(devtools, tasks, 'crew/task-7: {"state":"open"}', 20)
    async with httpx.AsyncClient(base_url=base_url) as http:
        await rest_publish(http, "crew/task-7", {"state": "done"}, source="doc")
    await _page_text(devtools, tasks, 'crew/task-7: {"state":"done"}', 20)
    assert await devtools.evaluate("document.title") == "open"
    assert devtools.page_errors() == []
