"""The auth matrix: every way in × every kind of credential, in public mode and again
with private reads, generated from one table (:data:`ROWS`).

docs/security.md shows the same table (:func:`render_matrix`; a test checks that the
page and the table agree). Each cell is one test: it performs the request as that
credential and compares what happened, normalized to a short outcome, with the table.

Credentials, relative to the namespace the path is about (its *owner*, ``alpha``
unless the row says otherwise):

- ``none``: no ``Authorization`` header (on a WebSocket: nor ``?token=``, nor ``auth``);
- ``malformed``: ``Authorization: Basic <the right token>`` — the right secret under a
  scheme that is not Bearer (``?token=`` empty; an ``auth`` frame carrying that text);
- ``wrong``: ``Bearer <a UUID no namespace owns>``;
- ``other``: ``Bearer <beta's token>`` (another registered namespace);
- ``right``: ``Bearer <the owner's token>``;
- ``admin``: ``Bearer $FLUX_ADMIN_TOKEN``.

Outcomes: ``<status> <tag>`` for an HTTP error (the tag names the exact message, in
:data:`MESSAGES`), ``<status>`` or ``<status> <what it saw>`` for a success; on a
WebSocket the per-event result or reply, ``sees <namespaces>`` for a subscription,
``closed <code>`` for a connection the hub refused.

Private reads are also checked beyond the table: a non-admin reader never receives an
id outside its own namespace (an outcome then says ``LEAK``). The last tests run the
whole matrix's traffic through the leak check: with every logger at DEBUG, no token
(namespace, admin, a GitHub token and a poller's token both sent to an upstream that
echoes them, a Singer tap's ``secrets`` its tap prints, the tokens sent to ``/mcp``,
``flux mcp``'s ``FLUX_TOKEN``) appears in a log line, a response body or header, a
WebSocket frame or close reason, an MCP answer, a Redis key (its SHA-256 neither), a
Redis value, ``/metrics``, or a file left by a tap's run.

Every route of the hub's live table has a row: :func:`covered_routes` resolves each
row's request (the ```METHOD /path``` in its name) through the hub's own router, and
``test_every_route_of_the_live_table_has_a_row`` fails on a route no row reaches that
:data:`EXCLUDED` does not list with its reason.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import httpx
import pytest
import websockets
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from hub.api.router import MethodNotAllowed, NotFound, Route, Router
from hub.app import Hub
from hub.store import Keys, Store
from hub.transport.server import WS_PATH

from .conftest import make_settings, running_hub, timeout
from .local_http import LocalServer, Reply, Seen, json_reply, until
from .mcp_agents import MCP_ACCEPT, mcp_initialize
from .native_client import event
from .processes import free_port

ADMIN = "admin-" + uuid.uuid4().hex
#: Looks like a namespace token; no namespace owns it.
WRONG = str(uuid.uuid4())
#: A third-party credential handed to a connector, and a poller's API token.
CONNECTOR_SECRET = "ghp_" + uuid.uuid4().hex
POLLER_SECRET = "poll-" + uuid.uuid4().hex
#: A Singer tap's ``secrets`` (its tap prints it on stderr, then fails).
TAP_SECRET = "tapsecret-" + uuid.uuid4().hex
ENCRYPTION_KEY = base64.b64encode(bytes(range(32))).decode()

MODES = ("public", "private")
CREDS = ("none", "malformed", "wrong", "other", "right", "admin")
CRED_TITLES = {
    "none": "no token",
    "malformed": "malformed",
    "wrong": "wrong token",
    "other": "other namespace's",
    "right": "right namespace's",
    "admin": "admin",
}
SECURITY_MD = Path(__file__).parent.parent / "docs" / "security.md"

#: The exact messages, by the tag outcomes use (``{ns}``: any namespace name).
MESSAGES = {
    "no-token": "Authorization token not provided",
    "bad-scheme": "Invalid authorization token format",
    "not-yours": "Token does not have permission to write to namespace '{ns}'",
    "reserved": "namespace 'flux-core' is reserved for the hub",
    "no-header": "Missing Authorization header",
    "bad-header": "Invalid Authorization format",
    "not-owner": "Token does not own namespace",
    "bad-token": "Invalid token",
    "no-read": "Token does not have permission to read namespace '{ns}'",
    "not-found": "Entity not found",
    "admin-only": "Admin token required",
    "unauthorized": "Unauthorized",
    "no-match": "the filter matches nothing under '{ns}', which is all this token may read",
    "conn-no-token": "Invalid token: Authorization token not provided",
    "conn-bad-scheme": "Invalid token: Invalid authorization token format",
    "no-oauth": (
        "OAuth not configured for connector 'github'. Set FLUX_OAUTH_GITHUB_CLIENT_ID"
        " and FLUX_OAUTH_GITHUB_CLIENT_SECRET environment variables."
    ),
    "bad-state": "Invalid or expired OAuth state (possible CSRF attack)",
    "not-available": (
        "Connector 'gmail' is not available: this hub does not fetch from Gmail (listed for"
        " compatibility with Flux; see docs/connectors.md); no credentials were stored"
    ),
    "no-credentials": "No credentials found for connector 'gmail'",
    "no-session": "Session not found",
    "auth-first": "private reads: authenticate with a namespace token first",
}
_MESSAGE_PATTERNS = [
    (tag, re.compile(re.escape(text).replace(re.escape("{ns}"), "[^']*") + "$"))
    for tag, text in MESSAGES.items()
]


def tag(message: str) -> str:
    """The tag of a known message; an unknown one as it is (so a cell shows it)."""
    for name, pattern in _MESSAGE_PATTERNS:
        if pattern.match(message):
            return name
    return repr(message)


# ---------------------------------------------------------------------- the world


@dataclass
class World:
    """One hub (one mode) and what the matrix knows about it."""

    mode: str
    hub: Hub
    store: Store
    http: httpx.AsyncClient
    ws_url: str
    #: Namespace -> its token (alpha, beta, gamma, empty, and those rows register).
    tokens: dict[str, str]
    #: Everything the hub sent to a client: (where, text), for the leak check.
    seen: list[tuple[str, str]]
    #: The source id of a generic poller registered at start.
    poller: str = ""
    #: A folder for the taps' programs.
    folder: Path = Path()
    #: The upstream the GitHub connector and the pollers call (:func:`echo_upstream`).
    upstream: LocalServer | None = None
    observed: Observed | None = None

    def record(self, where: str, text: str) -> None:
        self.seen.append((where, text))

    def raw_token(self, cred: str, owner: str = "alpha") -> str | None:
        """The text a credential sends as a token (None: nothing)."""
        if cred == "none":
            return None
        if cred == "wrong":
            return WRONG
        if cred == "admin":
            return ADMIN
        if cred == "other":
            return self.tokens["beta" if owner != "beta" else "alpha"]
        right = self.tokens[owner]
        return right if cred == "right" else f"Basic {right}"

    def authorization(self, cred: str, owner: str = "alpha") -> str | None:
        """The ``Authorization`` header of a credential (None: no header)."""
        token = self.raw_token(cred, owner)
        if token is None or cred == "malformed":
            return token
        return f"Bearer {token}"

    def headers(self, cred: str, owner: str = "alpha") -> dict[str, str]:
        value = self.authorization(cred, owner)
        return {} if value is None else {"Authorization": value}

    def query_token(self, cred: str) -> str | None:
        """``?token=`` for a credential: none sends no parameter, malformed an empty one."""
        return "" if cred == "malformed" else self.raw_token(cred)

    async def publish(self, entity_id: str, **props: Any) -> None:
        """Write as the entity's owner (setting the scene, not under test)."""
        owner = entity_id.split("/", 1)[0]
        reply = await self.http.post(
            "/api/events", json=event(entity_id, **props), headers=self.headers("right", owner)
        )
        assert reply.status_code == 200, reply.text

    async def delete(self, entity_id: str) -> None:
        owner = entity_id.split("/", 1)[0]
        reply = await self.http.delete(
            "/api/state/entities/" + quote(entity_id, safe=""),
            headers=self.headers("right", owner),
        )
        assert reply.status_code == 200, reply.text

    async def exists(self, entity_id: str) -> bool:
        reply = await self.http.get(
            "/api/state/entities/" + quote(entity_id, safe=""), headers=self.headers("admin")
        )
        return reply.status_code == 200

    async def register(self, name: str) -> str:
        reply = await self.http.post(
            "/api/namespaces", json={"name": name}, headers=self.headers("admin")
        )
        assert reply.status_code == 200, reply.text
        token = cast("str", reply.json()["token"])
        self.tokens[name] = token
        return token

    def poller_spec(self) -> dict[str, Any]:
        assert self.upstream is not None
        return {**POLLER, "url": self.upstream.url("/items")}

    async def add_poller(self) -> str:
        reply = await self.http.post(
            "/api/connectors/generic", json=self.poller_spec(), headers=self.headers("admin")
        )
        assert reply.status_code == 201, reply.text
        return cast("str", reply.json()["source_id"])


POLLER = {
    "name": "matrix",
    # (The url: the world's upstream.) An hour between polls.
    "poll_interval_secs": 3600,
    "entity_key": "k",
    "namespace": "alpha",
    "auth_type": "bearer",
    "token": POLLER_SECRET,
}


def echo_upstream(seen: Seen) -> Reply:
    """An upstream that refuses every call, echoing the credential it was sent (as a
    careless API may): the hub must not pass the echo on (status, logs, responses)."""
    sent = seen.headers.get("authorization", "none")
    return json_reply({"message": f"Bad credentials: {sent}"}, 401)


class LogRecords(logging.Handler):
    """Keeps every record (formatted, exceptions included) while the module runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        #: (logger name, the formatted record).
        self.lines: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.name, self.format(record)))


@pytest.fixture(scope="module")
def log_records() -> Iterator[LogRecords]:
    """Every logger at DEBUG for the whole module (set before the hubs start, since
    libraries such as websockets decide per connection whether to log)."""
    root = logging.getLogger()
    handler = LogRecords()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.setLevel(level)
        root.removeHandler(handler)


@pytest.fixture(scope="module", params=MODES)
async def world(
    request: pytest.FixtureRequest,
    redis_url: str,
    log_records: LogRecords,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[World]:
    """One hub per mode, for the whole module (pytest runs one mode's tests, then the
    other's): auth on, an admin token, connectors with an encryption key; namespaces
    alpha, beta, gamma and empty registered; alpha/0, alpha/1, beta/0, beta/1 written;
    a generic poller registered; a Singer tap with secrets registered and run once
    (it fails, printing its secret); the directory written once."""
    mode: str = request.param
    key_prefix = "t" + uuid.uuid4().hex[:12]
    folder = tmp_path_factory.mktemp(f"matrix-{mode}")
    upstream = await LocalServer(echo_upstream).__aenter__()
    settings = make_settings(
        key_prefix,
        gateway={"auth_enabled": True, "admin_token": ADMIN, "private_reads": mode == "private"},
        # The stored github token is polled at the echoing upstream, not GitHub.
        connectors={
            "encryption_key": ENCRYPTION_KEY,
            "poll_timeout": 2,
            "github_api_url": upstream.url("/github").rstrip("/"),
            "min_poll_interval": 0.1,
        },
        redis={"data_dir": str(folder / "flux-data")},
    )
    seen: list[tuple[str, str]] = []

    async def keep(reply: httpx.Response) -> None:
        await reply.aread()
        body = reply.text
        if reply.request.method == "POST" and reply.request.url.path == "/api/namespaces":
            # The one answer that shows a token, by design: once, to the admin.
            if reply.status_code == 200:
                shown = reply.json()
                assert len(shown.pop("token")) == 36
                body = json.dumps(shown)
        seen.append((f"{reply.request.method} {reply.request.url.path}", body))
        seen.append(("headers", str(reply.headers)))

    keys = Keys(settings.redis.key_prefix, settings.redis.partitions)
    async with (
        await Store.connect(redis_url, keys, settings.log) as store,
        running_hub(settings, store) as hub,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{hub.port}",
            timeout=timeout(10),
            event_hooks={"response": [keep]},
        ) as http,
    ):
        w = World(mode, hub, store, http, f"ws://127.0.0.1:{hub.port}/api/ws", {}, seen)
        for name in ("alpha", "beta", "gamma", "empty"):
            await w.register(name)
        for name in ("alpha", "beta"):
            for n in range(2):
                await w.publish(f"{name}/{n}", v=n)
        w.folder = folder
        w.upstream = upstream
        w.poller = await w.add_poller()
        await w.register("stdio")  # the FLUX_TOKEN of `flux mcp`
        await add_tap(w, "matrix", "admin")
        await until(lambda: tap_failed(w, "matrix"), 20)
        # The GitHub token and the poller's, each sent upstream (and echoed back).
        await w.http.post(
            "/api/connectors/github/token",
            json={"token": CONNECTOR_SECRET},
            headers=w.headers("right"),
        )

        async def both_sent() -> bool:
            sent = [seen.headers.get("authorization", "") for seen in upstream.requests]
            return f"Bearer {CONNECTOR_SECRET}" in sent and f"Bearer {POLLER_SECRET}" in sent

        await until(both_sent, 20)

        async def directory_written() -> bool:
            return await w.exists("flux-core/directory")

        await until(directory_written, 10)
        try:
            yield w
        finally:
            await upstream.close()


# ---------------------------------------------------------------------- outcomes


def outcome(reply: httpx.Response, saw: Callable[[httpx.Response], str] | None = None) -> str:
    """``<status> <tag>`` for an error; ``<status>`` (and what it saw) for a success."""
    if reply.status_code >= 400:
        return f"{reply.status_code} {tag(reply.json()['error'])}"
    if saw is None:
        return str(reply.status_code)
    return f"{reply.status_code} {saw(reply)}"


def namespaces(ids: list[str], among: tuple[str, ...] = ("alpha", "beta")) -> str:
    """Which of ``among`` the ids belong to: ``alpha+beta``, ``alpha``, … or ``none``."""
    found = {i.split("/", 1)[0] for i in ids}
    shown = [n for n in among if n in found]
    return "+".join(shown) if shown else "none"


def confined(world: World, cred: str, ids: list[str]) -> str:
    """Nothing if a reader saw only what private reads allow it, else ``LEAK <ids>``."""
    if world.mode != "private" or cred == "admin":
        return ""
    own = {"other": "beta/", "right": "alpha/"}.get(cred)
    leaked = sorted({i for i in ids if own is None or not i.startswith(own)})
    return f" LEAK {leaked}" if leaked else ""


def listed(world: World, cred: str) -> Callable[[httpx.Response], str]:
    def saw(reply: httpx.Response) -> str:
        ids = [e["id"] for e in reply.json()]
        return namespaces(ids, ("alpha", "beta", "flux-core")) + confined(world, cred, ids)

    return saw


def history_of(entity_id: str) -> Callable[[httpx.Response], str]:
    def saw(reply: httpx.Response) -> str:
        others = {e["payload"]["entity_id"] for e in reply.json()} - {entity_id}
        return "events" if not others else f"LEAK {sorted(others)}"

    return saw


def batch_results(reply: httpx.Response) -> str:
    """Per event of a batch: ``ok`` or the tag of its authorization failure."""
    shown = []
    for result in reply.json()["results"]:
        error = result["error"]
        if error is None:
            shown.append("ok")
            continue
        for kind in ("authorization failed: Invalid token: ", "authorization failed: Forbidden: "):
            if error.startswith(kind):
                error = error[len(kind) :]
        shown.append(tag(error))
    return ", ".join(shown)


# ---------------------------------------------------------------------- WebSockets


class Socket:
    """A WebSocket client that records everything the hub sends it."""

    def __init__(self, world: World, ws: ClientConnection) -> None:
        self.world = world
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        #: The close code the hub sent (None while open).
        self.closed: int | None = None

    @classmethod
    async def open(
        cls,
        world: World,
        *,
        native: bool = True,
        header: str | None = None,
        query: str | None = None,
    ) -> Socket:
        url = world.ws_url if query is None else f"{world.ws_url}?token={quote(query, safe='')}"
        ws = await websockets.connect(
            url,
            subprotocols=[Subprotocol("flux.v1")] if native else None,
            additional_headers={} if header is None else {"Authorization": header},
            open_timeout=timeout(5),
        )
        if ws.response is not None:
            world.record("upgrade", str(ws.response.headers))
        return cls(world, ws)

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def recv(self, wait: float | None = 5.0) -> dict[str, Any]:
        if wait is None:
            data = await self.ws.recv()
        else:
            data = await asyncio.wait_for(self.ws.recv(), timeout(wait))
        text = data if isinstance(data, str) else data.decode()
        self.world.record("frame", text)
        frame: dict[str, Any] = json.loads(text)
        self.frames.append(frame)
        return frame

    async def request(self, frame: dict[str, Any], reply: str) -> dict[str, Any]:
        """Send a frame (with a ``ref``); its reply of that type, or its error."""
        frame.setdefault("ref", uuid.uuid4().hex)
        await self.send(frame)
        while True:
            got = await self.recv()
            if got["type"] in (reply, "error") and got.get("ref") == frame["ref"]:
                return got

    async def drain(self) -> None:
        """Read until the connection closes."""
        try:
            while True:
                await self.recv(None)
        except websockets.ConnectionClosed as exc:
            self.closed = exc.rcvd.code if exc.rcvd is not None else 1006
            if exc.rcvd is not None:
                self.world.record("close reason", exc.rcvd.reason)

    async def close(self) -> None:
        await self.ws.close()


def result_of(result: dict[str, Any]) -> str:
    """A publish result: ``ok``, or ``<code> <tag>``."""
    if "error" not in result:
        return cast("str", result["status"])
    return f"{result['error']['code']} {tag(result['error']['message'])}"


async def ws_publish(sock: Socket, entity_id: str) -> str:
    ack = await sock.request({"type": "publish", "events": [event(entity_id, v=1)]}, "ack")
    assert ack["type"] == "ack", ack
    return result_of(ack["results"][0])


async def ws_get(sock: Socket, entity_id: str) -> str:
    reply = await sock.request({"type": "get", "ids": [entity_id]}, "entities")
    if reply["type"] == "error":
        return cast("str", reply["code"])
    found = [e["id"] for e in reply["entities"]]
    if found == [entity_id] and reply["missing"] == []:
        return "found"
    return "missing" if not found and reply["missing"] == [entity_id] else f"odd {reply}"


# ---------------------------------------------------------------------- subscriptions

#: Native subscription filters, each a row (the reader tries to see alpha).
SUBSCRIPTIONS: dict[str, dict[str, Any]] = {
    "all": {"all": True},
    "prefix ''": {"prefixes": [""]},
    "prefix alpha/": {"prefixes": ["alpha/"]},
    "namespace alpha": {"namespaces": ["alpha"]},
    "id alpha/0": {"ids": ["alpha/0"]},
    "glob *": {"globs": ["*"]},
    "glob */0": {"globs": ["*/0"]},
    "glob ?lpha/*": {"globs": ["?lpha/*"]},
    "all, resumed from a cursor": {"all": True},
}
RESUME = "all, resumed from a cursor"

#: Compat connections: (the id it subscribes to, or None; how the token is sent).
COMPAT: dict[str, tuple[str | None, str]] = {
    "no subscription": (None, "header"),
    "subscribe alpha/0": ("alpha/0", "header"),
    "subscribe *": ("*", "header"),
    "no subscription, ?token=": (None, "query"),
}


@dataclass
class Observed:
    """What every subscriber of the scenario received: (cred, row) -> outcome."""

    native: dict[tuple[str, str], str] = field(default_factory=dict)
    compat: dict[tuple[str, str], str] = field(default_factory=dict)


async def observe(world: World) -> Observed:
    """One scene for every subscription row: subscribers of every credential, then
    creations, updates and deletions in both namespaces; who received what.

    Writes after the cursor and before the subscriptions (what a resume catches up
    on): alpha/s-new and beta/s-new created. Then, live: alpha/0 and beta/0 updated,
    alpha/s-new and beta/s-new deleted.
    """
    observer = await Socket.open(world, header=world.authorization("admin"))
    live = await observer.request(
        {"type": "subscribe", "sub": "observer", "filter": {"all": True}}, "subscribed"
    )
    cursor = live["cursor"]
    for ns in ("alpha", "beta"):
        await world.publish(f"{ns}/s-new", v=0)
    natives: dict[str, Socket] = {}
    compats: dict[tuple[str, str], Socket] = {}
    for cred in CREDS:
        sock = await Socket.open(world, header=world.authorization(cred))
        for name, spec in SUBSCRIPTIONS.items():
            frame: dict[str, Any] = {"type": "subscribe", "ref": name, "sub": name, "filter": spec}
            if name == RESUME:
                frame["from"] = cursor
            else:
                frame["snapshot"] = True
            await sock.send(frame)
        natives[cred] = sock
        for name, (entity, via) in COMPAT.items():
            compat = await Socket.open(
                world,
                native=False,
                header=world.authorization(cred) if via == "header" else None,
                query=world.query_token(cred) if via == "query" else None,
            )
            if entity is not None:
                # (Under private reads the hub may have refused it already.)
                with contextlib.suppress(websockets.ConnectionClosed):
                    await compat.send({"type": "subscribe", "entity_id": entity})
            compats[cred, name] = compat

    def answered(sock: Socket) -> bool:
        done = {f.get("ref") for f in sock.frames if f["type"] == "error"}
        done |= {f.get("sub") for f in sock.frames if f["type"] == "synced"}
        return done >= set(SUBSCRIPTIONS)

    async with asyncio.TaskGroup() as readers:
        for sock in [*natives.values(), *compats.values()]:
            readers.create_task(sock.drain())

        async def all_answered() -> bool:
            return all(answered(s) for s in natives.values())

        await until(all_answered)
        # Compat connections under private reads start receiving once their token is
        # checked (a task of its own): give it time.
        await asyncio.sleep(0.3)
        await world.publish("alpha/0", v="live")
        await world.publish("beta/0", v="live")
        await world.delete("alpha/s-new")
        await world.delete("beta/s-new")
        while True:
            frame = await observer.recv()
            if frame["type"] == "deleted" and frame["id"] == "beta/s-new":
                break
        # The observer's frames and everyone else's left in the same dispatch.
        await asyncio.sleep(0.3)
        for sock in [observer, *natives.values(), *compats.values()]:
            await sock.close()
    seen = Observed()
    for cred, sock in natives.items():
        for name in SUBSCRIPTIONS:
            seen.native[cred, name] = _native_view(world, cred, sock, name)
    for (cred, name), compat in compats.items():
        seen.compat[cred, name] = _compat_view(world, cred, compat)
    return seen


def _native_view(world: World, cred: str, sock: Socket, name: str) -> str:
    refused = [f for f in sock.frames if f["type"] == "error" and f.get("ref") == name]
    if refused:
        return cast("str", refused[0]["code"])
    ids: list[str] = []
    for frame in sock.frames:
        if frame.get("sub") != name:
            continue
        if frame["type"] == "snapshot":
            ids += [e["id"] for e in frame["entities"]]
        elif frame["type"] in ("delta", "deleted"):
            ids.append(frame["id"])
    return f"sees {namespaces(ids)}" + confined(world, cred, ids)


def _compat_view(world: World, cred: str, sock: Socket) -> str:
    updates = [f["entity_id"] for f in sock.frames if f.get("type") == "state_update"]
    deletions = [f["entity_id"] for f in sock.frames if f.get("type") == "entity_deleted"]
    if sock.closed not in (None, 1000) and not updates and not deletions:
        return f"closed {sock.closed}"
    leak = confined(world, cred, updates + deletions)
    return f"updates {namespaces(updates)}, deletions {namespaces(deletions)}{leak}"


async def observed(world: World) -> Observed:
    if world.observed is None:
        world.observed = await observe(world)
    return world.observed


# ---------------------------------------------------------------------- the rows

Runner = Callable[[World, str], Awaitable[str]]
Cells = dict[str, str]


def cells(none: str, malformed: str, wrong: str, other: str, right: str, admin: str) -> Cells:
    return dict(zip(CREDS, (none, malformed, wrong, other, right, admin), strict=True))


def same(result: str) -> Cells:
    return dict.fromkeys(CREDS, result)


def private_read(other: str, right: str, admin: str | None = None) -> Cells:
    """A REST read under private reads: a valid token is needed."""
    return cells(
        "401 no-token",
        "401 bad-token",
        "401 bad-token",
        other,
        right,
        right if admin is None else admin,
    )


def ws_private(other: str, right: str, admin: str | None = None) -> Cells:
    """A WebSocket read under private reads: a valid token is needed."""
    unauthorized = "unauthorized"
    return cells(unauthorized, unauthorized, unauthorized, other, right, admin or right)


def admin_only(refusal: str, success: str) -> Cells:
    return cells(refusal, refusal, refusal, refusal, refusal, success)


INGEST = cells(
    "401 no-token", "401 bad-scheme", "403 not-yours", "403 not-yours", "200", "403 not-yours"
)
DELETE = cells(
    "401 no-header", "401 bad-header", "403 not-owner", "403 not-owner", "200", "403 not-owner"
)
BATCH_DELETE = {**DELETE, "right": "200 deleted 1"}
CONNECTOR = cells("401 conn-no-token", "401 conn-bad-scheme", "200", "200", "200", "200")
WS_INGEST = cells(
    "unauthorized no-token",
    "unauthorized bad-scheme",
    "forbidden not-yours",
    "forbidden not-yours",
    "ok",
    "forbidden not-yours",
)


@dataclass(frozen=True)
class Row:
    """One path: how to take it as a credential, and what each credential gets."""

    name: str
    run: Runner
    public: Cells
    #: None: as in public mode.
    private: Cells | None = None

    def expected(self, mode: str) -> Cells:
        return self.public if mode == "public" or self.private is None else self.private


# --- REST writes


async def rest_publish(w: World, cred: str) -> str:
    return outcome(
        await w.http.post(
            "/api/events", json=event(f"alpha/p-{cred}", v=1), headers=w.headers(cred)
        )
    )


async def rest_publish_leased(w: World, cred: str) -> str:
    body = {**event(f"alpha/lease-{cred}", v=1), "ttl": 3600}
    return outcome(await w.http.post("/api/events", json=body, headers=w.headers(cred)))


async def rest_publish_reserved(w: World, cred: str) -> str:
    body = event("flux-core/directory", v=1)
    return outcome(await w.http.post("/api/events", json=body, headers=w.headers(cred)))


async def rest_batch_mixed(w: World, cred: str) -> str:
    events = [event(f"alpha/b-{cred}", v=1), event(f"beta/b-{cred}", v=1)]
    reply = await w.http.post("/api/events/batch", json={"events": events}, headers=w.headers(cred))
    return outcome(reply, batch_results)


async def rest_delete(w: World, cred: str) -> str:
    target = f"alpha/d-{cred}"
    await w.publish(target, v=1)
    reply = await w.http.delete(
        "/api/state/entities/" + quote(target, safe=""), headers=w.headers(cred)
    )
    return await _deleted(w, reply, [target])


async def _deleted(w: World, reply: httpx.Response, targets: list[str]) -> str:
    """The outcome of a delete; a refused one must have deleted nothing."""
    result = outcome(
        reply, lambda r: f"deleted {r.json()['deleted']}" if "deleted" in r.json() else ""
    )
    if reply.status_code != 200:
        gone = [t for t in targets if not await w.exists(t)]
        if gone:
            result += f" but deleted {gone}"
    return result.strip()


def batch_delete(
    body: Callable[[str], dict[str, Any]], targets: Callable[[str], list[str]], owner: str = "alpha"
) -> Runner:
    async def run(w: World, cred: str) -> str:
        seeded = targets(cred)
        for target in seeded:
            await w.publish(target, v=1)
        reply = await w.http.post(
            "/api/state/entities/delete", json=body(cred), headers=w.headers(cred, owner)
        )
        return await _deleted(w, reply, seeded)

    return run


# --- REST reads


def rest_get(
    path: str, saw: Callable[[World, str], Callable[[httpx.Response], str]] | None = None
) -> Runner:
    async def run(w: World, cred: str) -> str:
        reply = await w.http.get(path, headers=w.headers(cred))
        return outcome(reply, None if saw is None else saw(w, cred))

    return run


def sse_stream(query: str, via: str = "header") -> Runner:
    """``GET /api/stream``: its status, then what its snapshot showed (the token as a
    header, or as ``?token=``, as EventSource sends it)."""

    async def run(w: World, cred: str) -> str:
        headers = w.headers(cred) if via == "header" else {}
        token = w.query_token(cred) if via == "query" else None
        if token is not None:
            query_ = f"{query}&token={quote(token, safe='')}"
        else:
            query_ = query
        ids: list[str] = []
        # A client of its own: the world's reads every body whole, and a stream has no end.
        async with (
            httpx.AsyncClient(base_url=str(w.http.base_url), timeout=timeout(10)) as http,
            http.stream("GET", f"/api/stream?{query_}", headers=headers) as reply,
        ):
            w.record("headers", str(reply.headers))
            if reply.status_code != 200:
                await reply.aread()
                w.record("GET /api/stream", reply.text)
                return outcome(reply)
            async for line in reply.aiter_lines():
                w.record("event stream", line)
                if line.startswith("data: "):
                    frame = json.loads(line.removeprefix("data: "))
                    if frame["type"] == "snapshot":
                        ids += [e["id"] for e in frame["entities"]]
                    elif frame["type"] == "synced":
                        break
        seen = namespaces(ids, ("alpha", "beta", "flux-core")) + confined(w, cred, ids)
        return f"200 {seen}"

    return run


# --- namespaces, admin


async def namespace_register(w: World, cred: str) -> str:
    reply = await w.http.post(
        "/api/namespaces", json={"name": f"reg-{cred}"}, headers=w.headers(cred)
    )
    return outcome(reply)


async def namespace_register_reserved(w: World, cred: str) -> str:
    body = {"name": "flux-core"}
    return outcome(await w.http.post("/api/namespaces", json=body, headers=w.headers(cred)))


async def namespace_delete(w: World, cred: str) -> str:
    victim = f"del-{cred}"
    await w.register(victim)
    reply = await w.http.delete(f"/api/namespaces/{victim}", headers=w.headers(cred, victim))
    return outcome(reply)


async def admin_put(w: World, cred: str) -> str:
    body = {"rate_limit_enabled": True}
    return outcome(await w.http.put("/api/admin/config", json=body, headers=w.headers(cred)))


# --- connectors


async def connector_store(w: World, cred: str) -> str:
    body = {"token": CONNECTOR_SECRET}
    reply = await w.http.post("/api/connectors/github/token", json=body, headers=w.headers(cred))
    return outcome(reply)


async def connector_forget(w: World, cred: str) -> str:
    # Stored first by the same credential: each token is its own user (Flux).
    body = {"token": CONNECTOR_SECRET}
    await w.http.post("/api/connectors/github/token", json=body, headers=w.headers(cred))
    return outcome(await w.http.delete("/api/connectors/github/token", headers=w.headers(cred)))


async def gmail_store(w: World, cred: str) -> str:
    body = {"token": CONNECTOR_SECRET}
    reply = await w.http.post("/api/connectors/gmail/token", json=body, headers=w.headers(cred))
    return outcome(reply)


def rest_head(path: str) -> Runner:
    async def run(w: World, cred: str) -> str:
        reply = await w.http.head(path, headers=w.headers(cred))
        return str(reply.status_code)  # (no body to read an error from)

    return run


def rest_delete_path(path: str) -> Runner:
    async def run(w: World, cred: str) -> str:
        return outcome(await w.http.delete(path, headers=w.headers(cred)))

    return run


async def poller_add(w: World, cred: str) -> str:
    reply = await w.http.post(
        "/api/connectors/generic", json=w.poller_spec(), headers=w.headers(cred)
    )
    return outcome(reply)


async def poller_get(w: World, cred: str) -> str:
    reply = await w.http.get(f"/api/connectors/generic/{w.poller}", headers=w.headers(cred))
    return outcome(reply)


async def poller_delete(w: World, cred: str) -> str:
    source_id = await w.add_poller()
    reply = await w.http.delete(f"/api/connectors/generic/{source_id}", headers=w.headers(cred))
    return outcome(reply)


# --- Singer taps


def tap_program(w: World) -> str:
    """A stand-in tap: prints the secret of its config on stderr, then fails."""
    path = w.folder / "tap-leaky"
    if not path.exists():
        path.write_text(
            f"#!{sys.executable}\nimport json, sys\n"
            "config = json.load(open(sys.argv[sys.argv.index('--config') + 1]))\n"
            "print('login failed with', config['password'], file=sys.stderr)\n"
            "sys.exit(1)\n"
        )
        path.chmod(0o755)
    return str(path)


async def add_tap(w: World, name: str, cred: str) -> httpx.Response:
    body = {
        "name": name,
        "tap": "tap-leaky",
        "executable": tap_program(w),
        "namespace": "alpha",
        "streams": {"s": {"entity_id": "{id}"}},
        "config": {"user": "ann"},
        "secrets": {"password": TAP_SECRET},
        "interval_secs": 3600,
    }
    return await w.http.post("/api/connectors/singer", json=body, headers=w.headers(cred))


async def tap_failed(w: World, name: str) -> bool:
    reply = await w.http.get(f"/api/connectors/singer/{name}", headers=w.headers("admin"))
    return cast("int", reply.json()["failures"]) >= 1


async def tap_add(w: World, cred: str) -> str:
    return outcome(await add_tap(w, f"add_{cred}", cred))


async def tap_delete(w: World, cred: str) -> str:
    assert (await add_tap(w, f"del_{cred}", "admin")).status_code == 201
    reply = await w.http.delete(f"/api/connectors/singer/del_{cred}", headers=w.headers(cred))
    return outcome(reply)


# --- MCP over streamable HTTP

MCP_INIT = mcp_initialize("matrix")


async def mcp_open(w: World, cred: str) -> tuple[str, str]:
    """``initialize`` as a credential: (its outcome, the session id or '')."""
    headers = {**MCP_ACCEPT, **w.headers(cred)}
    reply = await w.http.post("/mcp", json=MCP_INIT, headers=headers)
    if reply.status_code != 200:
        return outcome(reply), ""
    session = reply.headers["mcp-session-id"]
    done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    ack = await w.http.post("/mcp", json=done, headers={**headers, "mcp-session-id": session})
    assert ack.status_code == 202, ack.text
    return "200", session


async def mcp_tool(w: World, cred: str, session: str, tool: str, arguments: dict[str, Any]) -> str:
    """A ``tools/call`` as a credential on a session: ``ok`` or ``<code> <tag>``."""
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }
    headers = {**MCP_ACCEPT, **w.headers(cred), "mcp-session-id": session}
    reply = await w.http.post("/mcp", json=call, headers=headers)
    if reply.status_code != 200:
        return outcome(reply)
    result = reply.json()["result"]
    if not result["isError"]:
        return "ok"
    found = result["structuredContent"]
    if "results" in found:
        found = found["results"][0]
    return f"{found['error']['code']} {tag(found['error']['message'])}"


def mcp_tools(opener: str | None = None) -> Runner:
    """``initialize`` (as the credential, or as ``opener``), then ``get`` alpha/0 and
    ``publish`` an alpha entity as the credential."""

    async def run(w: World, cred: str) -> str:
        opened, session = await mcp_open(w, opener or cred)
        if not session:
            return f"initialize {opened}"
        got = await mcp_tool(w, cred, session, "get", {"entity_id": "alpha/0"})
        event_ = {"entity_id": f"alpha/mcp-{opener}-{cred}", "properties": {"v": 1}}
        published = await mcp_tool(w, cred, session, "publish", {"events": [event_]})
        said = "" if opener else f"initialize {opened}; "
        return f"{said}get {got}; publish {published}"

    return run


async def mcp_rpc(
    w: World, cred: str, session: str, method: str, params: dict[str, Any]
) -> dict[str, Any]:
    """One JSON-RPC request on a session as a credential: its ``result`` or ``error``."""
    call = {"jsonrpc": "2.0", "id": 3, "method": method, "params": params}
    headers = {**MCP_ACCEPT, **w.headers(cred), "mcp-session-id": session}
    reply = await w.http.post("/mcp", json=call, headers=headers)
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    return answer


def mcp_refusal(result: dict[str, Any]) -> str:
    found = result["structuredContent"]
    return f"{found['error']['code']} {tag(found['error']['message'])}"


async def mcp_reads(w: World, cred: str) -> str:
    """As a credential: the ``list`` tool (glob ``*/0``), every page of
    ``resources/list``, and ``wait_for_change`` (everything) from a cursor taken before
    alpha and beta each wrote once; which namespaces each showed."""
    _, session = await mcp_open(w, cred)
    shown = []
    listed_ = (await mcp_rpc(w, cred, session, "tools/call", tool("list", glob="*/0")))["result"]
    if listed_["isError"]:
        shown.append(f"list {mcp_refusal(listed_)}")
    else:
        found = [e["id"] for e in listed_["structuredContent"]["entities"]]
        shown.append(f"list {namespaces(found)}{confined(w, cred, found)}")
    ids: list[str] = []
    params: dict[str, Any] = {}
    refused = ""
    for _ in range(100):  # pages
        answer = await mcp_rpc(w, cred, session, "resources/list", params)
        if "error" in answer:
            # "<status> <code>: <REST's message>"
            _, code, message = re.split(r" |: ", answer["error"]["message"], maxsplit=2)
            refused = f" {code} {tag(message)}"
            break
        ids += [r["uri"].removeprefix("flux://entity/") for r in answer["result"]["resources"]]
        if not answer["result"].get("nextCursor"):
            break
        params = {"cursor": answer["result"]["nextCursor"]}
    everyone = ("alpha", "beta", "flux-core")
    shown.append(f"resources {namespaces(ids, everyone)}{confined(w, cred, ids)}{refused}")
    _, admin = await mcp_open(w, "admin")
    start = await mcp_rpc(w, "admin", admin, "tools/call", tool("wait_for_change", **WAIT_NOW))
    cursor = start["result"]["structuredContent"]["cursor"]
    for ns in ("alpha", "beta"):
        await w.publish(f"{ns}/mcp-wait-{cred}", v=1)
    arguments = {**WAIT_NOW, "cursor": cursor, "timeout_seconds": 5}
    waited = await mcp_rpc(w, cred, session, "tools/call", tool("wait_for_change", **arguments))
    result = waited["result"]
    if result["isError"]:
        shown.append(f"changes {mcp_refusal(result)}")
    else:
        ids = [c["id"] for c in result["structuredContent"]["changes"]]
        shown.append(f"changes {namespaces(ids)}{confined(w, cred, ids)}")
    return "; ".join(shown)


WAIT_NOW: dict[str, Any] = {"filter": {"all": True}, "timeout_seconds": 0}


def tool(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


async def mcp_stream(w: World, cred: str) -> str:
    """``GET /mcp``, the event stream of a session alpha's token opened, as a credential."""
    _, session = await mcp_open(w, "right")
    headers = {**w.headers(cred), "Accept": "text/event-stream", "mcp-session-id": session}
    async with (
        httpx.AsyncClient(base_url=str(w.http.base_url), timeout=timeout(10)) as http,
        http.stream("GET", "/mcp", headers=headers) as reply,
    ):
        w.record("headers", str(reply.headers))
        if reply.status_code != 200:
            await reply.aread()
            w.record("GET /mcp", reply.text)
        return outcome(reply)


async def mcp_end(w: World, cred: str) -> str:
    """``DELETE /mcp`` of a session alpha's token opened, as a credential."""
    _, session = await mcp_open(w, "right")
    headers = {**w.headers(cred), "mcp-session-id": session}
    return outcome(await w.http.delete("/mcp", headers=headers))


# --- native WebSocket


async def native_publish_header(w: World, cred: str) -> str:
    sock = await Socket.open(w, header=w.authorization(cred))
    try:
        return await ws_publish(sock, f"alpha/wh-{cred}")
    finally:
        await sock.close()


async def native_publish_query(w: World, cred: str) -> str:
    sock = await Socket.open(w, query=w.query_token(cred))
    try:
        return await ws_publish(sock, f"alpha/wq-{cred}")
    finally:
        await sock.close()


async def native_auth_frame(w: World, cred: str) -> str:
    sock = await Socket.open(w)
    try:
        token = w.raw_token(cred)
        said = "no frame"
        if token is not None:
            reply = await sock.request({"type": "auth", "token": token}, "authenticated")
            if reply["type"] == "error":
                said = reply["code"]
            else:
                said = "admin" if reply["admin"] else reply["namespace"]
        published = await ws_publish(sock, f"alpha/wa-{cred}")
        got = await ws_get(sock, "alpha/0")
        return f"{said}; publish {published}; get {got}"
    finally:
        await sock.close()


def native_read(frame: dict[str, Any]) -> Runner:
    async def run(w: World, cred: str) -> str:
        sock = await Socket.open(w, header=w.authorization(cred))
        try:
            if frame["type"] == "get":
                return await ws_get(sock, frame["ids"][0])
            reply = await sock.request(dict(frame), "entities")
            if reply["type"] == "error":
                return cast("str", reply["code"])
            ids = [e["id"] for e in reply["entities"]]
            return namespaces(ids, ("alpha", "beta", "flux-core")) + confined(w, cred, ids)
        finally:
            await sock.close()

    return run


def native_subscription(name: str) -> Runner:
    async def run(w: World, cred: str) -> str:
        return (await observed(w)).native[cred, name]

    return run


def compat_connection(name: str) -> Runner:
    async def run(w: World, cred: str) -> str:
        return (await observed(w)).compat[cred, name]

    return run


def _subscription_row(name: str, public_sees: str, other: str, right: str) -> Row:
    return Row(
        f"WS `subscribe` {name}",
        native_subscription(name),
        same(f"sees {public_sees}"),
        ws_private(other, right, f"sees {public_sees}"),
    )


EVERYONE = "alpha+beta+flux-core"
#: An MCP ``get`` of alpha/0 under private reads: REST's answers, as tool errors.
MCP_PRIVATE_GET = (
    "unauthorized no-token",
    "unauthorized bad-token",
    "unauthorized bad-token",
    "forbidden no-read",
    "ok",
    "ok",
)
#: The MCP reads of a credential private reads refuse (``{}``: REST's tag).
MCP_READS_REFUSED = (
    "list unauthorized {0}; resources none unauthorized {0}; changes unauthorized auth-first"
)
#: Calls on a session another credential opened: as if it did not exist.
MCP_NOT_ITS_SESSION = dict.fromkeys(CREDS, "get 404 no-session; publish 404 no-session")

ROWS: list[Row] = [
    # ------------------------------------------------------------------ writes
    Row("`POST /api/events` (alpha/…)", rest_publish, INGEST),
    Row(
        "`POST /api/events` (flux-core/…)",
        rest_publish_reserved,
        cells("401 no-token", "401 bad-scheme", *["403 reserved"] * 4),
    ),
    Row(
        "`POST /api/events/batch` (alpha/…, beta/…)",
        rest_batch_mixed,
        cells(
            "200 no-token, no-token",
            "200 bad-scheme, bad-scheme",
            "200 not-yours, not-yours",
            "200 not-yours, ok",
            "200 ok, not-yours",
            "200 not-yours, not-yours",
        ),
    ),
    Row("`POST /api/events` with `ttl` (a lease on alpha/…)", rest_publish_leased, INGEST),
    Row("`DELETE /api/state/entities/:id`", rest_delete, DELETE),
    Row(
        "`POST /api/state/entities/delete` `entity_ids`",
        batch_delete(lambda c: {"entity_ids": [f"alpha/di-{c}"]}, lambda c: [f"alpha/di-{c}"]),
        BATCH_DELETE,
    ),
    Row(
        "`POST /api/state/entities/delete` `prefix` (alpha/…)",
        batch_delete(lambda c: {"prefix": f"alpha/dp-{c}-"}, lambda c: [f"alpha/dp-{c}-x"]),
        BATCH_DELETE,
    ),
    Row(
        "`POST /api/state/entities/delete` `namespace` (gamma)",
        batch_delete(lambda c: {"namespace": "gamma"}, lambda c: ["gamma/x"], owner="gamma"),
        BATCH_DELETE,
    ),
    Row(
        "`POST /api/state/entities/delete` `namespace` (empty: no entities)",
        batch_delete(lambda c: {"namespace": "empty"}, lambda c: [], owner="empty"),
        same("200 deleted 0"),
        {**DELETE, "right": "200 deleted 0"},
    ),
    Row(
        "`POST /api/state/entities/delete` `prefix` '' (every namespace)",
        batch_delete(lambda c: {"prefix": ""}, lambda c: []),
        {**DELETE, "right": "403 not-owner"},
    ),
    # ------------------------------------------------------------------ REST reads
    Row(
        "`GET /api/events?entity=alpha/0` (history)",
        rest_get("/api/events?entity=alpha/0", lambda w, c: history_of("alpha/0")),
        same("200 events"),
        private_read("403 no-read", "200 events"),
    ),
    Row(
        "`GET /api/state/entities/alpha%2F0`",
        rest_get("/api/state/entities/alpha%2F0"),
        same("200"),
        private_read("403 no-read", "200"),
    ),
    Row(
        "`GET /api/state/entities/alpha%2Fabsent`",
        rest_get("/api/state/entities/alpha%2Fabsent"),
        same("404 not-found"),
        private_read("403 no-read", "404 not-found"),
    ),
    Row(
        "`GET /api/state/entities/flux-core%2Fdirectory`",
        rest_get("/api/state/entities/flux-core%2Fdirectory"),
        same("200"),
        private_read("403 no-read", "403 no-read", "200"),
    ),
    Row(
        "`GET /api/state/entities`",
        rest_get("/api/state/entities", listed),
        same(f"200 {EVERYONE}"),
        private_read("200 beta", "200 alpha", f"200 {EVERYONE}"),
    ),
    Row(
        "`GET /api/state/entities?namespace=alpha`",
        rest_get("/api/state/entities?namespace=alpha", listed),
        same("200 alpha"),
        private_read("200 none", "200 alpha"),
    ),
    Row(
        "`GET /api/state/entities?prefix=beta/&limit=1000`",
        rest_get("/api/state/entities?prefix=beta/&limit=1000", listed),
        same("200 beta"),
        private_read("200 beta", "200 none", "200 beta"),
    ),
    Row(
        '`GET /api/state/entities?where={"v":1}`',
        rest_get("/api/state/entities?where=" + quote('{"v":1}', safe=""), listed),
        same("200 alpha+beta"),
        private_read("200 beta", "200 alpha", "200 alpha+beta"),
    ),
    Row(
        "`GET /api/stream?all=true`",
        sse_stream("all=true"),
        same(f"200 {EVERYONE}"),
        private_read("200 beta", "200 alpha", f"200 {EVERYONE}"),
    ),
    Row(
        "`GET /api/stream?all=true&token=`",
        sse_stream("all=true", via="query"),
        same(f"200 {EVERYONE}"),
        private_read("200 beta", "200 alpha", f"200 {EVERYONE}"),
    ),
    Row(
        "`GET /api/stream?namespaces=alpha`",
        sse_stream("namespaces=alpha"),
        same("200 alpha"),
        private_read("403 no-match", "200 alpha"),
    ),
    # ------------------------------------------------------------------ namespaces, admin
    Row("`POST /api/namespaces`", namespace_register, admin_only("401 admin-only", "200")),
    Row(
        "`POST /api/namespaces` (flux-core)",
        namespace_register_reserved,
        admin_only("401 admin-only", "409 reserved"),
    ),
    Row(
        "`GET /api/namespaces/alpha`",
        rest_get("/api/namespaces/alpha"),
        same("200"),
        private_read("403 no-read", "200"),
    ),
    Row(
        "`DELETE /api/namespaces/:name` (right: its own token)",
        namespace_delete,
        admin_only("401 admin-only", "204"),
    ),
    Row("`GET /api/admin/config`", rest_get("/api/admin/config"), same("200")),
    Row("`PUT /api/admin/config`", admin_put, admin_only("401 unauthorized", "200")),
    # ------------------------------------------------------------------ connectors
    Row("`GET /api/connectors`", rest_get("/api/connectors"), CONNECTOR),
    Row("`GET /api/connectors/github`", rest_get("/api/connectors/github"), CONNECTOR),
    Row("`POST /api/connectors/github/token`", connector_store, CONNECTOR),
    Row("`DELETE /api/connectors/github/token`", connector_forget, CONNECTOR),
    Row(
        "`GET /api/connectors/github/oauth/start`",
        rest_get("/api/connectors/github/oauth/start"),
        {**CONNECTOR, **dict.fromkeys(CREDS[2:], "500 no-oauth")},
    ),
    Row(
        "`GET /api/connectors/generic`",
        rest_get("/api/connectors/generic"),
        admin_only("401 unauthorized", "200"),
    ),
    Row("`POST /api/connectors/generic`", poller_add, admin_only("401 unauthorized", "201")),
    Row("`GET /api/connectors/generic/:id`", poller_get, admin_only("401 unauthorized", "200")),
    Row(
        "`DELETE /api/connectors/generic/:id`",
        poller_delete,
        admin_only("401 unauthorized", "204"),
    ),
    Row(
        "`GET /api/connectors/github/oauth/callback` (a state the hub never gave)",
        rest_get("/api/connectors/github/oauth/callback?code=c&state=forged"),
        same("401 bad-state"),
    ),
    Row(
        "`POST /api/connectors/gmail/token` (not available)",
        gmail_store,
        same("409 not-available"),
    ),
    Row(
        "`DELETE /api/connectors/gmail/token` (not available)",
        rest_delete_path("/api/connectors/gmail/token"),
        {**CONNECTOR, **dict.fromkeys(CREDS[2:], "404 no-credentials")},
    ),
    Row(
        "`GET /api/connectors/gmail/oauth/start` (not available)",
        rest_get("/api/connectors/gmail/oauth/start"),
        same("409 not-available"),
    ),
    # ------------------------------------------------------------------ Singer taps
    Row("`POST /api/connectors/singer`", tap_add, admin_only("401 unauthorized", "201")),
    Row(
        "`GET /api/connectors/singer`",
        rest_get("/api/connectors/singer"),
        admin_only("401 unauthorized", "200"),
    ),
    Row(
        "`GET /api/connectors/singer/:name`",
        rest_get("/api/connectors/singer/matrix"),
        admin_only("401 unauthorized", "200"),
    ),
    Row(
        "`DELETE /api/connectors/singer/:name`",
        tap_delete,
        admin_only("401 unauthorized", "204"),
    ),
    # ------------------------------------------------------------------ MCP
    Row(
        "`POST /mcp` `initialize`, `tools/call` `get` alpha/0, `publish` alpha/…",
        mcp_tools(),
        {c: f"initialize 200; get ok; publish {p}" for c, p in WS_INGEST.items()},
        {
            c: f"initialize 200; get {g}; publish {p}"
            for c, g, p in zip(CREDS, MCP_PRIVATE_GET, WS_INGEST.values(), strict=True)
        },
    ),
    Row(
        "`POST /mcp` `tools/call` `get`, `publish` in a session alpha's token opened",
        mcp_tools("right"),
        {**MCP_NOT_ITS_SESSION, "right": "get ok; publish ok"},
    ),
    Row(
        "`POST /mcp` `list` glob `*/0`, `resources/list`, `wait_for_change` all from a cursor",
        mcp_reads,
        same("list alpha+beta; resources alpha+beta+flux-core; changes alpha+beta"),
        cells(
            MCP_READS_REFUSED.format("no-token"),
            MCP_READS_REFUSED.format("bad-token"),
            MCP_READS_REFUSED.format("bad-token"),
            "list beta; resources beta; changes beta",
            "list alpha; resources alpha; changes alpha",
            "list alpha+beta; resources alpha+beta+flux-core; changes alpha+beta",
        ),
    ),
    Row(
        "`GET /mcp` (event stream of a session alpha's token opened)",
        mcp_stream,
        {**dict.fromkeys(CREDS, "404 no-session"), "right": "200"},
    ),
    Row(
        "`DELETE /mcp` (a session alpha's token opened)",
        mcp_end,
        {**dict.fromkeys(CREDS, "404 no-session"), "right": "200"},
    ),
    # ------------------------------------------------------------------ hub's own pages
    Row("`GET /healthz`", rest_get("/healthz"), same("200")),
    Row("`GET /readyz`", rest_get("/readyz"), same("200")),
    Row("`GET /metrics`", rest_get("/metrics"), same("200")),
    Row("`GET /openapi.json`", rest_get("/openapi.json"), same("200")),
    Row("`GET /` (dashboard)", rest_get("/"), same("200")),
    Row("`GET /index.html`", rest_get("/index.html"), same("200")),
    Row("`GET /static/dashboard.js`", rest_get("/static/dashboard.js"), same("200")),
    Row("`HEAD /`", rest_head("/"), same("200")),
    Row("`HEAD /index.html`", rest_head("/index.html"), same("200")),
    Row("`HEAD /static/dashboard.js`", rest_head("/static/dashboard.js"), same("200")),
    # ------------------------------------------------------------------ native WebSocket
    Row("WS `publish` (token in the upgrade's header)", native_publish_header, WS_INGEST),
    Row(
        "WS `publish` (token in `?token=`)",
        native_publish_query,
        {**WS_INGEST, "malformed": "unauthorized no-token"},
    ),
    Row(
        "WS `auth` frame, then `publish` and `get` alpha/0",
        native_auth_frame,
        cells(
            "no frame; publish unauthorized no-token; get found",
            "unauthorized; publish unauthorized no-token; get found",
            "unauthorized; publish unauthorized no-token; get found",
            "beta; publish forbidden not-yours; get found",
            "alpha; publish ok; get found",
            "admin; publish forbidden not-yours; get found",
        ),
        cells(
            "no frame; publish unauthorized no-token; get unauthorized",
            "unauthorized; publish unauthorized no-token; get unauthorized",
            "unauthorized; publish unauthorized no-token; get unauthorized",
            "beta; publish forbidden not-yours; get missing",
            "alpha; publish ok; get found",
            "admin; publish forbidden not-yours; get found",
        ),
    ),
    Row(
        "WS `get` alpha/0",
        native_read({"type": "get", "ids": ["alpha/0"]}),
        same("found"),
        ws_private("missing", "found"),
    ),
    Row(
        "WS `list` namespace alpha",
        native_read({"type": "list", "namespace": "alpha", "limit": 10_000}),
        same("alpha"),
        ws_private("none", "alpha"),
    ),
    Row(
        "WS `list` everything",
        native_read({"type": "list", "limit": 10_000}),
        same(EVERYONE),
        ws_private("beta", "alpha", EVERYONE),
    ),
    _subscription_row("all", "alpha+beta", "sees beta", "sees alpha"),
    _subscription_row("prefix ''", "alpha+beta", "sees beta", "sees alpha"),
    _subscription_row("prefix alpha/", "alpha", "forbidden", "sees alpha"),
    _subscription_row("namespace alpha", "alpha", "forbidden", "sees alpha"),
    _subscription_row("id alpha/0", "alpha", "forbidden", "sees alpha"),
    _subscription_row("glob *", "alpha+beta", "sees beta", "sees alpha"),
    _subscription_row("glob */0", "alpha+beta", "sees beta", "sees alpha"),
    _subscription_row("glob ?lpha/*", "alpha", "sees none", "sees alpha"),
    _subscription_row(RESUME, "alpha+beta", "sees beta", "sees alpha"),
    # ------------------------------------------------------------------ compat WebSocket
    Row(
        "compat WS, no subscription (everything)",
        compat_connection("no subscription"),
        same("updates alpha+beta, deletions alpha+beta"),
        cells(
            "closed 1008",
            "closed 1008",
            "closed 1008",
            "updates beta, deletions beta",
            "updates alpha, deletions alpha",
            "updates alpha+beta, deletions alpha+beta",
        ),
    ),
    Row(
        "compat WS, `subscribe` alpha/0",
        compat_connection("subscribe alpha/0"),
        same("updates alpha, deletions alpha+beta"),
        cells(
            "closed 1008",
            "closed 1008",
            "closed 1008",
            "updates none, deletions beta",
            "updates alpha, deletions alpha",
            "updates alpha, deletions alpha+beta",
        ),
    ),
    Row(
        "compat WS, `subscribe` *",
        compat_connection("subscribe *"),
        same("updates alpha+beta, deletions alpha+beta"),
        cells(
            "closed 1008",
            "closed 1008",
            "closed 1008",
            "updates beta, deletions beta",
            "updates alpha, deletions alpha",
            "updates alpha+beta, deletions alpha+beta",
        ),
    ),
    Row(
        "compat WS, token in `?token=`",
        compat_connection("no subscription, ?token="),
        same("updates alpha+beta, deletions alpha+beta"),
        cells(
            "closed 1008",
            "closed 1008",
            "closed 1008",
            "updates beta, deletions beta",
            "updates alpha, deletions alpha",
            "updates alpha+beta, deletions alpha+beta",
        ),
    ),
]


CASES = [
    pytest.param(row, cred, id=f"{row.name.replace('`', '')}-{cred}")
    for row in ROWS
    for cred in CREDS
]


@pytest.mark.parametrize(("row", "cred"), CASES)
async def test_auth_matrix(world: World, row: Row, cred: str) -> None:
    assert await row.run(world, cred) == row.expected(world.mode)[cred]


# ---------------------------------------------------------------------- every route has a row

#: Routes of the live table no row takes, each with the reason. (Empty: every route
#: has a row; CORS preflights are answered by the HTTP layer, not by a route.)
EXCLUDED: dict[tuple[str, str], str] = {}
_ROW_REQUEST = re.compile(r"`([A-Z]+) (/[^`\s?]*)")


def row_requests(row: Row) -> list[tuple[str, str]]:
    """The ``(method, path)`` requests a row's name says it makes (a WebSocket row: the
    upgrade, ``GET /api/ws``)."""
    if row.name.startswith(("WS ", "compat WS")):
        return [("GET", WS_PATH)]
    return _ROW_REQUEST.findall(row.name)


def covered_routes(table: list[tuple[str, list[str]]]) -> tuple[set[tuple[str, str]], list[str]]:
    """Which ``(template, method)`` of ``table`` the rows reach, as the hub's router
    resolves their requests; and the rows whose request reaches no route."""
    endpoints: dict[Any, tuple[str, str]] = {}
    routes = []
    for template, methods in table:
        handlers = {}
        for method in methods:

            async def endpoint(request: Any, **captured: str) -> Any:
                raise AssertionError("never called")

            endpoints[endpoint] = (template, method)
            handlers[method] = endpoint
        routes.append(Route(template, handlers))
    router = Router(routes)
    reached: set[tuple[str, str]] = set()
    astray = []
    for row in ROWS:
        for method, path in row_requests(row):
            if path == WS_PATH:
                continue  # the transport upgrades it before any route
            try:
                handler = router.resolve(method, path)
            except (NotFound, MethodNotAllowed):
                astray.append(row.name)
                continue
            reached.add(endpoints[getattr(handler, "func", handler)])
    return reached, astray


async def test_every_route_of_the_live_table_has_a_row(world: World) -> None:
    table = world.hub.api.router.templates()
    assert ("/mcp", ["DELETE", "GET", "POST"]) in table  # extensions included
    live = {(template, method) for template, methods in table for method in methods}
    reached, astray = covered_routes(table)
    assert astray == [], "rows whose request reaches no route of the hub"
    assert sorted(live - reached - set(EXCLUDED)) == [], (
        "routes without a row in ROWS: add one (or an EXCLUDED entry with the reason)"
    )
    assert sorted(set(EXCLUDED) - live) == [], "stale EXCLUDED entries"
    assert sorted(set(EXCLUDED) & reached) == [], "EXCLUDED routes that have a row"


def test_the_completeness_check_fails_for_a_route_without_a_row() -> None:
    table = [("/api/events", ["GET", "POST"]), ("/api/new-thing/{id}", ["PUT"])]
    reached, _ = covered_routes(table)
    assert reached == {("/api/events", "GET"), ("/api/events", "POST")}
    live = {(t, m) for t, methods in table for m in methods}
    assert live - reached == {("/api/new-thing/{id}", "PUT")}


@pytest.mark.parametrize("world", ["private"], indirect=True)
async def test_private_subscription_ends_when_its_namespace_is_deleted(world: World) -> None:
    # A subscription outliving its token would show the next owner of the name.
    old_token = await world.register("zeta")
    world.tokens["zeta-deleted"] = old_token
    await world.publish("zeta/old", v=1)
    sock = await Socket.open(world, header=f"Bearer {old_token}")
    try:
        spec = {"type": "subscribe", "sub": "z", "filter": {"all": True}, "snapshot": True}
        assert (await sock.request(spec, "subscribed"))["type"] == "subscribed"
        gone = await world.http.delete("/api/namespaces/zeta", headers=world.headers("admin"))
        assert gone.status_code == 204
        while (frame := await sock.recv())["type"] != "error":
            pass
        assert (frame["code"], frame["sub"]) == ("unauthorized", "z")
        await world.register("zeta")  # a new owner
        await world.publish("zeta/new", v=1)
        assert await ws_get(sock, "zeta/new") == "unauthorized"
        with pytest.raises(TimeoutError):
            while True:
                await sock.recv(0.5)
    finally:
        await sock.close()
    assert not [f for f in sock.frames if f.get("id") == "zeta/new"]


@pytest.mark.parametrize("world", ["private"], indirect=True)
async def test_private_compat_connection_ends_when_its_namespace_is_deleted(
    world: World,
) -> None:
    old_token = await world.register("theta")
    world.tokens["theta-deleted"] = old_token
    sock = await Socket.open(world, native=False, header=f"Bearer {old_token}")
    try:
        await asyncio.sleep(0.3)  # admitted once its token is checked
        gone = await world.http.delete("/api/namespaces/theta", headers=world.headers("admin"))
        assert gone.status_code == 204
        await world.register("theta")  # a new owner
        await world.publish("theta/new", v=1)
        with contextlib.suppress(TimeoutError, websockets.ConnectionClosed):
            while True:
                await sock.recv(1.0)
    finally:
        await sock.close()
    assert not [f for f in sock.frames if f.get("entity_id") == "theta/new"]


async def test_taps_are_refused_on_a_public_hub_without_an_admin_token(
    redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings("t" + uuid.uuid4().hex[:12], gateway={"auth_enabled": True})
    keys = Keys(settings.redis.key_prefix, settings.redis.partitions)
    async with (
        await Store.connect(redis_url, keys, settings.log) as store,
        running_hub(settings, store) as hub,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.port}", timeout=timeout(10)) as http,
    ):
        for header in ({}, {"Authorization": f"Bearer {ADMIN}"}, {"Authorization": "Bearer x"}):
            for method, path in [
                ("POST", "/api/connectors/singer"),
                ("GET", "/api/connectors/singer"),
                ("GET", "/api/connectors/singer/matrix"),
                ("DELETE", "/api/connectors/singer/matrix"),
            ]:
                reply = await http.request(method, path, headers=header, json={})
                assert reply.status_code == 403, (method, path, reply.text)
                assert "FLUX_ADMIN_TOKEN" in reply.json()["error"]


async def test_flux_mcp_at_debug_acts_as_flux_token_and_shows_it_nowhere(
    world: World, tmp_path: Path
) -> None:
    # `flux mcp` as an MCP client spawns it, every logger at DEBUG on its stderr; the
    # hub's side of its calls goes through the module's log and leak checks below.
    token = world.tokens["stdio"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUX_")}
    env.update(FLUX_URL=str(world.http.base_url), FLUX_TOKEN=token)
    debug = (
        "import logging, sys; logging.basicConfig(level=logging.DEBUG, stream=sys.stderr);"
        " from hub.cli import main; sys.exit(main(['mcp']))"
    )
    params = StdioServerParameters(command=sys.executable, args=["-c", debug], env=env)
    said: list[str] = []
    with (tmp_path / "stderr").open("w+") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await asyncio.wait_for(session.initialize(), timeout(20))
            calls: list[tuple[str, dict[str, Any]]] = [
                ("publish", {"events": [{"entity_id": "stdio/x", "properties": {"v": 1}}]}),
                ("publish", {"events": [{"entity_id": "alpha/x", "properties": {"v": 1}}]}),
                ("get", {"entity_id": "stdio/x"}),
                ("list", {"namespace": "stdio"}),
            ]
            for tool, arguments in calls:
                result = await asyncio.wait_for(session.call_tool(tool, arguments), timeout(30))
                said.append(f"{tool} {'refused' if result.isError else 'ok'}")
                world.record("flux mcp", result.model_dump_json())
        errlog.seek(0)
        stderr = errlog.read()
    assert said == ["publish ok", "publish refused", "get ok", "list ok"]
    assert " DEBUG" in stderr or "DEBUG:" in stderr  # it did log at DEBUG
    clear, hashed = _secrets(world)
    assert not [line for line in stderr.splitlines() if any(s in line for s in clear + hashed)]


# ---------------------------------------------------------------------- tokens never shown


def _secrets(world: World) -> tuple[list[str], list[str]]:
    """(clear secrets, and SHA-256 hex of the tokens among them)."""
    tokens = [*world.tokens.values(), ADMIN, WRONG]
    clear = [*tokens, CONNECTOR_SECRET, POLLER_SECRET, TAP_SECRET]
    return clear, [hashlib.sha256(t.encode()).hexdigest() for t in tokens]


async def _redis_values(store: Store, key: str) -> str:
    """Everything a key holds, as text (for a substring search)."""
    client = store.client
    kind = cast("bytes", await client.type(key)).decode()
    if kind == "string":
        value: Any = await client.get(key)
    elif kind == "hash":
        value = await client.hgetall(key)
    elif kind == "list":
        value = await client.lrange(key, 0, -1)
    elif kind == "set":
        value = await client.smembers(key)
    elif kind == "zset":
        value = await client.zrange(key, 0, -1)
    elif kind == "stream":
        value = await client.xrange(key)
    else:
        value = kind
    return repr(value)


#: Loggers left out of the log check: the test's own WebSocket client (it logs the
#: headers it sends), its own HTTP client (it logs the URLs it requests, ``?token=``
#: of an event stream included), and websockets' protocol inside the hub (its own
#: test, below).
CLIENT_LOGGER = "websockets.client"
HTTP_CLIENT_LOGGER = "httpx"
PROTOCOL_LOGGER = "hub.ws.protocol"


def _files_holding(secret: str, data: Path) -> list[Path]:
    """Files of the taps' run folders (``flux-tap-*`` in the temp dir) or of ``data``
    that hold ``secret``."""
    files = [*Path(tempfile.gettempdir()).glob("flux-tap-*/*"), *data.rglob("*")]
    return [f for f in files if f.is_file() and secret.encode() in f.read_bytes()]


async def test_no_token_in_responses_frames_keys_or_metrics(world: World) -> None:
    await observed(world)  # (when run alone: some WebSocket traffic at least)
    clear, hashed = _secrets(world)
    assert len(world.seen) > 100
    for secret in clear:
        assert not [(where, text) for where, text in world.seen if secret in text]
    store = world.store
    keys = [k.decode() async for k in store.client.scan_iter(match=store.keys.prefix + ":*")]
    assert len(keys) > 10
    for key in keys:
        assert not [s for s in clear + hashed if s in key], key
        values = await _redis_values(store, key)
        assert not [s for s in clear if s in values], key
    metrics = (await world.http.get("/metrics")).text
    assert "flux_events_accepted_total" in metrics
    assert not [s for s in clear + hashed if s in metrics]
    # A tap's config file (secrets included) lives only while the tap runs.
    assert _files_holding(TAP_SECRET, world.folder) == []


async def test_no_token_in_the_hubs_log_lines(world: World, log_records: LogRecords) -> None:
    await observed(world)
    clear, hashed = _secrets(world)
    lines = [
        (name, text)
        for name, text in log_records.lines
        if name not in (CLIENT_LOGGER, HTTP_CLIENT_LOGGER, PROTOCOL_LOGGER)
    ]
    assert any(name.startswith("hub.") for name, _ in lines)
    for secret in clear + hashed:
        assert not [line for line in lines if secret in line[1]]


async def test_no_token_in_websockets_debug_log(world: World, log_records: LogRecords) -> None:
    # websockets' protocol logs, at DEBUG, the upgrade's request line (with
    # ?token=…), every header (Authorization: Bearer …) and every frame (auth frames
    # carry a token). The hub's copy of that logger must stay quiet.
    await observed(world)
    clear, _ = _secrets(world)
    lines = [text for name, text in log_records.lines if name == PROTOCOL_LOGGER]
    for secret in clear:
        assert not [line for line in lines if secret in line]


async def test_flux_serve_at_debug_logs_no_token(redis_url: str, tmp_path: Path) -> None:
    # The way operators run it: `flux serve` at DEBUG, stderr read back. Every way a
    # token reaches the hub: REST headers, a WebSocket upgrade's header and ?token=,
    # an auth frame, on both WebSocket protocols, and /mcp.
    port = free_port()
    env = {
        **os.environ,
        "FLUX_KEY_PREFIX": "t" + uuid.uuid4().hex[:12],
        "FLUX_LOG_LEVEL": "debug",
        "FLUX_AUTH_ENABLED": "true",
        "FLUX_PRIVATE_READS": "true",
        "FLUX_ADMIN_TOKEN": ADMIN,
    }
    args = ["-m", "hub.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    stderr = tmp_path / "stderr"
    with stderr.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *args, "--redis", redis_url, env=env, stdout=sink, stderr=sink
        )
        try:
            await _until_listening(port)
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=timeout(10)) as http:
                admin = {"Authorization": f"Bearer {ADMIN}"}
                registered = await http.post(
                    "/api/namespaces", json={"name": "alpha"}, headers=admin
                )
                token = registered.json()["token"]
                bearer = {"Authorization": f"Bearer {token}"}
                assert (
                    await http.post("/api/events", json=event("alpha/x", v=1), headers=bearer)
                ).status_code == 200
                assert (await http.get("/api/state/entities", headers=bearer)).status_code == 200
                url = f"ws://127.0.0.1:{port}/api/ws"
                async with websockets.connect(url, additional_headers=bearer) as compat:
                    await compat.send(json.dumps({"type": "subscribe", "entity_id": "*"}))
                async with websockets.connect(
                    f"{url}?token={token}", subprotocols=[Subprotocol("flux.v1")]
                ) as native:
                    await native.send(json.dumps({"type": "auth", "ref": 1, "token": token}))
                    assert json.loads(await native.recv())["type"] == "authenticated"
                # MCP over HTTP: its publish goes over the hub's loopback WebSocket.
                mcp = {**MCP_ACCEPT, **bearer}
                opened = await http.post("/mcp", json=MCP_INIT, headers=mcp)
                mcp["mcp-session-id"] = opened.headers["mcp-session-id"]
                done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
                assert (await http.post("/mcp", json=done, headers=mcp)).status_code == 202
                publish = tool("publish", events=[{"entity_id": "alpha/m", "properties": {}}])
                call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": publish}
                answer = (await http.post("/mcp", json=call, headers=mcp)).json()
                assert answer["result"]["isError"] is False, answer
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), timeout(20))
    text = stderr.read_text()
    assert " DEBUG " in text  # it did log at DEBUG
    for secret in (token, ADMIN, hashlib.sha256(token.encode()).hexdigest()):
        assert secret not in text


async def _until_listening(port: int) -> None:
    async def listening() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        return True

    await until(listening, 20)


# ---------------------------------------------------------------------- the docs


def render_matrix() -> str:
    """The matrix as docs/security.md shows it (between its ``matrix`` markers)."""
    head = ["Path", "Mode", *(CRED_TITLES[c] for c in CREDS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in ROWS:
        modes = ["both"] if row.private is None or row.private == row.public else list(MODES)
        for mode in modes:
            expected = row.expected("public" if mode == "both" else mode)
            lines.append("| " + " | ".join([row.name, mode, *(expected[c] for c in CREDS)]) + " |")
    legend = [f"- `{name}`: {text.replace('{ns}', '<ns>')}" for name, text in MESSAGES.items()]
    return "\n".join(
        [*lines, "", "Messages (each an exact `error` or `message` string):", "", *legend]
    )


def test_security_md_shows_this_matrix() -> None:
    text = SECURITY_MD.read_text()
    start, end = "<!-- matrix:start -->\n", "\n<!-- matrix:end -->"
    shown = text[text.index(start) + len(start) : text.index(end)]
    assert shown == render_matrix(), (
        "regenerate: python -c 'from tests.test_auth_matrix import render_matrix; print(render_matrix())'"
    )
