"""docs/connectors.md's answers, compared with what a live hub answers.

Each JSON example of the page (the connector list, a tap's and GitHub's status, a
generic poller) is checked against the hub's own answer to the same request: the same
keys, values of the same types, and the same values where the example is not made up
(names, statuses, kinds). The ``flux connectors`` table's columns are the page's.
The examples that are commands (the GitHub setup, the three lines that add a tap) are
run by tests/test_connectors_github_hub.py and tests/test_connectors_singer.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import sys
from pathlib import Path
from typing import Any

import httpx

from hub.app import Hub
from hub.store import Store

from .conftest import make_settings, running_hub, timeout
from .doc_blocks import Block, doc_blocks, json_values
from .local_http import LocalServer, Seen, json_reply, until
from .test_cli_client import Terminal
from .test_docs_examples import _shape_problems

KEY = base64.b64encode(bytes(range(32))).decode()


def _example(first_line: str) -> Block:
    (block,) = [
        b
        for b in doc_blocks()
        if b.path == "docs/connectors.md" and b.first_line.startswith(first_line)
    ]
    return block


def _tap(folder: Path) -> str:
    """A tap: one SCHEMA, one RECORD and a STATE, as any Singer tap writes them."""
    lines = [
        {
            "type": "SCHEMA",
            "stream": "orders",
            "schema": {"properties": {"id": {"type": "integer"}}},
            "key_properties": ["id"],
        },
        {"type": "RECORD", "stream": "orders", "record": {"id": 1, "total": 9.5}},
        {"type": "STATE", "value": {"bookmarks": {"orders": {"id": 1}}}},
    ]
    path = folder / "tap-orders"
    body = "".join(f"print({json.dumps(json.dumps(line))})\n" for line in lines)
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


async def test_connectors_md_answers_are_the_hubs(
    store: Store, key_prefix: str, tmp_path: Path
) -> None:
    def github(_: Seen) -> Any:  # a GitHub that refuses every token, as in the example
        return json_reply({"message": "Bad credentials"}, 401)

    async with LocalServer(github) as upstream:
        settings = make_settings(
            key_prefix,
            connectors={
                "encryption_key": KEY,
                "min_poll_interval": 0.1,
                "github_api_url": upstream.url("/").rstrip("/"),
            },
            redis={"data_dir": str(tmp_path / "data")},
        )
        async with running_hub(settings, store) as hub:
            await _compare(hub, tmp_path)


async def _compare(hub: Hub, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{hub.port}"
    async with httpx.AsyncClient(base_url=base, timeout=timeout(30)) as http:
        stored = await http.post("/api/connectors/github/token", json={"token": "ghp_x"})
        assert stored.json() == {"success": True}

        # The list: Flux's four, by name and status, exactly as shown.
        (listed,) = json_values(_example('{"connectors": [').text)
        real = (await http.get("/api/connectors")).json()
        assert real["connectors"][:4] == listed["connectors"]

        # GitHub's status after a refused token.
        (doc,) = json_values(_example('{"name": "github", "enabled": true').text)

        async def refused() -> bool:
            status = (await http.get("/api/connectors/github")).json()
            return "last_error" in status

        await until(refused, 20)
        status = (await http.get("/api/connectors/github")).json()
        assert _shape_problems(doc, status) == [], json.dumps(status)
        assert status["last_error"] == doc["last_error"]

        # A tap's status, once it ran.
        folder = tmp_path / "tap"
        folder.mkdir()
        tap = {
            "name": "orders",
            "tap": "tap-jsonl",
            "executable": _tap(folder),
            "namespace": "shop",
            "streams": {"orders": {"entity_id": "order-{id}"}},
        }
        assert (await http.post("/api/connectors/singer", json=tap)).status_code == 201
        (doc,) = json_values(_example('{"name": "orders"').text)

        async def ran() -> bool:
            return bool((await http.get("/api/connectors/orders")).json().get("runs"))

        await until(ran, 20)
        status = (await http.get("/api/connectors/orders")).json()
        assert _shape_problems(doc, status) == []
        for key in ("name", "enabled", "status", "kind", "tap", "state"):
            assert status[key] == doc[key], key

        # `flux connectors` on a terminal: the page's columns, and its rows' kinds and
        # statuses for the connectors both show.
        (table,) = [b for b in doc_blocks() if b.path == "docs/connectors.md" and b.lang == "text"]
        shown = await _on_a_terminal([sys.executable, "-m", "hub.cli", "connectors"], base)
        assert shown[0].split() == table.text.splitlines()[0].split(), shown
        rows = {line.split()[0]: line.split()[1:3] for line in shown[1:] if line.strip()}
        for line in table.text.splitlines()[1:]:
            name, kind, status = line.split()[:3]
            if name in ("gmail", "orders"):  # (github has a token here, not on the page)
                assert rows[name] == [kind, status], (name, shown)
        assert rows["github"][0] == "builtin", shown

        # A generic poller: the registration and its answer.
        (request,) = json_values(
            _example('{"name": "weather"')
            .text.replace('"none" | "bearer" | {"api_key_header": "X-Api-Key"}', '"none"')
            .replace(', "token": "…"', "")
        )
        async with LocalServer(lambda _: json_reply({"temp": 21.5})) as weather:
            request["url"] = weather.url("/now")
            made = await http.post("/api/connectors/generic", json=request)
            assert made.status_code == 201, made.text
            (doc,) = json_values(_example('{"source_id": "0193…"').text)

            source_id = made.json()["source_id"]

            async def polled() -> bool:
                status = (await http.get(f"/api/connectors/generic/{source_id}")).json()
                return bool(status.get("polls"))

            await until(polled, 20)
            source = (await http.get(f"/api/connectors/generic/{source_id}")).json()
            listed_pollers = (await http.get("/api/connectors/generic")).json()["pollers"]
            assert [p["source_id"] for p in listed_pollers] == [source_id]
            doc["auth_type"] = "none"
            assert _shape_problems(doc, source) == [], source


async def _on_a_terminal(args: list[str], base: str) -> list[str]:
    """The lines a command prints on a terminal (a pseudo-terminal of its own)."""
    terminal = Terminal()
    await terminal.start(*args, env={"FLUX_URL": base})
    assert terminal.process is not None
    await asyncio.wait_for(terminal.process.wait(), timeout(30))
    await terminal.wait_for("orders")  # read to the end of what it wrote
    await terminal.stop()
    assert terminal.process.returncode == 0, terminal.output
    return terminal.screen().replace("\r\n", "\n").splitlines()
