"""The hub's HTTP/1.1 parser (llhttp plus hub.transport.h1's policy) against h11.

Each generated request (tests/h1_requests.py) is parsed by both. They must agree on
accepting or refusing it and, when both accept, on the method, target, header fields,
body, keep-alive, upgrade and ``100 Continue``. Where they legitimately differ, the
difference is written down below, once, as a rule over the request's spec:

- :func:`policy_refusals`: what the hub refuses although h11 accepts it, each with the
  line of docs/limits.md or the llhttp strictness that says so;
- :func:`for_h11`: what the hub accepts although h11 refuses it, undone in the copy h11
  parses (and its trace removed from h11's answer), so the rest is still compared.

Nothing else is filtered: every other request, defective or not, is compared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from urllib.parse import unquote_to_bytes

import h11
import pytest
from hypothesis import HealthCheck, event, given, settings

from hub.transport.h1 import CONTINUE, H1Connection, Rejection, Request, Upgrade

from .h1_requests import METHODS, Spec, body_limit, render, specs

#: A small field cap, so that generated requests reach it.
MAX_HEADERS = 12
#: Set on the h11 copy of an HTTP/1.1 request without Host (see for_h11).
H11_HOST = ("Host", " h11.invalid")


@dataclass(frozen=True)
class Parsed:
    """What a parser made of one request: refused, incomplete, or these fields."""

    outcome: str  # "accepted", "refused", "incomplete"
    method: str = ""
    target: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    keep_alive: bool = False
    upgrade: bool = False
    expects_continue: bool = False


def policy_refusals(spec: Spec) -> list[str]:
    """Why the hub refuses ``spec`` where h11 accepts it (docs/limits.md)."""
    reasons = []
    if spec.method == "CONNECT":
        reasons.append("CONNECT is not supported (501)")
    elif spec.method not in METHODS:
        reasons.append("llhttp knows registered methods only, upper case")
    if spec.version not in ("1.0", "1.1"):
        reasons.append("versions other than 1.0 and 1.1 (505)")
    lengths = spec.values("content-length")
    if len(lengths) > 1 or any("," in v for v in lengths):
        reasons.append("Content-Length given twice, even with one value (h11 merges them)")
    if lengths and spec.values("transfer-encoding"):
        reasons.append("Content-Length with Transfer-Encoding (h11 lets chunked win)")
    if len(spec.values("authorization")) > 1:
        reasons.append("Authorization given twice")
    if len(spec.fields) + len(spec.defects & _EXTRA_FIELD_DEFECTS) > MAX_HEADERS:
        reasons.append("more header fields than the cap (431)")
    upgrade = "upgrade" in spec.tokens("connection") and spec.values("upgrade")
    if upgrade and (spec.values("transfer-encoding") or spec.body):
        reasons.append("an upgrade request with a body")
    try:
        unquote_to_bytes(spec.target).decode()
    except UnicodeDecodeError:
        reasons.append("a target not UTF-8 once percent-decoded (400)")
    # llhttp's strict mode: RFC 9112 makes these optional to accept; the hub does not.
    reasons += [f"llhttp refuses {d}" for d in sorted(spec.defects & _LLHTTP_STRICT)]
    return reasons


_LLHTTP_STRICT = frozenset(
    {"bare_lf", "obs_fold", "ctl_in_value", "chunk_size_ws", "bad_chunk_ext"}
)
_EXTRA_FIELD_DEFECTS = frozenset({"obs_fold", "ctl_in_value", "nul_in_value"})


def for_h11(spec: Spec) -> Spec:
    """``spec`` with what the hub accepts and h11 refuses undone.

    - HTTP/1.1 without Host: RFC 9112 §3.2 says to refuse it; the hub has always
      answered it (tests/test_http_edges.py sends one), so h11 gets a Host added.
    - an empty line before the request line: RFC 9112 §2.2 says to ignore it (llhttp
      does); h11 refuses it.
    - two spaces after the method: RFC 9112 §3 lets a recipient split on whitespace
      (llhttp does); h11 refuses it.
    """
    defects = spec.defects - {"leading_crlf", "double_space"}
    fields = spec.fields
    if spec.version == "1.1" and not spec.values("host"):
        fields = (*fields, H11_HOST)
    return replace(spec, defects=defects, fields=fields)


def parse_hub(data: bytes) -> Parsed:
    connection = H1Connection(body_limit, max_headers=MAX_HEADERS)
    connection.receive_data(data)
    events = connection.events_received()
    if not events:
        return Parsed("incomplete")
    first = events[0]
    if isinstance(first, Rejection):
        return Parsed("refused")
    upgrade = isinstance(first, Upgrade)
    request = first.request if isinstance(first, Upgrade) else first
    assert isinstance(request, Request)
    return Parsed(
        "accepted",
        request.method,
        request.target,
        tuple((n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in request.raw_headers),
        request.body,
        keep_alive=request.keep_alive,
        upgrade=upgrade,
        expects_continue=connection.data_to_send() == CONTINUE,
    )


def parse_h11(data: bytes) -> Parsed:
    """h11's reading of ``data``."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
    connection.receive_data(data)
    request: h11.Request | None = None
    body = b""
    expects_continue = False
    try:
        while True:
            item = connection.next_event()
            if isinstance(item, h11.Request):
                request = item
                expects_continue = connection.they_are_waiting_for_100_continue
            elif isinstance(item, h11.Data):
                body += item.data
            elif isinstance(item, h11.EndOfMessage):
                break
            else:  # NEED_DATA, or PAUSED before a complete message
                return Parsed("incomplete")
    except h11.RemoteProtocolError:
        return Parsed("refused")
    assert request is not None
    state = connection.their_state
    return Parsed(
        "accepted",
        request.method.decode(),
        request.target.decode("latin-1"),
        tuple((n.decode("latin-1"), v.decode("latin-1")) for n, v in request.headers),
        body,
        keep_alive=state is h11.DONE,
        # After a whole request the client is DONE, MUST_CLOSE or MIGHT_SWITCH_PROTOCOL.
        upgrade=state is not h11.DONE and state is not h11.MUST_CLOSE,
        expects_continue=expects_continue,
    )


def expected_from_h11(spec: Spec, h11_view: Parsed) -> Parsed:
    """h11's reading turned into what the hub's policy answers (the documented rules)."""
    if h11_view.outcome != "accepted":
        return h11_view
    headers = list(h11_view.headers)
    if spec.version == "1.1" and not spec.values("host"):
        headers.remove(("host", H11_HOST[1].strip()))
    # h11 lower-cases Transfer-Encoding values; the hub passes them on as sent.
    ours = {v.strip(" \t") for n, v in spec.fields if n.lower() == "transfer-encoding"}
    headers = [
        (n, next(o for o in ours if o.lower() == v)) if n == "transfer-encoding" else (n, v)
        for n, v in headers
    ]
    # h11 takes any Upgrade field as a proposal; llhttp needs "Connection: upgrade" too.
    upgrade = h11_view.upgrade and "upgrade" in spec.tokens("connection")
    keep_alive = h11_view.keep_alive
    if spec.version == "1.0":
        # h11 closes every HTTP/1.0 connection; llhttp keeps it open when asked to
        # (RFC 9112 §9.3), unless the framing was chunked (RFC 9112 §6.1).
        keep_alive = "keep-alive" in spec.tokens("connection") and spec.framing != "chunked"
    elif h11_view.upgrade and not upgrade:
        # h11 waits to see whether the server switches; the hub reads on, as usual.
        keep_alive = "close" not in spec.tokens("connection")
    if upgrade:
        keep_alive = False
    return replace(h11_view, headers=tuple(headers), upgrade=upgrade, keep_alive=keep_alive)


def check_agreement(spec: Spec, parse: Callable[[bytes], Parsed] = parse_hub) -> str:
    """Assert that the hub's reading of ``spec`` is h11's, under the documented rules.

    Returns:
        Which case it was, for hypothesis' statistics.
    """
    ours = parse(render(spec))
    refusals = policy_refusals(spec)
    if refusals:
        assert ours.outcome == "refused", (refusals, ours)
        return f"policy: {refusals[0]}"
    theirs = parse_h11(render(for_h11(spec)))
    assert ours == expected_from_h11(spec, theirs)
    return f"both {theirs.outcome}" + (" with defects" if spec.defects else "")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_hub_and_h11_agree_on_generated_requests(spec: Spec) -> None:
    event(check_agreement(spec))


# ---------------------------------------------------------------------- the rules, checked

PLAIN = Spec(
    "POST", "/api/events?x=1", "1.1", (("Host", " h"), ("Content-Length", " 2")), "length", b"{}"
)


@pytest.mark.parametrize(
    "spec",
    [
        replace(PLAIN, method="CONNECT"),
        replace(PLAIN, method="FOO"),
        replace(PLAIN, version="2.0"),
        replace(PLAIN, fields=(*PLAIN.fields, ("Content-Length", " 2"))),
        replace(PLAIN, fields=(("Host", " h"), ("Content-Length", " 2, 2"))),
        replace(PLAIN, fields=(*PLAIN.fields, ("Authorization", " a"), ("Authorization", " a"))),
        replace(PLAIN, fields=PLAIN.fields + (("X-A", " a"),) * MAX_HEADERS),
        replace(PLAIN, defects=frozenset({"bare_lf"})),
        replace(PLAIN, defects=frozenset({"obs_fold"})),
        replace(PLAIN, defects=frozenset({"ctl_in_value"})),
        replace(PLAIN, target="/api/events?x=%FF"),
    ],
    ids=lambda s: ",".join(policy_refusals(s)),
)
def test_each_policy_refusal_is_a_real_disagreement(spec: Spec) -> None:
    # The rule is needed: h11 accepts the request, the hub refuses it.
    assert parse_h11(render(for_h11(spec))).outcome == "accepted"
    assert parse_hub(render(spec)).outcome == "refused"


@pytest.mark.parametrize(
    "spec",
    [
        replace(PLAIN, fields=(("Content-Length", " 2"),)),
        replace(PLAIN, defects=frozenset({"leading_crlf"})),
        replace(PLAIN, defects=frozenset({"double_space"})),
    ],
    ids=["no-host", "leading-crlf", "double-space"],
)
def test_each_h11_only_refusal_is_a_real_disagreement(spec: Spec) -> None:
    assert parse_h11(render(spec)).outcome == "refused"
    assert parse_hub(render(spec)).outcome == "accepted"
    check_agreement(spec)


def test_both_accept_a_plain_request_and_read_it_alike() -> None:
    ours = parse_hub(render(PLAIN))
    assert ours.outcome == "accepted"
    assert (ours.method, ours.target, ours.body) == ("POST", "/api/events?x=1", b"{}")
    check_agreement(PLAIN)


@pytest.mark.parametrize(
    "defect", ["nul_in_value", "space_before_colon", "bad_name", "space_in_target"]
)
def test_both_refuse_a_defect_neither_tolerates(defect: str) -> None:
    spec = replace(PLAIN, defects=frozenset({defect}))
    assert policy_refusals(spec) == []
    assert parse_h11(render(spec)).outcome == "refused"
    check_agreement(spec)


def test_the_comparison_catches_a_parser_that_reads_differently() -> None:
    # A parser that loses the last header field, or accepts what h11 refuses, is caught.
    def drops_a_field(data: bytes) -> Parsed:
        parsed = parse_hub(data)
        return replace(parsed, headers=parsed.headers[:-1])

    def accepts_everything(data: bytes) -> Parsed:
        return replace(parse_hub(render(PLAIN)), outcome="accepted")

    with pytest.raises(AssertionError):
        check_agreement(PLAIN, drops_a_field)
    with pytest.raises(AssertionError):
        check_agreement(replace(PLAIN, defects=frozenset({"nul_in_value"})), accepts_everything)
