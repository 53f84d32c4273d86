"""Hostile WebSocket clients: a fuzzer over the native protocol (both encodings) and the
compat protocol, and malformed frames written by hand after a real upgrade.

The fuzzer sends generated frames (valid ones, valid ones with a field mutated, random
JSON and MessagePack values, random bytes and text, frames over the soft limit) over one
connection per encoding, and checks the documented outcome of each:

- native: a frame that is not a valid request gets exactly one ``error`` frame, with the
  frame's ``ref`` whenever one could be read, and a message naming the mutated field;
  a valid one gets replies carrying its ``ref``; the connection survives;
- compat: invalid frames are ignored, and the connection survives.

Afterwards the hub answers a normal request and an entity published before (the
*keeper*) is unchanged. Malformed frames must end the connection with the RFC 6455 code
websockets uses: 1002 (protocol error), 1007 (not UTF-8), 1009 (too big).

``FLUX_TESTS_FUZZ_EXAMPLES`` (default 40) sets the examples per fuzzer, each a batch
of 1-4 frames; ``--hypothesis-show-statistics`` shows what the hub answered.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import msgpack
import orjson
import pytest
import websockets
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection

from hub.app import Hub
from hub.config import Settings
from hub.wire.frames import CLIENT_FRAMES

from .attack import Keeper
from .conftest import make_settings, timeout
from .native_client import JSON_PROTOCOL, MSGPACK_PROTOCOL, Native

#: The smallest frame limit the hub accepts: frames over it are cheap to generate.
MAX_FRAME = 1024

FUZZ = hypothesis_settings(
    max_examples=int(os.environ.get("FLUX_TESTS_FUZZ_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def settings(key_prefix: str) -> Settings:
    """conftest's, with the smallest frame limit."""
    return make_settings(key_prefix, gateway={"max_frame_bytes": MAX_FRAME})


@pytest.fixture
async def keeper(base_url: str) -> AsyncIterator[Keeper]:
    published = Keeper(base_url)
    await published.publish()
    yield published
    await published.check()


# ---------------------------------------------------------------------- strategies

# No lone surrogates: neither encoding can carry them.
TEXT = st.characters(exclude_categories=["Cs"])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(TEXT, max_size=12)
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(TEXT, max_size=8), inner),
    max_leaves=10,
)
#: What MessagePack carries and JSON does not: binary, NaN, infinities, extension
#: types, timestamps, map keys that are not strings.
MSGPACK_VALUES = st.recursive(
    SCALARS
    | st.binary(max_size=8)
    | st.sampled_from([math.nan, math.inf, -math.inf])
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4))
    | st.builds(msgpack.Timestamp, st.integers(0, 2**32), st.integers(0, 999_999_999)),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(TEXT, max_size=8) | st.integers(-3, 3), inner, max_size=4)
    ),
    max_leaves=10,
)
IDS = st.text(st.sampled_from("abxyz/-_."), min_size=1, max_size=8).map(lambda s: "fuzz/" + s)
REFS = st.none() | st.integers(-1000, 10**6) | st.text(TEXT, max_size=8)
EVENTS = st.fixed_dictionaries(
    {
        "stream": st.just("fuzz"),
        "source": st.just("fuzzer"),
        "payload": st.fixed_dictionaries(
            {
                "entity_id": IDS,
                "properties": st.dictionaries(
                    st.text(st.sampled_from("abcdef"), min_size=1, max_size=4),
                    JSON_VALUES,
                    max_size=3,
                ),
            }
        ),
    }
)
#: Free text where the hub parses or compiles what it is given.
GLOBS = st.text(st.sampled_from("fuz/*?[]!^-\\{}.a"), min_size=1, max_size=8)
CURSORS = st.text(st.sampled_from("0123456789-:,. a"), max_size=24) | st.text(TEXT, max_size=10)
NAMES = st.text(st.sampled_from("fuz/*.-_ "), max_size=8) | st.text(TEXT, max_size=6)
FILTERS = st.one_of(
    st.sampled_from(
        [{"all": True}, {"prefixes": ["fuzz/"]}, {"namespaces": ["fuzz"]}, {"globs": ["fuzz/*"]}]
    ),
    st.fixed_dictionaries({"ids": st.lists(IDS, min_size=1, max_size=3)}),
    st.fixed_dictionaries({"globs": st.lists(GLOBS, min_size=1, max_size=2)}),
    st.fixed_dictionaries({"namespaces": st.lists(NAMES, min_size=1, max_size=2)}),
    st.fixed_dictionaries({"prefixes": st.lists(NAMES, min_size=1, max_size=2)}),
)
SUBS = st.text(st.sampled_from("abc"), min_size=1, max_size=3)
PROPERTIES = st.lists(st.text(st.sampled_from("abcdef"), max_size=3), max_size=3)


def _frame(kind: str, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"type": st.just(kind), "ref": REFS, **fields})


VALID_FRAMES = st.one_of(
    _frame("publish", events=st.lists(EVENTS, min_size=1, max_size=2)),
    _frame("subscribe", sub=SUBS, filter=FILTERS, snapshot=st.booleans(), touches=st.booleans()),
    _frame("subscribe", sub=SUBS, filter=FILTERS, properties=PROPERTIES, **{"from": CURSORS}),
    _frame("unsubscribe", sub=SUBS),
    _frame("get", ids=st.lists(IDS, min_size=1, max_size=3)),
    _frame("list", prefix=st.just("fuzz/"), limit=st.integers(1, 50)),
    _frame("list", prefix=NAMES, namespace=NAMES, cursor=CURSORS, limit=st.integers(1, 50)),
    _frame("auth", token=st.text(TEXT, min_size=1, max_size=10)),
)


@dataclass(frozen=True)
class Sent:
    """One generated frame: text (``str``) or binary (``bytes``), and which top-level
    field of a valid frame was mutated (None: not a mutation of one field)."""

    data: str | bytes
    mutated: str | None = None


def _encode(value: Any, text: bool) -> str | bytes:
    return orjson.dumps(value).decode() if text else msgpack.packb(value, use_bin_type=True)


@st.composite
def mutations(draw: st.DrawFn) -> Sent:
    """A valid frame with one field removed, or replaced by any value."""
    frame = dict(draw(VALID_FRAMES))
    field = draw(st.sampled_from(sorted(frame)))
    text = draw(st.booleans())
    if draw(st.booleans()):
        del frame[field]
    else:
        frame[field] = draw(JSON_VALUES if text else MSGPACK_VALUES)
    return Sent(_encode(frame, text), field)


@st.composite
def oversized(draw: st.DrawFn) -> Sent:
    """A valid frame padded past the limit (but not 4 times past it)."""
    frame = dict(draw(VALID_FRAMES))
    frame["pad"] = "x" * draw(st.integers(MAX_FRAME, 3 * MAX_FRAME))
    return Sent(_encode(frame, draw(st.booleans())))


@st.composite
def deep(draw: st.DrawFn) -> Sent:
    """A value nested up to past both parsers' limits (orjson: 1024 levels, the hub's
    MessagePack check: 512, msgpack's unpacker: 1024), alone or as a property value
    in a publish frame. Written by hand: msgpack's packer stops at 512 levels."""
    depth = draw(st.integers(1, 1100))
    text = draw(st.booleans())
    value = "[" * depth + "0" + "]" * depth if text else b"\x91" * depth + b"\x00"
    if not draw(st.booleans()):
        return Sent(value)
    event = _event("fuzz/deep")
    event["payload"]["properties"] = {"v": "DEEP"}
    frame = {"type": "publish", "ref": 7, "events": [event]}
    if isinstance(value, str):
        return Sent(orjson.dumps(frame).decode().replace('"DEEP"', value))
    return Sent(msgpack.packb(frame).replace(msgpack.packb("DEEP"), value))


NATIVE_FRAMES = st.one_of(
    deep(),
    VALID_FRAMES.map(lambda f: Sent(_encode(f, True))),
    VALID_FRAMES.map(lambda f: Sent(_encode(f, False))),
    mutations(),
    mutations(),
    JSON_VALUES.map(lambda v: Sent(_encode(v, True))),
    MSGPACK_VALUES.map(lambda v: Sent(_encode(v, False))),
    st.builds(Sent, st.binary(max_size=64)),
    st.builds(Sent, st.text(TEXT, max_size=64)),
    oversized(),
)


# ---------------------------------------------------------------------- the native oracle


def _json_compatible(value: Any) -> bool:
    """docs/protocol.md: binary, NaN, infinity and non-string keys cannot be stored;
    hub/wire/codec.py: nor anything nested deeper than 512 levels."""
    return _depth(value) <= 512 and _plain(value)


def _depth(value: Any) -> int:
    """How deep the deepest item sits (the value itself: 0). Without recursion."""
    deepest, level = 0, [value]
    while level:
        level = [
            item
            for node in level
            if isinstance(node, list | dict)
            for item in (node.values() if isinstance(node, dict) else node)
        ]
        deepest += bool(level)
    return deepest


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    return False


def _ref(value: Any) -> Any:
    ref = value.get("ref") if isinstance(value, dict) else None
    return ref if isinstance(ref, str | int) and not isinstance(ref, bool) else None


@dataclass(frozen=True)
class Expected:
    """What the hub must answer a frame that is not a valid request."""

    code: str
    ref: Any
    #: Whether the frame could be decoded (then the message names the field).
    decoded: bool


def expected(sent: Sent) -> Expected | None:
    """The error the hub must send for ``sent``; None if it is a valid request."""
    raw = sent.data.encode() if isinstance(sent.data, str) else sent.data
    if len(raw) > MAX_FRAME:
        return Expected("too_large", None, False)
    try:
        if isinstance(sent.data, str):
            value = orjson.loads(raw)
        else:
            value = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception:
        return Expected("bad_frame", None, False)
    if isinstance(sent.data, bytes) and not _json_compatible(value):
        return Expected("bad_frame", _ref(value), True)
    try:
        CLIENT_FRAMES.validate_python(value)
    except ValidationError:
        return Expected("bad_frame", _ref(value), True)
    return None


#: Frames a subscription sends on its own schedule, not in answer to a request.
SUBSCRIPTION_TRAFFIC = {"delta", "deleted", "snapshot", "synced", "checkpoint", "reset"}


class NativeFuzzer:
    """Sends generated frames on one native connection, each followed by a marker
    request; what comes before the marker's answer is the answer to the frame."""

    def __init__(self, client: Native, keeper: str) -> None:
        self.client = client
        self.keeper = keeper
        self.markers = 0
        # Longer than any generated ref.
        self.marker = f"marker-{uuid.uuid4().hex}-"
        self.keeper_seen: Any = None

    async def _replies(self) -> list[dict[str, Any]]:
        self.markers += 1
        ref = f"{self.marker}{self.markers}"
        await self.client.send({"type": "get", "ref": ref, "ids": [self.keeper]})
        replies = []
        while True:
            frame = await self.client.recv(10)
            if frame.get("ref") == ref and frame["type"] == "entities":
                break
            if frame["type"] not in SUBSCRIPTION_TRAFFIC:
                replies.append(frame)
        # The keeper, read on this connection, never changes.
        if self.keeper_seen is None:
            self.keeper_seen = frame["entities"]
        assert frame["entities"] == self.keeper_seen and len(frame["entities"]) == 1
        return replies

    async def send(self, sent: Sent) -> None:
        await self.client.ws.send(sent.data)
        replies = await self._replies()
        wanted = expected(sent)
        answers = sorted({f"{r['type']} {r.get('code', '')}".strip() for r in replies})
        event(f"{'valid' if wanted is None else 'invalid'}: {', '.join(answers)}")
        if wanted is None:
            # A valid request: whatever the answer, it carries the request's ref.
            ref = _ref(_decode(sent))
            assert all(r.get("ref") == ref for r in replies if "ref" in r), (sent, replies)
            assert not any(r.get("code") in ("bad_frame", "too_large") for r in replies)
            return
        assert len(replies) == 1, (sent, replies)
        [error] = replies
        assert error["type"] == "error" and error["code"] == wanted.code, (sent, error)
        assert error["ref"] == wanted.ref, (sent, error)
        assert error["message"], error
        if wanted.decoded and sent.mutated not in (None, "type"):
            assert sent.mutated in error["message"], (sent, error)


def _decode(sent: Sent) -> Any:
    if isinstance(sent.data, str):
        return orjson.loads(sent.data)
    return msgpack.unpackb(sent.data, raw=False)


@pytest.fixture(
    params=[pytest.param(JSON_PROTOCOL, id="json"), pytest.param(MSGPACK_PROTOCOL, id="msgpack")]
)
async def fuzzer(
    request: pytest.FixtureRequest, ws_url: str, keeper: Keeper
) -> AsyncIterator[NativeFuzzer]:
    client = await Native.connect(ws_url, request.param)
    yield NativeFuzzer(client, keeper.id)
    # The connection survived it all.
    assert (await client.publish(_event("fuzz/after")))[0]["status"] == "ok"
    await client.close()


def _event(entity: str) -> dict[str, Any]:
    payload = {"entity_id": entity, "properties": {"ok": True}}
    return {"stream": "fuzz", "source": "fuzzer", "payload": payload}


@FUZZ
@given(batch=st.lists(NATIVE_FRAMES, min_size=1, max_size=4))
async def test_native_connection_answers_every_generated_frame_as_documented(
    fuzzer: NativeFuzzer, batch: list[Sent]
) -> None:
    for sent in batch:
        await fuzzer.send(sent)


async def test_native_frame_over_four_times_the_limit_closes_with_1009(
    ws_url: str, keeper: Keeper
) -> None:
    client = await Native.connect(ws_url, JSON_PROTOCOL, max_size=None)
    await client.ws.send("x" * (4 * MAX_FRAME + 1))
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await client.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


# ---------------------------------------------------------------------- compat


@st.composite
def compat_mutations(draw: st.DrawFn) -> str:
    frame: dict[str, Any] = {
        "type": draw(st.sampled_from(["subscribe", "unsubscribe"])),
        "entity_id": draw(IDS | st.just("*")),
    }
    field = draw(st.sampled_from(sorted(frame)))
    if draw(st.booleans()):
        del frame[field]
    else:
        frame[field] = draw(JSON_VALUES)
    return orjson.dumps(frame).decode()


COMPAT_FRAMES = st.one_of(
    compat_mutations(),
    JSON_VALUES.map(lambda v: orjson.dumps(v).decode()),
    st.text(TEXT, max_size=64),
    st.binary(max_size=64),
).filter(lambda data: len(data.encode() if isinstance(data, str) else data) <= MAX_FRAME)


@pytest.fixture
async def compat(ws_url: str, keeper: Keeper) -> AsyncIterator[ClientConnection]:
    async with websockets.connect(ws_url) as ws:
        yield ws
        # The connection survived it all: subscribed to everything, it hears of a publish.
        await ws.send(json.dumps({"type": "subscribe", "entity_id": "*"}))
        await asyncio.wait_for(await ws.ping(), timeout(5))
        async with httpx.AsyncClient(base_url=keeper.base_url, timeout=timeout(10)) as http:
            assert (await http.post("/api/events", json=_event("fuzz/probe"))).status_code == 200
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), timeout(5)))
            assert message["type"] in ("metrics_update", "state_update"), message
            if message.get("entity_id") == "fuzz/probe":
                break


@FUZZ
@given(batch=st.lists(COMPAT_FRAMES, min_size=1, max_size=4))
async def test_compat_connection_ignores_every_invalid_generated_frame(
    compat: ClientConnection, batch: list[str | bytes]
) -> None:
    for data in batch:
        await compat.send(data)
    # Frames are handled in order: once the pong is back, all were, and none closed it.
    await asyncio.wait_for(await compat.ping(), timeout(5))


# ---------------------------------------------------------------------- malformed frames


def _client_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    length: int | None = None,
) -> bytes:
    """One client frame, as RFC 6455 §5.2 lays it out; ``length`` overrides the real one."""
    size = len(payload) if length is None else length
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    masked = 0x80 if mask else 0
    if size < 126:
        head = bytes([first, masked | size])
    elif size < 1 << 16:
        head = bytes([first, masked | 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([first, masked | 127]) + size.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def _close(code: int, reason: bytes = b"") -> bytes:
    return _client_frame(0x8, code.to_bytes(2, "big") + reason)


MALFORMED = [
    ("unknown data opcode", _client_frame(0x3), 1002),
    ("unknown control opcode", _client_frame(0xB), 1002),
    ("RSV1 set", _client_frame(0x1, b"{}", rsv=4), 1002),
    ("RSV2 set", _client_frame(0x2, b"{}", rsv=2), 1002),
    ("RSV3 set", _client_frame(0x1, b"{}", rsv=1), 1002),
    ("unmasked client frame", _client_frame(0x1, b"{}", mask=False), 1002),
    ("fragmented ping", _client_frame(0x9, b"", fin=False), 1002),
    ("fragmented close", _client_frame(0x8, b"\x03\xe8", fin=False), 1002),
    ("ping over 125 bytes", _client_frame(0x9, b"p" * 126), 1002),
    ("continuation out of place", _client_frame(0x0, b"x"), 1002),
    (
        "new message inside a fragmented one",
        _client_frame(0x1, b"a", fin=False) + _client_frame(0x1, b"b"),
        1002,
    ),
    ("length field of 2^62", _client_frame(0x2, length=1 << 62), 1009),
    ("length field with its top bit set", _client_frame(0x2, length=(1 << 63) + 5), 1009),
    (
        "fragments over the limit",
        _client_frame(0x2, b"f" * 1000, fin=False) + _client_frame(0x0, b"f" * 1000, fin=False) * 4,
        1009,
    ),
    ("text not UTF-8", _client_frame(0x1, b'{"type":"\xff\xfe"}'), 1007),
    ("text with a surrogate", _client_frame(0x1, b'"\xed\xa0\x80"'), 1007),
    (
        "text not UTF-8 across fragments",
        _client_frame(0x1, b"\xe2\x82", fin=False) + _client_frame(0x0, b"("),
        1007,
    ),
    ("close code 1005 (never sent)", _close(1005), 1002),
    ("close code 999", _close(999), 1002),
    ("close code 1004 (reserved)", _close(1004), 1002),
    ("close code 2000 (unassigned)", _close(2000), 1002),
    ("close code 5000", _close(5000), 1002),
    ("close frame of one byte", _client_frame(0x8, b"\x03"), 1002),
    ("close reason not UTF-8", _close(1000, b"\xff"), 1007),
    ("a valid close, for comparison", _close(1000, b"bye"), 1000),
]


async def _upgrade(
    port: int, subprotocol: str | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16))
    offer = b"sec-websocket-protocol: %b\r\n" % subprotocol.encode() if subprotocol else b""
    writer.write(
        b"GET /api/ws HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
        b"sec-websocket-key: %b\r\nsec-websocket-version: 13\r\n%b\r\n" % (key, offer)
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout(5))
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def _server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The (unmasked) frames the hub sent: (opcode, payload)."""
    frames = []
    while len(data) >= 2:
        size, at = data[1] & 0x7F, 2
        if size == 126:
            size, at = int.from_bytes(data[2:4], "big"), 4
        elif size == 127:
            size, at = int.from_bytes(data[2:10], "big"), 10
        frames.append((data[0] & 0x0F, data[at : at + size]))
        data = data[at + size :]
    return frames


async def _close_code_after(port: int, subprotocol: str | None, frames: bytes) -> int | None:
    """Send ``frames`` after an upgrade; the code of the hub's close frame (None: none)."""
    reader, writer = await _upgrade(port, subprotocol)
    try:
        writer.write(frames)
        # The hub closes the TCP connection right after its close frame.
        received = await asyncio.wait_for(reader.read(), timeout(5))
    finally:
        writer.close()
    closes = [payload for opcode, payload in _server_frames(received) if opcode == 0x8]
    return int.from_bytes(closes[0][:2], "big") if closes else None


@pytest.mark.parametrize("subprotocol", [None, JSON_PROTOCOL], ids=["compat", "native"])
async def test_malformed_frames_close_with_the_rfc_6455_code(
    hub: Hub, keeper: Keeper, subprotocol: str | None
) -> None:
    # (The fragments go past 4 x MAX_FRAME: native connections' hard limit too.)
    got: dict[str, int | None] = {}
    for name, frames, _ in MALFORMED:
        got[name] = await _close_code_after(hub.port, subprotocol, frames)
    assert got == {name: code for name, _, code in MALFORMED}


async def test_utf8_character_split_across_fragments_is_read_whole(
    hub: Hub, keeper: Keeper
) -> None:
    reader, writer = await _upgrade(hub.port, JSON_PROTOCOL)
    try:
        message = json.dumps({"type": "get", "ref": "€", "ids": [keeper.id]}, ensure_ascii=False)
        data = message.encode()
        cut = data.index("€".encode()) + 1  # inside the three bytes of '€'
        writer.write(_client_frame(0x1, data[:cut], fin=False) + _client_frame(0x0, data[cut:]))
        head = await asyncio.wait_for(reader.readexactly(2), timeout(5))
        size = head[1] & 0x7F
        if size == 126:
            size = int.from_bytes(await reader.readexactly(2), "big")
        reply = json.loads(await reader.readexactly(size))
    finally:
        writer.close()
    assert (head[0] & 0x0F, reply["type"], reply["ref"]) == (0x1, "entities", "€")
