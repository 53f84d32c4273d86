"""Hostile HTTP clients against a real hub: slowloris, huge or undecodable targets,
path traversal on the dashboard's files.

Every attack ends the same way: the attacker gets a clear error (or a documented
close), the hub then answers a normal request, and an entity published before the
attack (the *keeper*) is unchanged. Every connection comes from 127.0.0.1, so the caps
per client address are set per test.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hub import dashboard
from hub.app import Hub
from hub.store import Store
from hub.transport.h1 import H1Connection, Rejection, Request
from hub.transport.heads import OLDEST_OF_ADDRESS, OLDEST_ON_HUB, UnfinishedHeads
from hub.transport.http import HttpConnection, Response

from .attack import Keeper, StubApp
from .attack import exchange as _exchange
from .attack import status_and_body as _status_and_body
from .conftest import make_settings, running_hub, timeout

# ---------------------------------------------------------------------- helpers


def _status_and_error(response: bytes) -> tuple[int, str]:
    """The status of an error response and its message (``{"error": message, ...}``)."""
    status, body = _status_and_body(response)
    return status, body["error"]


@pytest.fixture
async def keeper(hub: Hub) -> Keeper:
    published = Keeper(f"http://127.0.0.1:{hub.port}")
    await published.publish()
    return published


# ---------------------------------------------------------------------- the caps, loop-free


def test_unfinished_heads_close_the_oldest_of_an_address_past_its_cap() -> None:
    heads: UnfinishedHeads[str] = UnfinishedHeads(timeout=1, max_total=10, max_per_client=2)
    assert heads.begin("a1", "A") == []
    assert heads.begin("b1", "B") == []
    assert heads.begin("a2", "A") == []
    assert heads.begin("a3", "A") == [("a1", OLDEST_OF_ADDRESS)]
    assert (len(heads), heads.of_client("A"), heads.evicted) == (3, 2, 1)
    assert "a1" not in heads and "b1" in heads


def test_unfinished_heads_close_the_oldest_on_the_hub_past_its_cap() -> None:
    heads: UnfinishedHeads[str] = UnfinishedHeads(timeout=1, max_total=2, max_per_client=5)
    heads.begin("a1", "A")
    heads.begin("b1", "B")
    assert heads.begin("c1", "C") == [("a1", OLDEST_ON_HUB)]
    assert heads.of_client("A") == 0 and len(heads) == 2


def test_unfinished_heads_forget_a_finished_head_and_renew_a_repeated_one() -> None:
    heads: UnfinishedHeads[str] = UnfinishedHeads(timeout=1, max_total=2, max_per_client=2)
    heads.begin("a1", "A")
    heads.begin("a2", "A")
    heads.end("a1")
    heads.end("a1")  # twice: nothing
    assert heads.begin("a3", "A") == []
    # a2's next request: now the newest, so a3 is the oldest.
    assert heads.begin("a2", "A") == []
    assert heads.begin("a4", "A") == [("a3", OLDEST_OF_ADDRESS)]


def test_unfinished_heads_refuse_a_cap_under_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        UnfinishedHeads(timeout=1, max_total=0, max_per_client=1)


def test_connection_is_reading_a_head_from_its_first_byte_to_its_end() -> None:
    h1 = H1Connection(lambda method, path: (1024, "too large"))
    assert not h1.reading_head
    h1.receive_data(b"POST /x HTTP/1.1\r\nhost: x\r\n")
    assert h1.reading_head and h1.reading
    h1.receive_data(b"content-length: 2\r\n\r\n{")
    assert not h1.reading_head and h1.reading
    h1.receive_data(b"}")
    assert not h1.reading_head and not h1.reading


@pytest.mark.parametrize(
    ("target", "bad"),
    [
        (b"/api/state/entities/%FF", "%FF"),
        (b"/api/state/entities?prefix=%C3%28", "%C3"),
        (b"/x/%E2%82", "%E2%82"),  # a sequence cut short
        (b"/static/%C0%AE%C0%AE/etc/passwd", "%C0"),  # an overlong '.'
    ],
)
def test_connection_refuses_a_target_not_utf8_once_decoded(target: bytes, bad: str) -> None:
    h1 = H1Connection(lambda method, path: (1024, "too large"))
    h1.receive_data(b"GET %b HTTP/1.1\r\nhost: x\r\n\r\n" % target)
    message = f"malformed HTTP request: the request target is not UTF-8 once decoded ({bad})"
    assert h1.events_received() == [Rejection(400, message)]


def test_connection_reads_percent_encoded_utf8_in_a_target() -> None:
    h1 = H1Connection(lambda method, path: (1024, "too large"))
    h1.receive_data(b"GET /api/state/entities/caf%C3%A9?p=%E2%82%AC HTTP/1.1\r\n\r\n")
    [request] = h1.events_received()
    assert isinstance(request, Request)
    assert request.path == "/api/state/entities/caf%C3%A9" and request.query == {"p": "€"}


# ---------------------------------------------------------------------- slowloris

#: Trickling sockets per test (each one a client socket and a hub socket).
TRICKLERS = 200
#: Seconds between two header lines of a trickling client.
TRICKLE_EVERY = 0.2
#: Connections the test hub accepts from one address.
SLOTS = 100
REFUSED = (429, "too many connections from your address: close some and try again")


async def _trickle(port: int, connected: Callable[[], None] = lambda: None) -> bytes:
    """Begin a request and send one more header line now and then, never ending the
    head; return what the hub answered before it stopped sending. ``connected`` is
    called once the connection is open (or could not be)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionError:
        connected()
        return b""
    connected()
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        answer = asyncio.ensure_future(reader.read())  # until the hub's EOF
        line = 0
        while True:
            done, _ = await asyncio.wait([answer], timeout=TRICKLE_EVERY)
            if done:
                return answer.result()
            writer.write(b"x-%d: %d\r\n" % (line, line))
            line += 1
            if line > 100:  # bounded: the hub has long failed this test by then
                answer.cancel()
                return b""
    except ConnectionError:
        return b""
    finally:
        writer.close()


async def _timed_get(port: int, path: str) -> tuple[float, tuple[int, Any]]:
    started = time.monotonic()
    response = await _exchange(
        port, b"GET %b HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n" % path.encode()
    )
    return time.monotonic() - started, _status_and_body(response)


@pytest.mark.parametrize(
    ("caps", "eviction"),
    [
        pytest.param({"max_unfinished_heads_per_client": 30}, OLDEST_OF_ADDRESS, id="per-address"),
        pytest.param({"max_unfinished_heads": 30}, OLDEST_ON_HUB, id="whole-hub"),
    ],
)
async def test_trickling_sockets_do_not_starve_a_normal_client_and_end_with_408(
    store: Store, key_prefix: str, caps: dict[str, int], eviction: str
) -> None:
    header_timeout = timeout(1.5)
    # Fewer connection slots than tricklers: without the caps they would hold them all.
    gateway = {
        "header_timeout": header_timeout,
        "request_timeout": 30.0,
        "max_connections_per_client": SLOTS,
        **caps,
    }
    async with running_hub(make_settings(key_prefix, gateway=gateway), store) as hub:
        keeper = Keeper(f"http://127.0.0.1:{hub.port}")
        await keeper.publish()
        heads = hub.gateway.heads
        started = time.monotonic()
        all_open = asyncio.Event()
        opened = 0

        def one_more() -> None:
            nonlocal opened
            opened += 1
            if opened == TRICKLERS:
                all_open.set()

        tricklers = [asyncio.ensure_future(_trickle(hub.port, one_more)) for _ in range(TRICKLERS)]
        # The normal client comes after every trickler has connected: until the hub
        # has accepted them all (refusing those past its slots), a newcomer may find
        # every slot taken, however the caps work; on a loaded machine that takes long.
        await asyncio.wait_for(all_open.wait(), timeout(10))
        # While they trickle, a normal client is answered promptly, again and again;
        # the table of unfinished heads never passes its cap.
        most = 0
        for _ in range(5):
            await asyncio.sleep(header_timeout / 6)
            most = max(most, len(heads))
            took, answer = await _timed_get(hub.port, f"/api/state/entities/{keeper.id}")
            assert answer == (200, keeper.before)
            assert took < timeout(1.0), f"a normal request took {took:.2f} s"
        answers = await asyncio.wait_for(asyncio.gather(*tricklers), header_timeout + timeout(5))
        ended = time.monotonic() - started
        assert 0 < most <= 30
        # Every trickling socket was answered and closed: refused (429) past the
        # connection slots, else 408, the oldest at the cap and the others at the
        # head deadline, long before the request timeout.
        outcomes = Counter(_status_and_error(a) for a in answers if a)
        deadline = (408, f"request head not complete within {header_timeout:g} s")
        assert set(outcomes) <= {(408, eviction), deadline, REFUSED}, outcomes
        assert sum(outcomes.values()) == TRICKLERS, outcomes
        assert outcomes[(408, eviction)] >= 30, outcomes
        assert outcomes[deadline] <= 30, outcomes
        assert ended < header_timeout + timeout(3)
        assert len(heads) == 0
        await keeper.check()


async def test_head_deadline_ends_a_head_that_keeps_coming_long_before_the_request_timeout(
    store: Store, key_prefix: str
) -> None:
    gateway = {"header_timeout": timeout(0.5), "request_timeout": 30.0}
    async with running_hub(make_settings(key_prefix, gateway=gateway), store) as hub:
        started = time.monotonic()
        answer = _status_and_error(await _trickle(hub.port))
        took = time.monotonic() - started
        assert answer == (408, f"request head not complete within {timeout(0.5):g} s")
        assert took < timeout(2.5)
        await _assert_served(hub.port)


async def test_first_head_is_due_from_the_moment_the_client_connected(
    store: Store, key_prefix: str
) -> None:
    header_timeout = timeout(1.0)
    gateway = {"header_timeout": header_timeout, "request_timeout": 30.0}
    async with running_hub(make_settings(key_prefix, gateway=gateway), store) as hub:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
        try:
            await asyncio.sleep(header_timeout * 0.8)  # silent first, then slow
            writer.write(b"GET /healthz HTTP/1.1\r\n")
            answer = await asyncio.wait_for(reader.read(), timeout(5))
            took = time.monotonic() - started
        finally:
            writer.close()
        assert _status_and_body(answer)[0] == 408
        # Counted from the first byte instead, it would have taken 1.8 s.
        assert took < header_timeout * 1.5


async def test_silent_connection_is_closed_after_the_header_timeout(
    store: Store, key_prefix: str
) -> None:
    gateway = {"header_timeout": timeout(0.3), "keepalive_timeout": 75.0}
    async with running_hub(make_settings(key_prefix, gateway=gateway), store) as hub:
        reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
        try:
            # No request began: nothing to answer, the hub just hangs up.
            assert await asyncio.wait_for(reader.read(), timeout(5)) == b""
        finally:
            writer.close()
        await _assert_served(hub.port)


async def test_head_completed_in_time_is_served_and_its_body_gets_the_request_timeout(
    store: Store, key_prefix: str
) -> None:
    gateway = {"header_timeout": timeout(0.6), "request_timeout": 30.0}
    async with running_hub(make_settings(key_prefix, gateway=gateway), store) as hub:
        body = json.dumps(
            {"stream": "t", "source": "s", "payload": {"entity_id": "slow/1", "properties": {}}}
        ).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
        try:
            for piece in [b"POST /api/events HTTP/1.1\r\n", b"host: x\r\nconnection: close\r\n"]:
                writer.write(piece)
                await asyncio.sleep(timeout(0.1))
            writer.write(b"content-length: %d\r\n\r\n" % len(body))
            # The head is complete: the body may take longer than the head deadline.
            await asyncio.sleep(timeout(0.9))
            writer.write(body)
            answer = await asyncio.wait_for(reader.read(), timeout(5))
        finally:
            writer.close()
        assert _status_and_body(answer)[0] == 200


class SlowApp(StubApp):
    """The smallest ``http.App`` whose handler takes longer than a request may."""

    request_timeout = 0.3

    async def handle(self, request: Request) -> Response:
        await asyncio.sleep(0.6)
        return Response(200, b"{}")


@pytest.mark.parametrize("header_timeout", [None, 0.2], ids=["request-timeout", "head-deadline"])
async def test_request_that_times_out_behind_a_slow_one_gets_408_after_its_answer(
    header_timeout: float | None,
) -> None:
    # The timer of a pipelined request fires while the one before it is handled: its
    # 408 waits for that answer (answers keep their order), then the hub hangs up.
    app = SlowApp()
    heads: UnfinishedHeads[HttpConnection] | None = None
    if header_timeout is not None:
        heads = UnfinishedHeads(timeout=header_timeout, max_total=10, max_per_client=10)
    server = await asyncio.get_running_loop().create_server(
        lambda: HttpConnection(app, heads), "127.0.0.1", 0
    )
    try:
        port = server.sockets[0].getsockname()[1]
        response = await _exchange(port, b"GET /slow HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n")
    finally:
        server.close()
        await server.wait_closed()
    first, _, second = response.partition(b"{}")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    message = "request timed out" if heads is None else "request head not complete within 0.2 s"
    assert _status_and_error(second) == (408, message)


async def _assert_served(port: int) -> None:
    healthz = await _exchange(port, b"GET /healthz HTTP/1.1\r\nconnection: close\r\n\r\n")
    assert _status_and_body(healthz) == (200, {"status": "ok"})


# ---------------------------------------------------------------------- huge requests


async def test_url_over_the_head_limit_gets_431(hub: Hub, keeper: Keeper) -> None:
    request = b"GET /api/state/entities/" + b"a" * 70_000 + b" HTTP/1.1\r\nhost: x\r\n\r\n"
    answer = _status_and_error(await _exchange(hub.port, request))
    assert answer == (431, "request head too large")
    await keeper.check()


@pytest.mark.parametrize(
    ("length", "status"),
    [
        (10 * 1024**3, 413),  # 10 GiB: refused from the number, nothing read
        (2**63, 413),
        (10**30, 400),  # more than llhttp's 64 bits: its own refusal
    ],
)
async def test_huge_content_length_is_refused_before_any_body(
    hub: Hub, keeper: Keeper, length: int, status: int
) -> None:
    head = b"POST /api/events/batch HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % length
    answer = _status_and_error(await _exchange(hub.port, head))
    assert answer[0] == status, answer
    expected = "payload too large" if status == 413 else "malformed HTTP request: "
    assert answer[1].startswith(expected), answer
    await keeper.check()


# ---------------------------------------------------------------------- undecodable targets


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (b"/api/state/entities/caf\xc3\xa9", "malformed HTTP request: Invalid char in url path"),
        (b"/api/state/entities/\xff", "malformed HTTP request: Invalid char in url path"),
        (b"/api/state/entities?prefix=\xff", "malformed HTTP request: Invalid char in url query"),
        (
            b"/api/state/entities/%ff%fe",
            "malformed HTTP request: the request target is not UTF-8 once decoded (%FF)",
        ),
        (
            b"/api/state/entities?prefix=%80",
            "malformed HTTP request: the request target is not UTF-8 once decoded (%80)",
        ),
        (
            b"/api/ws?token=%C3",
            "malformed HTTP request: the request target is not UTF-8 once decoded (%C3)",
        ),
    ],
)
async def test_target_that_is_not_utf8_gets_400_naming_it(
    hub: Hub, keeper: Keeper, target: bytes, message: str
) -> None:
    request = b"GET %b HTTP/1.1\r\nhost: x\r\n\r\n" % target
    assert _status_and_error(await _exchange(hub.port, request)) == (400, message)
    await keeper.check()


# ---------------------------------------------------------------------- path traversal

DASHBOARD = Path(dashboard.__file__).parent
SERVED = (".html", ".js", ".css", ".svg", ".json")
TRAVERSALS = [
    b"/static/../../etc/passwd",
    b"/static/../../../../../../etc/passwd",
    b"/static/..%2f..%2f..%2fetc%2fpasswd",
    b"/static/%2e%2e/%2e%2e/etc/passwd",
    b"/static/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    b"/static/%2E%2E%2F__init__.py",
    b"/static/%252e%252e%252fetc%252fpasswd",  # double-encoded
    b"/static/%25252e%25252e/etc/passwd",
    b"/static/..\\..\\etc\\passwd",
    b"/static/..%5c..%5cetc%5cpasswd",
    b"/static/..%255c__init__.py",
    b"/static/__init__.py",
    b"/static/../__init__.py",
    b"/static/..%2f__init__.py",
    b"/static/..%2fapi%2fstatic.py",
    b"/static/..%2f..%2fhub%2fconfig.py",
    b"/static/dashboard.js/../../config.py",
    b"/static//etc/passwd",
    b"/static/%2fetc%2fpasswd",
    b"/static/./index.html/../../__init__.py",
    b"/static/%00",
    b"/static/index.html%00.js",
    b"/static/index.html%00",
    b"/static/a\x00b",
    b"/static/%c0%ae%c0%ae/etc/passwd",
    b"/static/%e0%80%ae%e0%80%ae/etc/passwd",
    b"/index.html/../../etc/passwd",
    b"/..%2f..%2fetc%2fpasswd",
    b"http://x/static/../../etc/passwd",
    b"/static/%2e%2e",
    b"/static/...",
    b"/static/~/.ssh/id_rsa",
    b"/static/file:///etc/passwd",
]


def _secrets() -> list[bytes]:
    """Content that must never come back: files outside the dashboard directory."""
    found = [b"root:x:0:0", b"from __future__ import annotations", b"__all__"]
    passwd = Path("/etc/passwd")
    if passwd.exists():
        found.append(passwd.read_bytes().split(b"\n", 1)[0])
    return found


async def test_path_traversal_never_reaches_a_file_outside_the_dashboard(
    hub: Hub, keeper: Keeper
) -> None:
    secrets = _secrets()
    served = {p.name: p.read_bytes() for p in DASHBOARD.iterdir() if p.suffix in SERVED}
    wrong = []
    for target in TRAVERSALS:
        for method in (b"GET", b"HEAD"):
            request = b"%b %b HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n" % (method, target)
            response = await _exchange(hub.port, request)
            head, _, body = response.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            leaked = [s for s in secrets if s in response]
            if status not in (400, 404) or leaked:
                wrong.append((method, target, status, leaked))
            if method == b"GET":
                error = json.loads(body)["error"]
                assert error.startswith(("no such file", "no such endpoint", "malformed")), error
                assert not any(content in body for content in served.values() if content)
    assert not wrong, wrong
    # The dashboard's own files are still served.
    ok = await _exchange(
        hub.port, b"GET /static/dashboard.js HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    assert ok.startswith(b"HTTP/1.1 200") and ok.endswith(served["dashboard.js"])
    await keeper.check()
