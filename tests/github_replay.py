"""A local GitHub: replays the recorded REST responses of tests/fixtures/github/.

Each fixture is one exchange as GitHub answered it: ``request`` (``GET <path?query>``,
or ``GET *`` for an answer a test serves on purpose), ``status``, ``headers`` and
``body``. In headers, ``{base}`` stands for the API root the server plays (Link
targets) and ``{reset}`` for the rate limit's reset (epoch seconds, one hour ahead
unless a test says otherwise).

The server answers as GitHub does: a known request with its recorded page, a
``If-None-Match`` that matches the page's ``ETag`` with ``304 Not Modified`` (the
rate-limit headers and the ETag, no body), an issues request with ``since`` with the
issues page (GitHub's ``since`` is inclusive: the newest issue comes back), anything
else with GitHub's 404. ``prefix`` plays GitHub Enterprise Server (``/api/v3``).
A test can answer a request itself with :attr:`GitHubReplay.override`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson

from .local_http import LocalServer, Reply, Seen

FIXTURES = Path(__file__).parent / "fixtures" / "github"


def fixture(name: str) -> dict[str, Any]:
    """A recorded exchange, as stored."""
    value: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return value


class GitHubReplay:
    """``async with GitHubReplay() as github``; ``github.api_url`` is its API root."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.reset = int(time.time()) + 3600
        self.pages: dict[str, dict[str, Any]] = {}
        for path in sorted(FIXTURES.glob("*.json")):
            recorded = fixture(path.stem)
            method, _, target = recorded["request"].partition(" ")
            if target != "*":
                self.pages[target] = recorded
        #: Answers a request (the target without the prefix) before the recordings.
        self.override: Callable[[Seen, str], Reply | None] | None = None
        self.server = LocalServer(self._answer)

    async def __aenter__(self) -> GitHubReplay:
        await self.server.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.server.__aexit__(*exc_info)

    @property
    def api_url(self) -> str:
        return self.server.url(self.prefix).rstrip("/")

    @property
    def requests(self) -> list[Seen]:
        return self.server.requests

    def targets(self) -> list[str]:
        """The requests seen, as ``<target without prefix>``."""
        return [seen.target[len(self.prefix) :] for seen in self.requests]

    def reply(self, name: str, **headers: str) -> Reply:
        """A recorded exchange as the server would send it (headers may be replaced)."""
        recorded = fixture(name)
        merged = {**self._headers(recorded), **headers}
        return Reply(recorded["status"], orjson.dumps(recorded["body"]), merged)

    def _headers(self, recorded: dict[str, Any]) -> dict[str, str]:
        return {
            k: v.replace("{base}", self.api_url).replace("{reset}", str(self.reset))
            for k, v in recorded["headers"].items()
        }

    def _answer(self, seen: Seen) -> Reply:
        if not seen.target.startswith(self.prefix + "/"):
            return _not_found()
        target = seen.target[len(self.prefix) :]
        if self.override is not None:
            answer = self.override(seen, target)
            if answer is not None:
                return answer
        recorded = self.pages.get(target) or self.pages.get(_without_since(target))
        if recorded is None:
            return _not_found()
        headers = self._headers(recorded)
        if seen.headers.get("if-none-match") == headers.get("etag"):
            kept = {k: v for k, v in headers.items() if k != "content-type"}
            return Reply(304, b"", kept)
        return Reply(recorded["status"], orjson.dumps(recorded["body"]), headers)


def _without_since(target: str) -> str:
    parts = urlsplit(target)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "since"]
    return parts.path + ("?" + urlencode(query) if query else "")


def _not_found() -> Reply:
    body = {
        "message": "Not Found",
        "documentation_url": "https://docs.github.com/rest",
        "status": "404",
    }
    return Reply(404, orjson.dumps(body), {"content-type": "application/json; charset=utf-8"})
