"""The hub's one timestamp format: RFC 3339, UTC, milliseconds (hub/core/timefmt.py).

Formatting is ours (``2026-02-25T20:04:27.638Z``); parsing accepts both of Flux's
forms (chrono's ``+00:00`` with 9 fraction digits, and ``Z``) and other offsets.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hub.core import format_ms, parse_rfc3339_ms

#: 2026-02-25T20:04:27.638Z, the instant FLUX_COMPAT.md §1.0 quotes.
FEB_25_2026 = 1_772_049_867_638
#: 0001-01-01T00:00:00.000Z and 9999-12-31T23:59:59.999Z: the range RFC 3339 can write.
MIN_MS = -62_135_596_800_000
MAX_MS = 253_402_300_799_999


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        pytest.param(0, "1970-01-01T00:00:00.000Z", id="epoch"),
        pytest.param(5, "1970-01-01T00:00:00.005Z", id="pads-millis-to-3"),
        pytest.param(50, "1970-01-01T00:00:00.050Z", id="pads-tens-of-millis"),
        pytest.param(999, "1970-01-01T00:00:00.999Z", id="max-millis"),
        pytest.param(1_000, "1970-01-01T00:00:01.000Z", id="whole-second"),
        pytest.param(FEB_25_2026, "2026-02-25T20:04:27.638Z", id="2026"),
        pytest.param(1_709_208_000_000, "2024-02-29T12:00:00.000Z", id="leap-day"),
        pytest.param(-1, "1969-12-31T23:59:59.999Z", id="before-epoch"),
        pytest.param(MIN_MS, "0001-01-01T00:00:00.000Z", id="year-1"),
        pytest.param(MAX_MS, "9999-12-31T23:59:59.999Z", id="year-9999"),
    ],
)
def test_format_ms_writes_rfc3339_utc_millis(ms: int, text: str) -> None:
    assert format_ms(ms) == text


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        pytest.param("2026-02-25T20:04:27.638Z", FEB_25_2026, id="z"),
        pytest.param("2026-02-25T20:04:27.638z", FEB_25_2026, id="lowercase-z"),
        pytest.param("2026-02-25T20:04:27.638+00:00", FEB_25_2026, id="plus-00-00"),
        pytest.param("2026-02-25T22:04:27.638+02:00", FEB_25_2026, id="east-offset"),
        pytest.param("2026-02-25T14:34:27.638-05:30", FEB_25_2026, id="west-offset"),
        pytest.param("2026-02-25T20:04:27.638770186+00:00", FEB_25_2026, id="chrono-http"),
        pytest.param("2026-02-25T20:04:27.638770186Z", FEB_25_2026, id="chrono-ws"),
        pytest.param("2026-02-25T20:04:27.638999999Z", FEB_25_2026, id="truncates-sub-ms"),
        pytest.param("2026-02-25T20:04:27.638", FEB_25_2026, id="no-offset-is-utc"),
        pytest.param("2026-02-25T20:04:27.638770186", FEB_25_2026, id="no-offset-9-digits"),
        pytest.param("2026-02-25T20:04:27Z", FEB_25_2026 - 638, id="no-fraction"),
        pytest.param("2026-02-25T20:04:27.6Z", FEB_25_2026 - 38, id="one-digit"),
        pytest.param(" 2026-02-25T20:04:27.638Z\n", FEB_25_2026, id="surrounding-space"),
        pytest.param("1970-01-01T00:00:00Z", 0, id="epoch"),
    ],
)
def test_parse_rfc3339_ms_reads_timestamp(text: str, ms: int) -> None:
    assert parse_rfc3339_ms(text) == ms


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-02-25T25:00:00Z",
        "2026-02-25T20:04:27+25:00",
        "2026-02-25T20:04:27.abcZ",
        "1772049867638",
    ],
)
def test_parse_rfc3339_ms_rejects_garbage_with_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="isoformat|offset|range|must be in"):
        parse_rfc3339_ms(text)


@settings(max_examples=300, deadline=None)
@given(ms=st.integers(min_value=MIN_MS, max_value=MAX_MS))
@example(ms=FEB_25_2026)
@example(ms=1_093_905_558_087)  # 2004-08-30T22:39:18.087Z
@example(ms=1_071_880_555)  # 1970-01-13T09:44:40.555Z
def test_parse_rfc3339_ms_reads_back_what_format_ms_writes(ms: int) -> None:
    assert parse_rfc3339_ms(format_ms(ms)) == ms


@settings(max_examples=200, deadline=None)
@given(ms=st.integers(min_value=MIN_MS, max_value=MAX_MS), nanos=st.integers(0, 999_999))
@example(ms=1_093_905_558_087, nanos=0)
@example(ms=-1, nanos=1_000)  # 1969-12-31T23:59:59.999001Z is in the millisecond -1
def test_parse_rfc3339_ms_drops_sub_millisecond_digits_of_chrono_timestamp(
    ms: int, nanos: int
) -> None:
    chrono = format_ms(ms).replace("Z", f"{nanos:06d}+00:00")
    assert parse_rfc3339_ms(chrono) == ms
