"""The two encodings of the native protocol: JSON text frames and MessagePack binary
frames. This is the only module that calls ``msgpack``.

Both carry the same frames. Property values inside the hub are canonical JSON; a
MessagePack frame carries them as MessagePack values (decoded once per delta).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgpack

from .jsonutil import JSONError, dumps, loads, serde_message

__all__ = ["JSON", "MSGPACK", "Codec", "DecodeError", "codec_for"]

JSON_SUBPROTOCOL = "flux.v1"
MSGPACK_SUBPROTOCOL = "flux.v1.msgpack"


class DecodeError(ValueError):
    """A frame that is not valid in its encoding; the message names the problem.

    ``value`` is what could be decoded anyway (a MessagePack map with a value JSON
    cannot carry, or with a key that is not a string), so that the error reply can
    carry the request's ``ref``; None when nothing could.
    """

    def __init__(self, message: str, value: Any = None) -> None:
        super().__init__(message)
        self.value = value


@dataclass(frozen=True, slots=True)
class Codec:
    """One encoding: its subprotocol name and whether its frames are text."""

    name: str
    subprotocol: str
    text: bool

    def decode(self, data: bytes) -> Any:
        """Decode a frame body into Python values.

        Raises:
            DecodeError: malformed, or holding a value JSON cannot carry.
        """
        if self.text:
            try:
                return loads(data)
            except JSONError as exc:
                raise DecodeError(f"invalid JSON: {serde_message(exc)}") from None
        try:
            value = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except (ValueError, msgpack.UnpackException, TypeError) as exc:
            # A key that is not a string (an integer, say) is refused by the unpacker;
            # decoded leniently, the check below names where it is.
            value = _lenient(data)
            if value is None:
                detail = str(exc) or _QUIET.get(type(exc), type(exc).__name__)
                raise DecodeError(f"invalid MessagePack: {detail}") from None
        try:
            _check_json_compatible(value)
        except _Incompatible as exc:
            where = "".join(reversed(exc.path or ())).lstrip(".")
            raise DecodeError(f"{where}: {exc}" if where else str(exc), value) from None
        return value

    def encode(self, value: Any) -> bytes:
        """Encode a frame."""
        if self.text:
            return dumps(value)
        return msgpack.packb(value, use_bin_type=True)

    def encode_value(self, canonical_json: bytes) -> bytes:
        """Encode one property value given as canonical JSON."""
        if self.text:
            return canonical_json
        return msgpack.packb(loads(canonical_json), use_bin_type=True)

    def map_header(self, size: int) -> bytes:
        """MessagePack map header for ``size`` entries (splicing pre-encoded entries)."""
        if size < 16:
            return bytes((0x80 | size,))
        if size < 65536:
            return b"\xde" + size.to_bytes(2, "big")
        return b"\xdf" + size.to_bytes(4, "big")


JSON = Codec("json", JSON_SUBPROTOCOL, text=True)
MSGPACK = Codec("msgpack", MSGPACK_SUBPROTOCOL, text=False)

# msgpack raises these without a message.
_QUIET: dict[type[Exception], str] = {
    msgpack.FormatError: "reserved type byte",
    msgpack.StackError: "nested too deeply",
}

_BY_SUBPROTOCOL = {c.subprotocol: c for c in (JSON, MSGPACK)}


def codec_for(subprotocol: str | None) -> Codec | None:
    """The codec of a negotiated subprotocol; None for the Flux-compatible protocol."""
    if subprotocol is None:
        return None
    return _BY_SUBPROTOCOL.get(subprotocol)


#: Deepest nesting accepted (a value inside 512 maps or arrays).
MAX_DEPTH = 512
#: Types that need no check (msgpack builds exactly these, never subclasses).
_PLAIN = frozenset({str, int, bool, type(None)})


class _Incompatible(Exception):
    """A value JSON cannot carry; ``path`` names where, innermost part first (None:
    the value as a whole, too deeply nested for a path to help)."""

    def __init__(self, message: str, located: bool = True) -> None:
        super().__init__(message)
        self.path: list[str] | None = [] if located else None

    def within(self, segment: str) -> _Incompatible:
        """The error, one level further out (``.key`` or ``[index]``)."""
        if self.path is not None:
            self.path.append(segment)
        return self


def _lenient(data: bytes) -> Any:
    """A MessagePack frame the strict unpacker refused, decoded with map keys of any
    type; None if it is malformed anyway."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException, TypeError):
        return None


def _check_json_compatible(value: Any, depth: int = 0) -> None:
    """Refuse what JSON (and so the hub's state) cannot hold: binary, NaN, infinity.

    Runs on every MessagePack frame: plain items are skipped without a call. The
    error's path is built on the way out, so the common case pays nothing for it.
    """
    if depth > MAX_DEPTH:
        raise _Incompatible("MessagePack value nested too deeply", located=False)
    kind = type(value)
    if kind is dict:
        deep = depth >= MAX_DEPTH
        for key, item in value.items():
            if type(key) is not str:
                raise _Incompatible(f"map keys must be strings, not {type(key).__name__}")
            if deep or type(item) not in _PLAIN:
                try:
                    _check_json_compatible(item, depth + 1)
                except _Incompatible as exc:
                    raise exc.within(f".{key}") from None
    elif kind is list:
        deep = depth >= MAX_DEPTH
        for index, item in enumerate(value):
            if deep or type(item) not in _PLAIN:
                try:
                    _check_json_compatible(item, depth + 1)
                except _Incompatible as exc:
                    raise exc.within(f"[{index}]") from None
    elif kind is float:
        if math.isnan(value) or math.isinf(value):
            raise _Incompatible("NaN and infinity cannot be stored (JSON has no such numbers)")
    elif kind is bytes:
        raise _Incompatible("binary values cannot be stored; send text or numbers")
    elif kind not in _PLAIN:
        raise _Incompatible(f"unsupported MessagePack value of type {kind.__name__}")
