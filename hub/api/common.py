"""Helpers the HTTP handlers share: bodies, queries, entity encoding, read scopes."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from ..core.timefmt import format_ms
from ..engine.tenancy import AuthFailure
from ..errors import BadRequest
from ..wire.jsonutil import JSONError, dumps, loads, serde_message

if TYPE_CHECKING:
    from ..core.model import Entity
    from ..engine.tenancy import Tenancy
    from ..transport.http import Request

__all__ = [
    "decode_cursor",
    "encode_cursor",
    "encode_entity",
    "json_body",
    "may_read",
    "query_int",
    "read_scope",
    "unprocessable",
]


async def read_scope(tenancy: Tenancy, request: Request) -> str:
    """The id prefix this request may read ("" = everything).

    Raises:
        AuthFailure: private reads, and no valid token.
    """
    if not tenancy.private_reads:
        return ""
    header = request.headers.get("authorization")
    principal = await tenancy.principal_from_header(header)
    scope = principal.read_prefix
    if scope is None:
        message = "Authorization token not provided" if header is None else "Invalid token"
        raise AuthFailure(401, message)
    return scope


def may_read(scope: str, entity_id: str) -> None:
    """Raises AuthFailure (403) unless ``entity_id`` is within the reader's scope."""
    if not entity_id.startswith(scope):
        namespace = entity_id.split("/", 1)[0]
        raise AuthFailure(403, f"Token does not have permission to read namespace '{namespace}'")


def encode_entity(entity: Entity) -> bytes:
    """An entity as Flux shows it, plus its ``version``, and ``expiresAt`` when it
    holds a lease (absent otherwise: what Flux clients saw); values are already JSON."""
    props = b",".join(dumps(name) + b":" + value for name, value in entity.properties.items())
    lease = b""
    if entity.expires_at is not None:
        lease = b',"expiresAt":"%b"' % format_ms(entity.expires_at).encode()
    return b'{"id":%b,"properties":{%b},"lastUpdated":"%b","version":%d%b}' % (
        dumps(entity.id),
        props,
        format_ms(entity.last_updated).encode(),
        entity.version,
        lease,
    )


#: Largest value of Flux's unsigned query integers (``usize`` on 64 bits).
_QUERY_INT_MAX = 2**64 - 1


def query_int(query: dict[str, str], name: str, default: int) -> int:
    """An unsigned integer query parameter, refused in Flux's (serde's) words.

    Raises:
        BadRequest: not ASCII digits (``²`` and other Unicode digits included), or
            more than a 64-bit integer holds (Rust's ``number too large to fit in
            target type``).
    """
    text = query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()):
        reason = (
            "cannot parse integer from empty string"
            if not text
            else "invalid digit found in string"
        )
        raise BadRequest(f"Failed to deserialize query string: {name}: {reason}")
    digits = text.lstrip("0")
    # Checked on the length first: int() of thousands of digits raises ValueError.
    if len(digits) > 20 or int(digits or "0") > _QUERY_INT_MAX:
        raise BadRequest(
            f"Failed to deserialize query string: {name}: number too large to fit in target type"
        )
    return int(digits or "0")


def json_body(request: Request) -> Any:
    """The request body as JSON, or a 400 in Flux's (axum's) words."""
    try:
        return loads(request.body)
    except JSONError as exc:
        raise BadRequest(
            f"Failed to parse the request body as JSON: {serde_message(exc)}"
        ) from None


def unprocessable(detail: str) -> BadRequest:
    """A 422 in Flux's (axum's) words, as JSON."""
    return BadRequest(f"Failed to deserialize the JSON body into the target type: {detail}", 422)


def encode_cursor(entity_id: str) -> bytes:
    """A listing cursor: the last id, base64url without padding.

    It reads the same whether or not a client percent-encodes it again, and holds any
    id (spaces, non-ASCII, ``%``) in a header value.
    """
    return base64.urlsafe_b64encode(entity_id.encode()).rstrip(b"=")


def decode_cursor(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise BadRequest(f"invalid cursor {text!r}: pass back the X-Next-Cursor value") from None
