"""``GET /api/stream`` (Server-Sent Events) on a real hub, with real clients: curl,
httpx, raw sockets. The browser's EventSource is tests/test_sse_browser.py.

Each replica applies every event and checks it (tests/native_client.py ``Replica``:
a delta's ``base`` must be the version held, so a gap or a duplicate fails), and ends
equal to what REST shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hub.store import Store

from .conftest import hub_on_own_store, make_settings, running_hub, timeout
from .native_client import Replica, event, rest_state
from .sse_client import SseReader, client, open_stream

CURL = shutil.which("curl")


async def publish(http: httpx.AsyncClient, *events: dict[str, Any]) -> None:
    reply = await http.post("/api/events/batch", json={"events": list(events)})
    assert reply.status_code == 200, reply.text


async def follow(reader: SseReader, replica: Replica, until: str) -> list[str]:
    """Apply events until one named ``until``; return the event names seen."""
    seen = []
    while True:
        found = await asyncio.wait_for(reader.next(), timeout(10))
        seen.append(found.event)
        replica.apply(found.data)
        if found.event == until:
            return seen


async def until_equal(reader: SseReader, replica: Replica, base_url: str, prefix: str) -> None:
    """Apply events until the replica equals REST's state of ``prefix``."""
    want = await rest_state(base_url, prefix)
    async with asyncio.timeout(timeout(10)):
        while replica.state() != want:
            replica.apply((await reader.next()).data)


@pytest.mark.skipif(CURL is None, reason="no curl")
async def test_curl_reads_a_snapshot_then_deltas(base_url: str, http: httpx.AsyncClient) -> None:
    await publish(http, event("crew/task-1", state="open"))
    assert CURL is not None
    curl = await asyncio.create_subprocess_exec(
        CURL, "-sN", f"{base_url}/api/stream?namespaces=crew", stdout=asyncio.subprocess.PIPE
    )
    assert curl.stdout is not None
    lines: list[bytes] = []
    try:
        async with asyncio.timeout(timeout(10)):
            while b"event: synced\n" not in lines:
                lines.append(await curl.stdout.readline())
            await publish(http, event("crew/task-1", owner="w3"))
            while not lines[-1].startswith(b"data: {") or b'"owner"' not in lines[-1]:
                lines.append(await curl.stdout.readline())
    finally:
        curl.terminate()
        await curl.wait()
    text = b"".join(lines).decode()
    assert text.startswith("retry: 2000\n\nevent: subscribed\n")
    assert '"entities":[{"id":"crew/task-1","properties":{"state":"open"},"version":1' in text
    # The delta has the resume position as its id.
    delta_at = lines.index(b"event: delta\n")
    event_id = lines[delta_at + 1].decode()
    assert event_id.startswith("id: ") and '"position":"' + event_id[4:].strip() in text
    assert '"base":1,"version":2,"set":{"owner":"w3"}' in text


async def test_last_event_id_resumes_with_nothing_missed_or_doubled(
    base_url: str, http: httpx.AsyncClient
) -> None:
    replica = Replica()
    await publish(http, *[event(f"r/{n}", v=0) for n in range(5)])
    async with open_stream(http, "prefixes=r/") as reader:
        await follow(reader, replica, "synced")
        assert reader.last_event_id == replica.cursor_text()
        await publish(http, *[event(f"r/{n}", v=1) for n in range(5)])
        await until_equal(reader, replica, base_url, "r/")
        last = reader.last_event_id
    # Missed while away: changes, a creation and a deletion.
    await publish(http, event("r/1", v=2), event("r/9", v=0), event("r/2", v=3))
    assert (await http.delete("/api/state/entities/r/3")).status_code == 200
    await publish(http, event("other/1", v=0))  # outside the filter
    for header in (True, False):
        copy = Replica()
        copy.entities = {
            k: type(v)(v.version, dict(v.properties)) for k, v in replica.entities.items()
        }
        # The browser sends the header (to the same URL); other clients the query.
        query, headers = ("prefixes=r/", {"Last-Event-ID": last})
        if not header:
            query, headers = (f"prefixes=r/&lastEventId={last}", {})
        async with open_stream(http, query, headers) as reader:
            names = await follow(reader, copy, "synced")
            assert names[0] == "subscribed" and "snapshot" not in names
            assert copy.state() == await rest_state(base_url, "r/")
            assert copy.deltas == 4  # exactly the four missed


async def test_a_resume_the_log_no_longer_reaches_gets_a_reset_and_a_snapshot(
    redis_url: str, key_prefix: str
) -> None:
    settings = make_settings(key_prefix, log={"delta_log_maxlen": 1000})
    async with hub_on_own_store(redis_url, settings) as hub:
        base_url = f"http://127.0.0.1:{hub.port}"
        async with client(base_url) as http:
            replica = Replica()
            await publish(http, event("old", v=0))
            async with open_stream(http, "all=true") as reader:
                await follow(reader, replica, "synced")
                stale = reader.last_event_id
            for n in range(30):
                await publish(http, *[event(f"x/{n}", v=i) for i in range(100)])
            async with open_stream(http, "all=true", {"Last-Event-ID": stale}) as reader:
                reset = await asyncio.wait_for(reader.until("reset"), timeout(10))
                assert "no longer reaches back" in reset.data["reason"]
                assert reset.id == ""  # clears the browser's: a reconnection starts afresh
                replica.apply(reset.data)
                await follow(reader, replica, "synced")
                assert reader.last_event_id != ""
                assert replica.state() == await rest_state(base_url)


@pytest.mark.parametrize(
    ("query", "headers", "message"),
    [
        ("", {}, "filter matches nothing: give all, ids, prefixes, namespaces or globs"),
        ("ids=a&colour=red", {}, "unknown query parameter 'colour'"),
        ("ids=a&sub=x&sub=y", {}, "query parameter 'sub' given twice"),
        ("all=maybe", {}, "query parameter 'all' must be true or false, not 'maybe'"),
        ("ids=a&snapshot=2", {}, "query parameter 'snapshot' must be true or false"),
        ("ids=a&from=yesterday", {}, "query parameter 'from' is not a cursor"),
        ("ids=a&lastEventId=x", {}, "query parameter 'lastEventId' is not a cursor"),
        ("ids=a", {"Last-Event-ID": "1-0,1-1"}, "Last-Event-ID is not a cursor"),
        ("ids=a&where={", {}, "query parameter 'where' is not JSON"),
        ("ids=a&sub=", {}, "query parameter 'sub': String should have at least 1 character"),
        (
            "globs=" + "&globs=".join("g" * 101),
            {},
            "query parameter 'globs': List should have at most 100 items",
        ),
    ],
)
async def test_bad_parameters_get_a_400_naming_them(
    http: httpx.AsyncClient, query: str, headers: dict[str, str], message: str
) -> None:
    reply = await http.get(f"/api/stream?{query}", headers=headers)
    assert reply.status_code == 400, reply.text
    assert reply.json()["code"] == "bad_request"
    assert message in reply.json()["error"]


async def test_heartbeats_and_retry_advice(store: Store, key_prefix: str) -> None:
    settings = make_settings(
        key_prefix, fanout={"sse_heartbeat_interval": 0.2, "sse_retry_ms": 750}
    )
    async with running_hub(settings, store) as hub, client(f"http://127.0.0.1:{hub.port}") as http:
        async with open_stream(http, "ids=nothing/here") as reader:
            await reader.until("synced")
            await asyncio.sleep(0.7)
            await publish(http, event("nothing/here", v=1))
            await reader.until("delta")
            assert reader.retry == 750
            assert reader.comments.count("heartbeat") >= 2


async def test_hub_shutdown_ends_the_stream_with_a_close_event(
    store: Store, key_prefix: str
) -> None:
    async with running_hub(make_settings(key_prefix), store) as hub:
        http = client(f"http://127.0.0.1:{hub.port}")
        request = http.build_request("GET", "/api/stream?all=true")
        response = await http.send(request, stream=True)
        reader = SseReader(response)
        await reader.until("synced")
    try:
        close = await asyncio.wait_for(reader.until("close"), timeout(5))
        assert close.data == {
            "type": "close",
            "code": "shutting_down",
            "reason": "server shutting down",
        }
        with pytest.raises(EOFError):
            await reader.next()
    finally:
        await response.aclose()
        await http.aclose()


async def test_resume_after_a_hub_restart(store: Store, key_prefix: str) -> None:
    replica = Replica()
    async with running_hub(make_settings(key_prefix), store) as hub:
        base_url = f"http://127.0.0.1:{hub.port}"
        async with client(base_url) as http, open_stream(http, "namespaces=plant") as reader:
            await follow(reader, replica, "synced")
            await publish(http, event("plant/a", t=1))
            await follow(reader, replica, "delta")
            last = reader.last_event_id
            assert last
    # Written while no hub serves this reader (through another hub on the same Redis).
    async with running_hub(make_settings(key_prefix), store) as hub:
        base_url = f"http://127.0.0.1:{hub.port}"
        async with client(base_url) as http:
            await publish(http, event("plant/a", t=2), event("plant/b", t=1))
    async with running_hub(make_settings(key_prefix), store) as hub:
        base_url = f"http://127.0.0.1:{hub.port}"
        async with (
            client(base_url) as http,
            open_stream(http, "namespaces=plant", {"Last-Event-ID": last}) as reader,
        ):
            names = await follow(reader, replica, "synced")
            assert "snapshot" not in names and "reset" not in names
            assert replica.state() == await rest_state(base_url, "plant/")
            assert replica.deltas == 3


async def test_connection_limits_apply_to_streams(store: Store, key_prefix: str) -> None:
    settings = make_settings(key_prefix, gateway={"max_connections_per_client": 3})
    async with running_hub(settings, store) as hub:
        base_url = f"http://127.0.0.1:{hub.port}"
        async with contextlib.AsyncExitStack() as stack:
            readers = []  # (kept: a reader dropped closes its stream)
            for _ in range(3):
                # A client each: one connection each, held by its stream.
                http = await stack.enter_async_context(client(base_url))
                readers.append(await stack.enter_async_context(open_stream(http, "all=true")))
                await readers[-1].until("synced")
            # The fourth is refused as soon as it connects.
            reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
            writer.write(b"GET /api/stream?all=true HTTP/1.1\r\nhost: x\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), timeout(5))
            writer.close()
            assert answer.startswith(b"HTTP/1.1 429 ")
            assert b"too many connections from your address" in answer


def _raw_stream(port: int, query: str) -> socket.socket:
    """A stream whose reader reads nothing (a small receive window, soon full)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /api/stream?{query} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    return sock


async def _read_all(sock: socket.socket) -> bytes:
    """Everything left on a socket until the hub closes it."""
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    chunks = []
    async with asyncio.timeout(timeout(20)):
        while data := await loop.sock_recv(sock, 1 << 16):
            chunks.append(data)
    return b"".join(chunks)


async def test_a_slow_consumer_is_conflated_then_closed_and_resumes(
    store: Store, key_prefix: str
) -> None:
    fanout = {
        "conflate_after_bytes": 16 * 1024,
        "max_send_buffer_bytes": 64 * 1024,
        "max_pending_entities": 50,
    }
    async with running_hub(make_settings(key_prefix, fanout=fanout), store) as hub:
        base_url = f"http://127.0.0.1:{hub.port}"
        sock = _raw_stream(hub.port, "prefixes=slow/")
        try:
            async with client(base_url) as http:
                await asyncio.sleep(0.2)
                blob = "x" * 8000  # changed every round: each delta carries ~8 KB
                # Until the hub merges: the kernel's buffers are full, then its own.
                async with asyncio.timeout(timeout(20)):
                    round_ = 0
                    while hub.streams.statistics().conflated == 0:
                        round_ += 1
                        await publish(
                            http,
                            *[event(f"slow/{n}", blob=f"{round_}{blob}") for n in range(40)],
                        )
                [session] = hub.streams.sessions
                body = session.body
                assert body is not None and body.buffered <= 64 * 1024 + 40 * 9000
                # Then more entities than may be pending: the stream ends.
                await publish(http, *[event(f"slow/more-{n}", v=0) for n in range(60)])
                async with asyncio.timeout(timeout(10)):
                    while hub.streams.sessions:  # noqa: ASYNC110 - the hub's own state
                        await asyncio.sleep(0.05)
                raw = await _read_all(sock)
        finally:
            sock.close()
        text = raw.decode(errors="replace")
        assert "event: close\n" in text
        assert '"code":"slow_consumer"' in text
        assert text.rstrip().endswith("0")  # the body ended (last chunk)
        # What it read is a prefix of a valid stream: resume from its last id.
        last = [line[4:] for line in text.splitlines() if line.startswith("id: ")][-1]
        async with client(base_url) as http:
            async with open_stream(http, "prefixes=slow/", {"Last-Event-ID": last}) as reader:
                await reader.until("synced")


ADMIN = {"Authorization": "Bearer admin-secret"}


@contextlib.asynccontextmanager
async def private_hub(
    store: Store, key_prefix: str, namespace: str
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A Public-mode hub with private reads, admin token ``admin-secret``: a client
    of it and the token of a namespace created there."""
    gateway = {"auth_enabled": True, "admin_token": "admin-secret", "private_reads": True}
    async with running_hub(make_settings(key_prefix, gateway=gateway), store) as hub:
        async with client(f"http://127.0.0.1:{hub.port}") as http:
            reply = await http.post("/api/namespaces", json={"name": namespace}, headers=ADMIN)
            yield http, reply.json()["token"]


async def test_private_reads_need_a_token_header_or_query(store: Store, key_prefix: str) -> None:
    async with private_hub(store, key_prefix, "alpha") as (http, token):
        bearer = {"Authorization": f"Bearer {token}"}
        await publish_as(http, bearer, event("alpha/a", v=1))
        for query, headers, status, message in [
            ("namespaces=alpha", {}, 401, "Authorization token not provided"),
            ("namespaces=alpha&token=nope", {}, 401, "Invalid token"),
            ("namespaces=alpha", {"Authorization": "Bearer nope"}, 401, "Invalid token"),
            (f"namespaces=beta&token={token}", {}, 403, "the filter matches nothing"),
        ]:
            reply = await http.get(f"/api/stream?{query}", headers=headers)
            assert reply.status_code == status, (query, reply.text)
            assert message in reply.json()["error"]
        for query, headers in [
            ("all=true", bearer),
            (f"all=true&token={token}", {}),
        ]:
            async with open_stream(http, query, headers) as reader:
                snapshot = await reader.until("snapshot")
                # all=true, confined to what the token reads.
                assert [e["id"] for e in snapshot.data["entities"]] == ["alpha/a"]


async def publish_as(http: httpx.AsyncClient, headers: dict[str, str], *events: Any) -> None:
    reply = await http.post("/api/events/batch", json={"events": list(events)}, headers=headers)
    assert reply.status_code == 200, reply.text


async def test_a_where_stream_shows_what_matches_at_every_position(
    base_url: str, http: httpx.AsyncClient
) -> None:
    """Entering (a created delta with the whole state), leaving (``left``), and a
    resume that ends with exactly what matches."""
    await publish(http, event("crew/a", state="open", n=1), event("crew/b", state="done", n=1))
    query = "namespaces=crew&where=" + quote('{"state": "open"}')
    view: dict[str, dict[str, Any]] = {}

    def apply(found: Any) -> None:
        frame = found.data
        if frame["type"] == "snapshot":
            view.update({e["id"]: e["properties"] for e in frame["entities"]})
        elif frame["type"] == "delta":
            view[frame["id"]] = (
                frame["set"] if frame.get("created") else {**view[frame["id"]], **frame["set"]}
            )
        elif frame["type"] in ("deleted", "left"):
            view.pop(frame["id"], None)

    async def until_view(reader: SseReader) -> None:
        listed = await http.get("/api/state/entities", params={"prefix": "crew/"})
        want = {
            e["id"]: e["properties"] for e in listed.json() if e["properties"]["state"] == "open"
        }
        async with asyncio.timeout(timeout(10)):
            while view != want:
                apply(await reader.next())

    async with open_stream(http, query) as reader:
        await until_view(reader)
        assert set(view) == {"crew/a"}
        await publish(http, event("crew/b", state="open"), event("crew/a", state="done"))
        while (found := await asyncio.wait_for(reader.next(), timeout(10))).event != "left":
            apply(found)
        assert found.data["id"] == "crew/a" and found.id  # a position: it has an id
        apply(found)
        await until_view(reader)
        assert view == {"crew/b": {"state": "open", "n": 1}}  # entered with its whole state
        last = reader.last_event_id
    await publish(http, event("crew/a", state="open", n=2), event("crew/b", state="closed"))
    async with open_stream(http, query, {"Last-Event-ID": last}) as reader:
        await until_view(reader)
        assert view == {"crew/a": {"state": "open", "n": 2}}
        await reader.until("synced")


async def test_a_where_that_does_not_parse_is_a_400(http: httpx.AsyncClient) -> None:
    reply = await http.get("/api/stream?all=true&where=" + quote('{"load": {"lt": [1]}}'))
    assert reply.status_code == 400, reply.text
    assert "where.load.lt" in reply.json()["error"]


async def test_browsers_may_send_last_event_id_across_origins(http: httpx.AsyncClient) -> None:
    reply = await http.options(
        "/api/stream",
        headers={
            "origin": "http://page.example",
            "access-control-request-method": "GET",
            "access-control-request-headers": "last-event-id",
        },
    )
    assert reply.status_code in (200, 204)
    allowed = {h.strip() for h in reply.headers["access-control-allow-headers"].split(",")}
    assert "last-event-id" in allowed


async def test_a_stream_ends_when_its_namespace_is_deleted(store: Store, key_prefix: str) -> None:
    async with private_hub(store, key_prefix, "gone") as (http, token):
        async with open_stream(http, f"all=true&token={token}") as reader:
            await reader.until("synced")
            reply = await http.delete("/api/namespaces/gone", headers=ADMIN)
            assert reply.status_code in (200, 204), reply.text
            error = await asyncio.wait_for(reader.until("error"), timeout(10))
            assert error.data["code"] == "unauthorized"
            close = await asyncio.wait_for(reader.until("close"), timeout(10))
            assert close.data["code"] == "unauthorized"
            with pytest.raises(EOFError):
                await reader.next()


async def test_metrics_count_event_streams(http: httpx.AsyncClient, base_url: str) -> None:
    def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    async with client(base_url) as other, open_stream(other, "all=true") as reader:
        await reader.until("synced")
        shown = samples((await http.get("/metrics")).text)
        assert shown[("flux_connections", (("kind", "sse"),))] == 1
        assert shown[("flux_subscriptions", (("protocol", "sse"),))] == 1
        # The scraping connection is the one plain HTTP connection.
        assert shown[("flux_connections", (("kind", "http"),))] == 1
    async with asyncio.timeout(timeout(5)):
        sse = ("flux_connections", (("kind", "sse"),))
        while samples((await http.get("/metrics")).text)[sse]:  # noqa: ASYNC110 - polls the hub
            await asyncio.sleep(0.05)


async def test_a_hub_that_falls_behind_its_log_resets_streams(
    redis_url: str, key_prefix: str
) -> None:
    # One script call appends 3,000 deltas to a log kept at ~1,000: the hub's own
    # reader cannot see them all before they are trimmed (as tests/test_native_sync.py).
    settings = make_settings(key_prefix, log={"delta_log_maxlen": 1000}, ingest={"max_batch": 5000})
    async with hub_on_own_store(redis_url, settings) as hub:
        base_url = f"http://127.0.0.1:{hub.port}"
        async with client(base_url) as http, open_stream(http, "all=true") as reader:
            replica = Replica()
            await follow(reader, replica, "synced")
            await publish(http, *[event(f"g/{n % 40}", n=n) for n in range(3000)])
            reset = await asyncio.wait_for(reader.until("reset"), timeout(10))
            assert "fell behind" in reset.data["reason"]
            assert reset.id == "" and reader.last_event_id == ""  # no resume into a gap
            replica.apply(reset.data)
            await follow(reader, replica, "synced")
            assert reader.last_event_id != ""
            await until_equal(reader, replica, base_url, "")
            assert hub.fanout.gaps >= 1
