"""hub.transport.h1 and hub.transport.responses without an event loop: bytes in, events out.

The policy tested here is the one docs/limits.md states; the differential test against
h11 is tests/test_h1_differential.py.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.transport.h1 import (
    CONTINUE,
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    Event,
    H1Connection,
    Rejection,
    Request,
    Upgrade,
)
from hub.transport.responses import Response, serialize_head, serialize_response

from .h1_requests import Spec, body_limit, feed, render, specs, split

POST = b"POST /api/events?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}"


def parse(data: bytes, **options: int) -> list[Event]:
    connection = H1Connection(body_limit, client="1.2.3.4:5", **options)
    connection.receive_data(data)
    return connection.events_received()


def refusal(data: bytes, **options: int) -> tuple[int, str]:
    events = parse(data, **options)
    assert len(events) == 1 and isinstance(events[0], Rejection), events
    return events[0].status, events[0].message


def head(*fields: str, version: str = "1.1") -> bytes:
    lines = "".join(f"{f}\r\n" for f in fields)
    return f"GET / HTTP/{version}\r\n{lines}\r\n".encode("latin-1")


# ---------------------------------------------------------------------- requests


def test_connection_parses_a_request_with_a_body() -> None:
    assert parse(POST) == [
        Request(
            method="POST",
            path="/api/events",
            query_string="x=1",
            headers={"host": "h", "content-length": "2"},
            body=b"{}",
            client="1.2.3.4:5",
            raw_headers=[(b"Host", b"h"), (b"Content-Length", b"2")],
            target="/api/events?x=1",
        )
    ]


def test_connection_parses_pipelined_requests_in_order() -> None:
    events = parse(POST + head("Host: h") + POST)
    assert [(e.method, e.path) for e in events if isinstance(e, Request)] == [
        ("POST", "/api/events"),
        ("GET", "/"),
        ("POST", "/api/events"),
    ]


def test_connection_ignores_bytes_after_a_request_that_asks_to_close() -> None:
    connection = H1Connection(body_limit)
    connection.receive_data(head("Connection: close") + b"GARBAGE\r\n\r\n" + POST)
    [request] = connection.events_received()
    assert isinstance(request, Request) and not request.keep_alive
    assert connection.closed
    connection.receive_data(POST)
    assert connection.events_received() == []


def test_connection_keeps_http_1_0_open_only_when_asked() -> None:
    [closing] = parse(head(version="1.0"))
    [staying] = parse(head("Connection: keep-alive", version="1.0"))
    assert isinstance(closing, Request) and isinstance(staying, Request)
    assert (closing.keep_alive, staying.keep_alive) == (False, True)


def test_connection_closes_after_an_http_1_0_request_with_chunked_framing() -> None:
    # RFC 9112 §6.1: the framing of an HTTP/1.0 message with Transfer-Encoding is faulty.
    data = (
        b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    [request] = parse(data)
    assert isinstance(request, Request) and not request.keep_alive


def test_connection_reads_a_chunked_body_and_drops_its_trailers() -> None:
    data = (
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2;ext=1\r\n{}\r\n1\r\n \r\n0\r\nAuthorization: sneaky\r\n\r\n"
    )
    [request] = parse(data)
    assert isinstance(request, Request)
    assert request.body == b"{} "
    assert "authorization" not in request.headers


def test_connection_strips_the_whitespace_around_field_values() -> None:
    [request] = parse(head("X-A: \t a b \t ", "X-B:"))
    assert isinstance(request, Request)
    assert request.raw_headers == [(b"X-A", b"a b"), (b"X-B", b"")]
    assert request.headers == {"x-a": "a b", "x-b": ""}


def test_connection_reads_absolute_and_asterisk_targets() -> None:
    [absolute] = parse(b"GET http://h:1/p?q#f HTTP/1.1\r\n\r\n")
    [bare] = parse(b"GET http://h HTTP/1.1\r\n\r\n")
    [star] = parse(b"OPTIONS * HTTP/1.1\r\n\r\n")
    assert isinstance(absolute, Request) and isinstance(bare, Request)
    assert (absolute.path, absolute.query_string, absolute.target) == (
        "/p",
        "q",
        "http://h:1/p?q#f",
    )
    assert bare.path == "/"
    assert isinstance(star, Request) and star.path == "*"


def test_connection_sends_100_continue_to_http_1_1_clients_that_expect_it() -> None:
    for version, expected in (("1.1", CONTINUE), ("1.0", b"")):
        connection = H1Connection(body_limit)
        connection.receive_data(head("Expect: 100-continue", "Content-Length: 1", version=version))
        assert connection.data_to_send() == expected
        assert connection.events_received() == []
        assert connection.reading


def test_connection_is_reading_only_while_a_request_is_incomplete() -> None:
    connection = H1Connection(body_limit)
    assert not connection.reading
    connection.receive_data(POST[:10])
    assert connection.reading and connection.requests_begun == 1
    connection.receive_data(POST[10:])
    assert not connection.reading
    assert len(connection.events_received()) == 1


def test_connection_hands_over_the_bytes_after_an_upgrade() -> None:
    data = head("Connection: Upgrade", "Upgrade: websocket") + b"\x81\x00frames"
    [upgrade] = parse(data)
    assert isinstance(upgrade, Upgrade)
    assert upgrade.data == b"\x81\x00frames"
    assert upgrade.request.headers["upgrade"] == "websocket"


def test_connection_hands_over_the_bytes_after_an_upgrade_across_a_window_mark() -> None:
    data = head("Connection: Upgrade", "Upgrade: websocket") + b"x" * 100
    [upgrade] = parse(data, max_head_bytes=len(data) - 50)
    assert isinstance(upgrade, Upgrade) and upgrade.data == b"x" * 100


# ---------------------------------------------------------------------- refusals


def test_connection_refuses_more_header_fields_than_the_cap_with_431() -> None:
    fields = [f"X-{i}: v" for i in range(MAX_HEADERS)]
    assert isinstance(parse(head(*fields))[0], Request)
    assert refusal(head(*fields, "X-Last: v")) == (431, "too many header fields: more than 100")


def test_connection_refuses_a_head_over_the_byte_cap_with_431() -> None:
    fits = "x" * (MAX_HEAD_BYTES - len("/") - len("X-Big"))
    assert isinstance(parse(head(f"X-Big: {fits}"))[0], Request)
    assert refusal(head(f"X-Big: {fits}x")) == (431, "request head too large")


def test_connection_refuses_an_endless_head_as_it_arrives() -> None:
    connection = H1Connection(body_limit)
    connection.receive_data(b"GET / HTTP/1.1\r\nX-Endless: ")
    for _ in range(2 * MAX_HEAD_BYTES // 4096 + 1):
        connection.receive_data(b"x" * 4096)
    assert connection.events_received() == [Rejection(431, "request head too large")]


def test_connection_refuses_endless_chunk_extensions_as_they_arrive() -> None:
    connection = H1Connection(body_limit, max_head_bytes=1024)
    connection.receive_data(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a=")
    connection.receive_data(b"b" * 4096)
    assert connection.events_received() == [
        Rejection(431, "request trailers or chunk extensions too large")
    ]


def test_connection_reads_a_long_chunked_body_across_many_windows() -> None:
    body = b"".join(b"1\r\n%c\r\n" % (65 + i % 26) for i in range(3000))
    [request] = parse(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n\r\n",
        max_head_bytes=256,
    )
    assert isinstance(request, Request) and len(request.body) == 3000


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (["Host: a", "host: b"], "repeated Host header"),
        (["Authorization: Bearer a", "Authorization: Bearer a"], "repeated Authorization header"),
        (["Content-Length: 0", "Content-Length: 0"], "repeated Content-Length header"),
        (
            ["Transfer-Encoding: gzip", "Transfer-Encoding: chunked"],
            "repeated Transfer-Encoding header",
        ),
        (
            ["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
            "invalid `Transfer-Encoding` header value",
        ),
        (
            ["Content-Length: 1", "Transfer-Encoding: chunked"],
            "Content-Length and Transfer-Encoding together",
        ),
        (
            ["Transfer-Encoding: chunked", "Content-Length: 1"],
            "Content-Length and Transfer-Encoding together",
        ),
    ],
)
def test_connection_refuses_ambiguous_framing_and_identity_with_400(
    fields: list[str], message: str
) -> None:
    status, text = refusal(head(*fields))
    assert (status, text.lower()) == (400, f"malformed http request: {message}".lower())


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (
            head("Transfer-Encoding: gzip"),
            501,
            "Transfer-Encoding 'gzip' is not supported: use chunked",
        ),
        (
            head("Transfer-Encoding: gzip, chunked"),
            501,
            "Transfer-Encoding 'gzip, chunked' is not supported: use chunked",
        ),
        (b"CONNECT h:443 HTTP/1.1\r\n\r\n", 501, "CONNECT is not supported"),
        (head(version="2.0"), 505, "HTTP/2.0 is not supported: use HTTP/1.1"),
        (b"GET /\r\n\r\n", 505, "HTTP/0.9 is not supported: use HTTP/1.1"),
        (
            head("Connection: upgrade", "Upgrade: websocket", "Content-Length: 2") + b"{}",
            400,
            "malformed HTTP request: an upgrade request cannot have a body",
        ),
    ],
    ids=["gzip", "gzip-chunked", "connect", "http2", "http09", "upgrade-body"],
)
def test_connection_refuses_what_it_does_not_implement(
    data: bytes, status: int, message: str
) -> None:
    assert refusal(data) == (status, message)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\nHost: h\n\n",  # bare LF
        head("X-A: a", " folded"),  # obs-fold
        head("X-A : a"),
        head("X-A: a\x00b"),
        head("X-A: a\x01b"),
        head("X(A: a"),
        b"get / HTTP/1.1\r\n\r\n",
        b"GET /a\x7f HTTP/1.1\r\n\r\n",
        head("Content-Length: +1"),
        head("Content-Length: 99999999999999999999"),
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\nx\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
    ids=[
        "bare-lf",
        "obs-fold",
        "space-before-colon",
        "nul",
        "ctl",
        "bad-name",
        "lowercase-method",
        "del-in-target",
        "signed-length",
        "length-overflow",
        "bad-chunk-size",
        "space-after-chunk-size",
        "chunk-longer-than-its-size",
        "chunk-size-overflow",
        "garbage",
    ],
)
def test_connection_refuses_malformed_requests_with_400(data: bytes) -> None:
    status, message = refusal(data)
    assert status == 400 and message.startswith("malformed HTTP request: ")


def test_connection_refuses_a_body_over_the_limit_from_its_content_length() -> None:
    connection = H1Connection(lambda method, path: (10, f"too big for {path}"))
    connection.receive_data(
        b"POST /p HTTP/1.1\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n"
    )
    assert connection.events_received() == [Rejection(413, "too big for /p")]
    assert connection.data_to_send() == b""  # no 100 Continue for a refused body


def test_connection_refuses_a_chunked_body_over_the_limit_as_it_streams() -> None:
    connection = H1Connection(lambda method, path: (1 << 20, "x"), max_body_bytes=10)
    connection.receive_data(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    connection.receive_data(b"6\r\n123456\r\n")
    assert connection.events_received() == []
    connection.receive_data(b"6\r\n123456\r\n")
    assert connection.events_received() == [Rejection(413, "x")]


def test_connection_raises_what_its_body_limit_raises() -> None:
    def broken(method: str, path: str) -> tuple[int, str]:
        raise LookupError(path)

    connection = H1Connection(broken)
    with pytest.raises(LookupError):
        connection.receive_data(POST)
    assert connection.closed


# ---------------------------------------------------------------------- fuzzing

OUTCOMES = {400, 413, 431, 501, 505}
LIMITS = [
    {},
    {"max_headers": 3, "max_head_bytes": 40},
    {"max_headers": 8, "max_head_bytes": 97, "max_body_bytes": 16},
]
mutations = st.lists(
    st.tuples(
        st.integers(0, 1 << 16),
        st.sampled_from(["insert", "delete", "replace"]),
        st.binary(min_size=1, max_size=3),
    ),
    max_size=3,
)


def mutate(data: bytes, edits: list[tuple[int, str, bytes]]) -> bytes:
    for position, kind, value in edits:
        at = position % (len(data) + 1)
        if kind == "insert":
            data = data[:at] + value + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + len(value) :]
        else:
            data = data[:at] + value + data[at + len(value) :]
    return data


def check_split_independence(data: bytes, cuts: list[int], limits: dict[str, int]) -> None:
    whole = feed([data], H1Connection(body_limit, client="c", **limits))
    pieces = feed(split(data, cuts), H1Connection(body_limit, client="c", **limits))
    assert pieces == whole
    events, _ = whole
    for i, item in enumerate(events):
        assert isinstance(item, Request | Upgrade | Rejection)
        if isinstance(item, Rejection):
            assert item.status in OUTCOMES and item.message
        if not isinstance(item, Request) or not item.keep_alive:
            assert i == len(events) - 1, "nothing follows the end of a connection"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=8), st.sampled_from(LIMITS))
def test_connection_reads_arbitrary_bytes_alike_however_they_are_split(
    data: bytes, cuts: list[int], limits: dict[str, int]
) -> None:
    check_split_independence(data, cuts, limits)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(specs(), min_size=1, max_size=3),
    mutations,
    st.lists(st.integers(0, 2000), max_size=8),
    st.sampled_from(LIMITS),
)
def test_connection_reads_mutated_requests_alike_however_they_are_split(
    requests: list[Spec],
    edits: list[tuple[int, str, bytes]],
    cuts: list[int],
    limits: dict[str, int],
) -> None:
    data = mutate(b"".join(render(r) for r in requests), edits)
    check_split_independence(data, cuts, limits)


def test_byte_by_byte_reading_matches_one_read() -> None:
    data = POST + head("Host: h", "Expect: 100-continue") + POST
    assert feed([bytes([b]) for b in data], H1Connection(body_limit)) == feed(
        [data], H1Connection(body_limit)
    )


# ---------------------------------------------------------------------- responses


@pytest.mark.parametrize("value", [b"a\r\nSet-Cookie: x=1", b"a\rb", b"a\nb", b"a\x00b"])
def test_serialize_head_refuses_cr_lf_or_nul_in_a_header_value(value: bytes) -> None:
    with pytest.raises(ValueError, match="x-next-cursor"):
        serialize_head(Response(headers=[(b"x-next-cursor", value)]), keep_alive=True)


@pytest.mark.parametrize("name", [b"", b"x a", b"x:y", b"x\r\ny", b"\xff"])
def test_serialize_head_refuses_a_header_name_that_is_not_a_token(name: bytes) -> None:
    with pytest.raises(ValueError, match="not a token"):
        serialize_head(Response(headers=[(name, b"v")]), keep_alive=True)


def test_serialize_head_refuses_cr_lf_in_the_content_type() -> None:
    with pytest.raises(ValueError, match="content type"):
        serialize_head(Response(content_type=b"text/plain\r\nx: y"), keep_alive=True)


def test_serialize_response_writes_headers_and_body() -> None:
    response = Response(201, b"{}", headers=[(b"etag", b'"1"'), (b"x-a", b"b\tc \x80")])
    data = serialize_response(response, keep_alive=False)
    head_, _, body = data.partition(b"\r\n\r\n")
    lines = head_.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 201 Created"
    assert b'etag: "1"' in lines and b"x-a: b\tc \x80" in lines
    assert b"content-length: 2" in lines and b"connection: close" in lines
    assert body == b"{}"


def test_serialize_response_of_304_has_neither_body_nor_length() -> None:
    data = serialize_response(Response(304, b"ignored"), keep_alive=True)
    assert data.endswith(b"\r\n\r\n") and b"content-length" not in data
    assert data.startswith(b"HTTP/1.1 304 Not Modified\r\n")
