"""The native protocol's two encodings (hub/wire/codec.py): JSON and MessagePack.

Both must carry exactly what JSON can: a MessagePack frame holding binary, NaN,
infinity, extension types or non-string map keys is refused with a message naming the
problem, as a malformed JSON frame is.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest

from hub.wire.codec import JSON, MSGPACK, Codec, DecodeError, codec_for


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def nested(depth: int) -> Any:
    """``depth`` lists around a 0: the 0 sits at nesting depth ``depth``."""
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


FRAME: dict[str, Any] = {
    "type": "publish",
    "ref": 7,
    "events": [
        {
            "stream": "s",
            "payload": {
                "entity_id": "ns/é",
                "properties": {"t": 21.5, "on": True, "n": None, "tags": ["a", "b"], "big": 2**63},
            },
        }
    ],
}

# ---------------------------------------------------------------- codecs


def test_codecs_name_their_subprotocols() -> None:
    assert (JSON.name, JSON.subprotocol, JSON.text) == ("json", "flux.v1", True)
    assert (MSGPACK.name, MSGPACK.subprotocol, MSGPACK.text) == (
        "msgpack",
        "flux.v1.msgpack",
        False,
    )


@pytest.mark.parametrize(
    ("subprotocol", "expected"),
    [
        pytest.param(None, None, id="no-subprotocol-is-compat"),
        pytest.param("flux.v1", JSON, id="json"),
        pytest.param("flux.v1.msgpack", MSGPACK, id="msgpack"),
        pytest.param("flux.v2", None, id="unknown"),
        pytest.param("", None, id="empty"),
        pytest.param("FLUX.V1", None, id="case-sensitive"),
    ],
)
def test_codec_for_returns_codec_of_subprotocol(
    subprotocol: str | None, expected: Codec | None
) -> None:
    assert codec_for(subprotocol) is expected


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=["json", "msgpack"])
def test_codec_decodes_what_it_encodes(codec: Codec) -> None:
    assert codec.decode(codec.encode(FRAME)) == FRAME


def test_json_encode_writes_compact_json_in_key_order() -> None:
    assert JSON.encode({"b": 1, "a": [1.5, None, True, "é"]}) == (
        b'{"b":1,"a":[1.5,null,true,"\xc3\xa9"]}'
    )


def test_json_decode_reads_standard_json() -> None:
    assert JSON.decode(json.dumps(FRAME).encode()) == FRAME


def test_json_decode_reads_integer_beyond_64_bits_as_float() -> None:
    # As serde_json (Flux) does.
    assert JSON.decode(b"[123456789012345678901234567890]") == [1.2345678901234568e29]


def test_msgpack_encode_writes_strings_as_str_type() -> None:
    data = MSGPACK.encode({"a": "x"})
    assert data == b"\x81\xa1a\xa1x"
    assert msgpack.unpackb(data) == {"a": "x"}


def test_msgpack_decode_reads_frame_packed_by_any_client() -> None:
    assert MSGPACK.decode(pack(FRAME)) == FRAME
    # Old-style raw strings (no bin type) are still text.
    assert MSGPACK.decode(msgpack.packb({"a": "x"}, use_bin_type=False)) == {"a": "x"}


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(2**64 - 1, id="uint64-max"),
        pytest.param(-(2**63), id="int64-min"),
        pytest.param(True, id="bool"),
        pytest.param(None, id="nil"),
        pytest.param(1.5, id="float"),
        pytest.param("", id="empty-string"),
        pytest.param({}, id="empty-map"),
        pytest.param([], id="empty-array"),
    ],
)
def test_msgpack_decode_accepts_values_json_can_hold(value: Any) -> None:
    assert MSGPACK.decode(pack(value)) == value


def test_msgpack_decode_accepts_float32() -> None:
    assert MSGPACK.decode(b"\xca\x3f\xc0\x00\x00") == 1.5


# ---------------------------------------------------------------- JSON errors


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"{", "unexpected end of data at line 1 column 2", id="truncated"),
        pytest.param(
            b'{"a":1,\n"b":}',
            "unexpected character, expected a JSON value at line 2 column 5",
            id="second-line",
        ),
        pytest.param(b"[1,]", "trailing comma is not allowed at line 1 column 3", id="comma"),
        pytest.param(
            b"",
            "Input is a zero-length, empty document at line 1 column 1",
            id="empty",
        ),
        pytest.param(
            b'{"a":1} x',
            "unexpected content after document at line 1 column 9",
            id="trailing-data",
        ),
        pytest.param(
            b"NaN",
            "unexpected character, expected a JSON value at line 1 column 1",
            id="nan",
        ),
        pytest.param(
            b"[Infinity]",
            "unexpected character, expected a JSON value at line 1 column 2",
            id="infinity",
        ),
        pytest.param(
            b'"\xff"',
            "str is not valid UTF-8: surrogates not allowed at line 1 column 1",
            id="bad-utf8",
        ),
    ],
)
def test_json_decode_names_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        JSON.decode(data)
    assert str(info.value) == f"invalid JSON: {message}"
    # Nothing of orjson leaks out: a DecodeError is a ValueError and nothing else.
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_json_decode_refuses_nesting_beyond_orjson_limit() -> None:
    with pytest.raises(DecodeError, match="^invalid JSON: depth limit exceeded"):
        JSON.decode(b"[" * 1100 + b"]" * 1100)


def test_decode_error_is_value_error() -> None:
    assert issubclass(DecodeError, ValueError)


# ---------------------------------------------------------------- MessagePack errors


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(b"\x92\x01", "Unpack failed: incomplete input", id="truncated"),
        pytest.param(b"\x01\x02", "unpack(b) received extra data.", id="trailing-data"),
        pytest.param(
            b"\x81\x92\x01\x02\x03",
            "list is not allowed for map key when strict_map_key=True",
            id="array-key",
        ),
        pytest.param(
            b"\xa1\xff",
            "'utf-8' codec can't decode byte 0xff in position 0: invalid start byte",
            id="bad-utf8",
        ),
    ],
)
def test_msgpack_decode_names_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        MSGPACK.decode(data)
    assert str(info.value) == f"invalid MessagePack: {message}"
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xc1", id="reserved-byte"),
        pytest.param(b"\x91" * 2000 + b"\x00", id="beyond-unpacker-stack"),
    ],
)
def test_msgpack_decode_names_the_problem_when_msgpack_gives_no_message(data: bytes) -> None:
    # msgpack raises FormatError / StackError without a message here: the client
    # must still learn more than "invalid MessagePack: ".
    with pytest.raises(DecodeError) as info:
        MSGPACK.decode(data)
    text = str(info.value)
    assert text.startswith("invalid MessagePack: ")
    assert text.removeprefix("invalid MessagePack: ").strip()


def test_msgpack_decode_refuses_string_keys_sent_as_binary() -> None:
    # strict_map_key lets bin keys through; JSON objects (and the envelope, which
    # encodes properties with orjson) only have string keys.
    for value in ({b"k": 1}, {"payload": {"properties": {b"k": 1}}}, [{b"k": 1}]):
        with pytest.raises(DecodeError):
            MSGPACK.decode(pack(value))


@pytest.mark.parametrize(
    ("value", "where"),
    [
        pytest.param(float("nan"), "", id="nan"),
        pytest.param(float("inf"), "", id="inf"),
        pytest.param(float("-inf"), "", id="minus-inf"),
        pytest.param({"a": {"b": float("nan")}}, "a.b: ", id="nan-in-map"),
        pytest.param([1, [2, float("inf")]], "[1][1]: ", id="inf-in-array"),
    ],
)
def test_msgpack_decode_refuses_nan_and_infinity_naming_where(value: Any, where: str) -> None:
    with pytest.raises(DecodeError) as info:
        MSGPACK.decode(pack(value))
    message = "NaN and infinity cannot be stored (JSON has no such numbers)"
    assert str(info.value) == where + message


def test_msgpack_decode_refuses_float32_nan() -> None:
    with pytest.raises(DecodeError, match="^NaN and infinity cannot be stored"):
        MSGPACK.decode(b"\xca\x7f\xc0\x00\x00")


@pytest.mark.parametrize(
    ("value", "where"),
    [
        pytest.param(b"x", "", id="bin"),
        pytest.param(b"", "", id="empty-bin"),
        pytest.param({"a": b"x"}, "a: ", id="bin-in-map"),
        pytest.param(["a", [b"x"]], "[1][0]: ", id="bin-in-array"),
    ],
)
def test_msgpack_decode_refuses_binary_values_naming_where(value: Any, where: str) -> None:
    with pytest.raises(DecodeError) as info:
        MSGPACK.decode(pack(value))
    assert str(info.value) == where + "binary values cannot be stored; send text or numbers"


def test_msgpack_decode_refuses_integer_keys_naming_where_and_keeps_the_frame() -> None:
    # The error reply must carry the request's ref: the frame is kept on the error.
    with pytest.raises(DecodeError, match="^map keys must be strings, not int$"):
        MSGPACK.decode(pack({1: 2}))
    frame = {"type": "publish", "ref": 5, "events": [{"payload": {"properties": {1: 2}}}]}
    with pytest.raises(DecodeError) as info:
        MSGPACK.decode(pack(frame))
    assert str(info.value) == "events[0].payload.properties: map keys must be strings, not int"
    assert info.value.value == frame


def test_msgpack_decode_keeps_the_frame_of_a_value_json_cannot_carry() -> None:
    frame = {"type": "publish", "ref": "r", "events": [{"x": float("nan")}]}
    with pytest.raises(DecodeError) as info:
        MSGPACK.decode(pack(frame))
    assert info.value.value["ref"] == "r"


def test_msgpack_decode_of_malformed_data_keeps_nothing() -> None:
    with pytest.raises(DecodeError) as info:
        MSGPACK.decode(b"\xc1")
    assert info.value.value is None


@pytest.mark.parametrize(
    ("data", "type_name"),
    [
        pytest.param(pack(msgpack.ExtType(5, b"x")), "ExtType", id="ext"),
        pytest.param(pack({"a": [msgpack.ExtType(1, b"")]}), "ExtType", id="nested-ext"),
        pytest.param(b"\xd6\xff\x00\x00\x00\x01", "Timestamp", id="timestamp"),
    ],
)
def test_msgpack_decode_refuses_extension_types(data: bytes, type_name: str) -> None:
    with pytest.raises(DecodeError) as info:
        MSGPACK.decode(data)
    assert str(info.value).endswith(f"unsupported MessagePack value of type {type_name}")


def test_msgpack_decode_accepts_nesting_up_to_512() -> None:
    assert MSGPACK.decode(pack(nested(512))) == nested(512)


@pytest.mark.parametrize("depth", [513, 600])
def test_msgpack_decode_refuses_nesting_over_512(depth: int) -> None:
    with pytest.raises(DecodeError, match="^MessagePack value nested too deeply$"):
        MSGPACK.decode(pack(nested(depth)))


def test_msgpack_decode_counts_maps_in_nesting_depth() -> None:
    value: Any = 0
    for _ in range(513):
        value = {"k": value}
    with pytest.raises(DecodeError, match="^MessagePack value nested too deeply$"):
        MSGPACK.decode(pack(value))


# ---------------------------------------------------------------- encode_value


def test_json_encode_value_returns_canonical_json_as_is() -> None:
    canonical = b'{"a":[1,2],"b":null}'
    assert JSON.encode_value(canonical) is canonical


@pytest.mark.parametrize(
    "value",
    [0, -1, 1.5, True, None, "é", [1, "x"], {"a": {"b": [1, 2.5]}}, 2**64 - 1],
)
def test_msgpack_encode_value_converts_canonical_json(value: Any) -> None:
    data = MSGPACK.encode_value(json.dumps(value, separators=(",", ":")).encode())
    assert msgpack.unpackb(data) == value
    assert data == pack(value)


# ---------------------------------------------------------------- map_header


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x80"),
        (1, b"\x81"),
        (15, b"\x8f"),
        (16, b"\xde\x00\x10"),
        (65535, b"\xde\xff\xff"),
        (65536, b"\xdf\x00\x01\x00\x00"),
    ],
)
def test_map_header_splices_into_valid_map(size: int, header: bytes) -> None:
    assert MSGPACK.map_header(size) == header
    entries = b"".join(pack(f"k{i}") + pack(i) for i in range(size))
    assert msgpack.unpackb(header + entries) == {f"k{i}": i for i in range(size)}
