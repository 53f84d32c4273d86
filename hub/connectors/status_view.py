"""The status fields of a catalogue connector beside Flux's (docs/connectors.md).

``GET /api/connectors/:name`` shows, once a connector was polled, the figures the
Singer taps show too (:mod:`.singer_api`), plus the connector's own; and for a
connector that is not available, why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..core.timefmt import format_ms
from .poller import as_number

if TYPE_CHECKING:
    from ..store.connectors import JobStatus

__all__ = ["optional_time", "run_figures", "unavailable_view"]


def optional_time(ms: int | None) -> str | None:
    """A status time (epoch ms) as the API shows it (RFC 3339); None stays None."""
    return None if ms is None else format_ms(ms)


def run_figures(status: JobStatus) -> dict[str, Any]:
    """A polled connector's figures, named as the Singer taps' (docs/connectors.md):
    polls and failures, what the last poll published, and the connector's own."""
    figures = status.figures
    view: dict[str, Any] = {
        "runs": status.polls,
        "failures": status.failures,
        "records": figures.get("records", 0),
        "duplicates": figures.get("duplicates", 0),
        "rejected": figures.get("rejected", 0),
        "records_total": figures.get("records_total", 0),
    }
    for name in ("requests", "not_modified"):
        if name in figures:
            view[name] = figures[name]
    if "rate_limit_remaining" in figures:
        limit: dict[str, Any] = {"remaining": figures["rate_limit_remaining"]}
        if "rate_limit_limit" in figures:
            limit["limit"] = figures["rate_limit_limit"]
        if "rate_limit_reset" in figures:
            limit["reset"] = format_ms(figures["rate_limit_reset"])
        view["rate_limit"] = limit
    return view


def unavailable_view(name: str, poll_interval: float, reason: str) -> dict[str, Any]:
    """``GET /api/connectors/:name`` for a connector that is not available."""
    return {
        "name": name,
        "enabled": False,
        "status": "not_available",
        "poll_interval_seconds": as_number(poll_interval),
        "available": False,
        "reason": reason,
    }
