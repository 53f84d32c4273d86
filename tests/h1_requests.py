"""Generated HTTP/1.1 requests, for the loop-free tests of ``hub.transport.h1``.

A :class:`Spec` says what a request holds (request line, header fields, framing, body,
trailers) and which :data:`DEFECTS` it carries; :func:`render` writes its bytes. The
fuzz test (tests/test_h1.py) mutates and splits them; the differential test
(tests/test_h1_differential.py) parses them with both the hub and h11.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from hypothesis import strategies as st

from hub.transport.h1 import Event, H1Connection, Upgrade

#: Methods llhttp knows (it refuses any other token).
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD")
#: Field names llhttp or the hub's policy treat specially: generated on purpose only.
SPECIAL_FIELDS = frozenset(
    {
        "host",
        "authorization",
        "content-length",
        "transfer-encoding",
        "connection",
        "proxy-connection",
        "upgrade",
        "expect",
    }
)
#: Defects a request may carry, each written at one place by :func:`render`.
DEFECTS = (
    "bare_lf",  # the request line ends with LF alone
    "obs_fold",  # a field value continues on a line starting with a space
    "ctl_in_value",  # a control character (not HTAB, CR, LF, NUL) in a field value
    "nul_in_value",
    "space_before_colon",  # "name : value"
    "bad_name",  # a delimiter in a field name
    "bad_chunk_size",  # "zz" as a chunk size
    "chunk_size_ws",  # "1 " as a chunk size line
    "bad_chunk_ext",  # "1;a=@" (a chunk extension value that is no token)
    "missing_chunk_crlf",  # chunk data not followed by CRLF
    "leading_crlf",  # an empty line before the request line (RFC 9112 §2.2)
    "double_space",  # two spaces after the method
    "space_in_target",
)
CHUNK_DEFECTS = frozenset(
    {"bad_chunk_size", "chunk_size_ws", "bad_chunk_ext", "missing_chunk_crlf"}
)

_TCHAR = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VCHAR = "".join(chr(c) for c in range(0x21, 0x7F))
# Visible characters and obs-text; spaces and tabs only inside a value.
_VALUE_CHARS = _VCHAR + "".join(chr(c) for c in range(0x80, 0x100))
_CTLS = [chr(c) for c in (*range(0x01, 0x09), *range(0x0E, 0x20), 0x7F)]


@dataclass(frozen=True)
class Chunk:
    """One chunk of a chunked body, as written."""

    data: bytes
    size: str  # the size as written: hex, any case, maybe leading zeros
    ext: str = ""  # ";name", ";name=token" or ';name="quoted"'


@dataclass(frozen=True)
class Spec:
    """What one request holds; :func:`render` writes it."""

    method: str
    target: str
    version: str
    #: Every header field as written (framing fields included), values with their OWS.
    fields: tuple[tuple[str, str], ...]
    #: "none", "length" (the body follows as is) or "chunked".
    framing: str = "none"
    body: bytes = b""
    chunks: tuple[Chunk, ...] = ()
    trailers: tuple[tuple[str, str], ...] = ()
    defects: frozenset[str] = field(default_factory=frozenset)
    ctl: str = "\x01"

    def values(self, name: str) -> list[str]:
        """The values of every field called ``name`` (lower case), OWS stripped."""
        return [v.strip(" \t") for n, v in self.fields if n.lower() == name]

    def tokens(self, name: str) -> set[str]:
        """The comma-separated tokens of the fields called ``name``, lower-cased."""
        return {t.strip(" \t").lower() for v in self.values(name) for t in v.split(",")}


def render(spec: Spec) -> bytes:
    """The bytes of ``spec``, defects included."""
    defects = spec.defects
    target = spec.target + (" x" if "space_in_target" in defects else "")
    space = "  " if "double_space" in defects else " "
    eol = "\n" if "bare_lf" in defects else "\r\n"
    lines = [f"{spec.method}{space}{target} HTTP/{spec.version}{eol}"]
    for name, value in spec.fields:
        lines.append(f"{name}:{value}\r\n")
    if "obs_fold" in defects:
        lines.append("X-Fold: a\r\n folded\r\n")
    if "ctl_in_value" in defects:
        lines.append(f"X-Ctl: a{spec.ctl}b\r\n")
    if "nul_in_value" in defects:
        lines.append("X-Nul: a\x00b\r\n")
    if "space_before_colon" in defects:
        lines.append("X-Space : a\r\n")
    if "bad_name" in defects:
        lines.append("X(Bad: a\r\n")
    lines.append("\r\n")
    head = ("\r\n" if "leading_crlf" in defects else "") + "".join(lines)
    data = head.encode("latin-1")
    if spec.framing == "length":
        return data + spec.body
    if spec.framing != "chunked":
        return data
    parts = [data]
    for i, chunk in enumerate(spec.chunks):
        size, ext, end = chunk.size, chunk.ext, b"\r\n"
        if i == 0:
            size = "zz" if "bad_chunk_size" in defects else size
            size += " " if "chunk_size_ws" in defects else ""
            ext = ";a=@" if "bad_chunk_ext" in defects else ext
            end = b"" if "missing_chunk_crlf" in defects else end
        parts.append(f"{size}{ext}\r\n".encode() + chunk.data + end)
    parts.append(b"0\r\n")
    parts.extend(f"{n}:{v}\r\n".encode("latin-1") for n, v in spec.trailers)
    parts.append(b"\r\n")
    return b"".join(parts)


# ---------------------------------------------------------------------- strategies

names = st.text(_TCHAR, min_size=1, max_size=12).filter(lambda n: n.lower() not in SPECIAL_FIELDS)
ows = st.sampled_from(["", " ", "\t", "  ", " \t"])
words = st.text(_VALUE_CHARS, min_size=1, max_size=10)


@st.composite
def values(draw: st.DrawFn) -> str:
    """A field value as written: OWS, words separated by spaces or tabs, OWS."""
    inner = draw(st.lists(words, max_size=3))
    separators = draw(st.lists(st.sampled_from([" ", "\t", "  "]), min_size=len(inner)))
    value = "".join(w + s for w, s in zip(inner, separators, strict=False)).rstrip(" \t")
    return draw(ows) + value + draw(ows)


@st.composite
def targets(draw: st.DrawFn) -> str:
    """Origin form (any visible characters), absolute form, or ``*``."""
    kind = draw(st.sampled_from(["origin", "origin", "origin", "absolute", "asterisk"]))
    if kind == "asterisk":
        return "*"
    path = "/" + draw(st.text(_VCHAR, max_size=16))
    if kind == "origin":
        return path
    host = draw(st.from_regex(r"[a-z0-9][a-z0-9.-]{0,10}", fullmatch=True))
    port = draw(st.sampled_from(["", ":80", ":8080"]))
    return f"http://{host}{port}" + draw(st.sampled_from(["", path]))


@st.composite
def chunk_lists(draw: st.DrawFn) -> tuple[Chunk, ...]:
    chunks = []
    for data in draw(st.lists(st.binary(min_size=1, max_size=20), max_size=3)):
        size = f"{len(data):x}"
        size = draw(st.sampled_from(["", "0", "00"])) + draw(st.sampled_from([size, size.upper()]))
        ext = draw(st.sampled_from(["", ";a", ";a=b", ';name="q v"', ";a=b;c"]))
        chunks.append(Chunk(data, size, ext))
    return tuple(chunks)


@st.composite
def specs(draw: st.DrawFn, defects: bool = True) -> Spec:
    """A request; with ``defects``, sometimes one or two of :data:`DEFECTS`."""
    method = draw(st.sampled_from([*METHODS * 4, "CONNECT", "FOO", "get"]))
    version = draw(st.sampled_from(["1.1"] * 12 + ["1.0"] * 4 + ["0.9", "2.0", "1.2"]))
    fields = [(n, v) for n, v in draw(st.lists(st.tuples(names, values()), max_size=6))]
    for name, value in (("Host", " example.com"), ("Authorization", " Bearer t")):
        count = draw(st.sampled_from([1, 1, 1, 1, 0, 2] if name == "Host" else [0, 0, 0, 1, 1, 2]))
        fields += [(name, value)] * count
    connection = draw(
        st.sampled_from([None, None, "close", "keep-alive", "Upgrade", "keep-alive, Upgrade"])
    )
    if connection is not None:
        fields.append(("Connection", " " + connection))
    if draw(st.booleans()) and (connection is None or "Upgrade" in connection):
        fields.append(("Upgrade", " websocket"))
    if draw(st.integers(0, 5)) == 0:
        fields.append(("Expect", " 100-continue"))
    framing = draw(st.sampled_from(["none", "none", "length", "chunked"]))
    body = draw(st.binary(max_size=40)) if framing == "length" else b""
    chunks = draw(chunk_lists()) if framing == "chunked" else ()
    trailers: tuple[tuple[str, str], ...] = ()
    if framing == "length":
        length = str(len(body))
        variant = draw(st.sampled_from(["one", "one", "one", "zero-padded", "twice", "list"]))
        if variant == "zero-padded":
            length = "0" + length
        fields.append(
            ("Content-Length", " " + (f"{length}, {length}" if variant == "list" else length))
        )
        if variant == "twice":
            fields.append(("content-length", " " + length))
    elif framing == "chunked":
        coding = draw(
            st.sampled_from(["chunked", "chunked", "Chunked", "chunked ", "gzip, chunked"])
        )
        fields.append(("Transfer-Encoding", " " + coding))
        extra = draw(
            st.sampled_from(
                [None, None, None, ("Transfer-Encoding", " chunked"), ("Content-Length", " 3")]
            )
        )
        if extra is not None:
            fields.append(extra)
        trailers = tuple(draw(st.lists(st.tuples(names, values()), max_size=2)))
    fields = draw(st.permutations(fields))
    chosen: frozenset[str] = frozenset()
    if defects and draw(st.booleans()):
        allowed = [d for d in DEFECTS if chunks or d not in CHUNK_DEFECTS]
        chosen = frozenset(draw(st.lists(st.sampled_from(allowed), min_size=1, max_size=2)))
    return Spec(
        method=method,
        target=draw(targets()),
        version=version,
        fields=tuple(fields),
        framing=framing,
        body=body,
        chunks=chunks,
        trailers=trailers,
        defects=chosen,
        ctl=draw(st.sampled_from(_CTLS)),
    )


def without(spec: Spec, *defects: str) -> Spec:
    return replace(spec, defects=spec.defects - set(defects))


# ---------------------------------------------------------------------- running h1


def body_limit(method: str, path: str) -> tuple[int, str]:
    return 1 << 20, "payload too large"


def feed(chunks: list[bytes], connection: H1Connection) -> tuple[list[Event], bytes]:
    """Feed ``chunks`` as successive reads; the events and what was to be sent.

    Bytes after an upgrade are what the shell would hand to the new protocol: they are
    added to the :class:`Upgrade`'s data, as the shell does.
    """
    events: list[Event] = []
    output = b""
    for i, chunk in enumerate(chunks):
        connection.receive_data(chunk)
        output += connection.data_to_send()
        events += connection.events_received()
        if events and isinstance(events[-1], Upgrade):
            last = events[-1]
            events[-1] = Upgrade(last.request, last.data + b"".join(chunks[i + 1 :]))
            break
    return events, output


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at each offset in ``cuts`` (empty pieces included)."""
    points = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]
