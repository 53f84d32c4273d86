"""The GitHub REST API as the GitHub connector reads it: one poll's requests.

One :class:`GitHubSession` per poll of one user's token. It

- sends ``Authorization: Bearer <token>`` (never logged, never in an error message),
  ``Accept: application/vnd.github+json``, ``X-GitHub-Api-Version`` and a
  ``User-Agent`` (GitHub refuses requests without one);
- follows ``Link: <…>; rel="next"`` for at most ``max_pages`` pages of a list;
- makes conditional requests: each page's ``ETag`` is kept (in :class:`PageCache`,
  per user, bounded) and sent back as ``If-None-Match``; a ``304 Not Modified`` costs
  no quota, and the page's items are known unchanged;
- reports ``X-Poll-Interval`` (:attr:`Page.poll_interval`), which the connector
  honours for the notifications;
- honours the rate limits (docs.github.com, "Rate limits for the REST API"):
  ``403``/``429`` with ``Retry-After`` → wait that long; ``403``/``429`` with
  ``X-RateLimit-Remaining: 0`` → wait until ``X-RateLimit-Reset``; a ``429`` with
  neither → wait 60 s; and a success that leaves ``X-RateLimit-Remaining: 0`` makes
  no further request before the reset. :class:`RateLimited` carries the time.

Errors are :class:`~hub.errors.Broken` with a short message: :class:`BadToken` for a
401, :class:`RateLimited` for a limit.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from ..core.timefmt import format_ms
from ..errors import Broken
from ..wire.jsonutil import JSONError, loads

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "API_VERSION",
    "MAX_PAGE_BYTES",
    "SECONDARY_LIMIT_WAIT",
    "BadToken",
    "GitHubSession",
    "Page",
    "PageCache",
    "RateLimited",
]

#: The REST API version asked for.
API_VERSION = "2022-11-28"
USER_AGENT = "flux-hub-github-connector"
#: Largest page body read (100 repositories are about 600 KB).
MAX_PAGE_BYTES = 8 * 1024 * 1024
#: Seconds waited after a 429 that says neither ``Retry-After`` nor a reset (GitHub:
#: "wait for at least one minute").
SECONDARY_LIMIT_WAIT = 60
#: Pages whose ETag one user's cache keeps (least recently used dropped first).
MAX_CACHED_PAGES = 256
#: Characters of GitHub's error ``message`` quoted in an error.
MAX_MESSAGE = 200


class BadToken(Broken):
    """GitHub answered 401: the token is wrong, expired or revoked."""


class RateLimited(Broken):
    """A rate limit: no request to GitHub before :attr:`until_ms`."""

    def __init__(self, message: str, until_ms: int) -> None:
        super().__init__(message)
        self.until_ms = until_ms


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list: its items, or None if unchanged since the cached ETag."""

    items: list[Any] | None
    #: The keys of the page's items (kept with the ETag, so a 304 still names them).
    keys: tuple[str, ...]
    next_url: str | None
    #: ``X-Poll-Interval``: seconds GitHub asks a client to wait before asking again
    #: (sent with notifications).
    poll_interval: int | None = None


@dataclass(slots=True)
class _Cached:
    etag: str
    keys: tuple[str, ...]
    next_url: str | None


@dataclass(slots=True)
class PageCache:
    """One user's ETags, by URL; at most :data:`MAX_CACHED_PAGES` of them."""

    pages: OrderedDict[str, _Cached] = field(default_factory=OrderedDict)

    def get(self, url: str) -> _Cached | None:
        found = self.pages.get(url)
        if found is not None:
            self.pages.move_to_end(url)
        return found

    def put(self, url: str, entry: _Cached) -> None:
        self.pages[url] = entry
        self.pages.move_to_end(url)
        while len(self.pages) > MAX_CACHED_PAGES:
            self.pages.popitem(last=False)


class GitHubSession:
    """The requests of one poll with one token.

    Args:
        client: the hub's connector HTTP client.
        api_url: the API root (``https://api.github.com``, or
            ``https://<host>/api/v3`` for GitHub Enterprise Server), no trailing ``/``.
        token: the user's token.
        cache: the user's ETags.
        timeout: seconds one request may take, body included.
        max_pages: pages of one list read per poll.
        clock: wall time in seconds.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_url: str,
        token: str,
        cache: PageCache,
        timeout: float,
        max_pages: int,
        clock: Callable[[], float],
    ) -> None:
        self.client = client
        self.api_url = api_url
        self._token = token
        self._headers = {
            "accept": "application/vnd.github+json",
            "authorization": f"Bearer {token}",
            "x-github-api-version": API_VERSION,
            "user-agent": USER_AGENT,
        }
        self.cache = cache
        self.timeout = timeout
        self.max_pages = max_pages
        self.clock = clock
        #: Requests sent, and how many were answered 304.
        self.requests = 0
        self.not_modified = 0
        #: Set when GitHub said to stop (a limit hit, or the quota used up).
        self.blocked: RateLimited | None = None
        #: The last ``X-RateLimit-Remaining`` / ``-Limit`` / ``-Reset`` seen.
        self.remaining: int | None = None
        self.limit: int | None = None
        self.reset_ms: int | None = None

    async def pages(self, path: str, key: Callable[[Any], str]) -> tuple[list[Page], bool]:
        """Read a list, following ``rel="next"`` for at most ``max_pages`` pages.

        Args:
            path: the first page, relative to the API root (``/user/repos?…``).
            key: the key of an item (kept with a page's ETag).

        Returns:
            The pages read, and whether the list was read to its end. A rate limit
            met after the first page ends the list early (:attr:`blocked` says so).

        Raises:
            BadToken, RateLimited (on the first page), Broken.
        """
        url: str | None = self.api_url + path
        pages: list[Page] = []
        while url is not None and len(pages) < self.max_pages:
            try:
                page = await self._page(url, key)
            except RateLimited:
                if not pages:
                    raise
                break  # keep the pages read: the next list stops at once
            pages.append(page)
            url = page.next_url
        return pages, url is None

    async def _page(self, url: str, key: Callable[[Any], str]) -> Page:
        if self.blocked is not None:
            raise self.blocked
        cached = self.cache.get(url)
        headers = dict(self._headers)
        if cached is not None:
            headers["if-none-match"] = cached.etag
        status, reason, response_headers, body = await self._get(url, headers)
        self._note_limits(response_headers)
        if status == 304 and cached is not None:
            self.not_modified += 1
            self._stop_if_used_up()
            return Page(None, cached.keys, cached.next_url, _poll_interval(response_headers))
        if status == 401:
            raise BadToken(
                f"GitHub refused the token (HTTP 401: {_message(body, self._token)}): store a new one"
            )
        if status in (403, 429):
            limited = self._limit_hit(status, response_headers)
            if limited is not None:
                self.blocked = limited
                raise limited
        if not 200 <= status < 300:
            raise Broken(f"HTTP {status} {reason}: {_message(body, self._token)}")
        try:
            items = loads(body)
        except JSONError:
            raise Broken(f"GET {_path(url)}: the answer is not JSON") from None
        if not isinstance(items, list):
            raise Broken(f"GET {_path(url)}: expected a JSON array, got {type(items).__name__}")
        try:
            keys = tuple(key(item) for item in items)
        except (KeyError, TypeError, ValueError) as exc:
            raise Broken(
                f"GET {_path(url)}: an item is not shaped as documented ({exc!r})"
            ) from None
        next_url = _next_link(response_headers.get("link", ""))
        if next_url is not None and not _same_origin(next_url, self.api_url):
            # The token goes with every request: never to another host.
            raise Broken(f"GET {_path(url)}: the next page is on another host ({next_url!r})")
        etag = response_headers.get("etag")
        if etag:
            self.cache.put(url, _Cached(etag, keys, next_url))
        self._stop_if_used_up()
        return Page(items, keys, next_url, _poll_interval(response_headers))

    async def _get(
        self, url: str, headers: dict[str, str]
    ) -> tuple[int, str, httpx.Headers, bytes]:
        self.requests += 1
        body = bytearray()
        try:
            with anyio.fail_after(self.timeout):
                async with self.client.stream(
                    "GET", url, headers=headers, timeout=self.timeout
                ) as response:
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > MAX_PAGE_BYTES:
                            raise Broken(f"GET {_path(url)}: larger than {MAX_PAGE_BYTES} bytes")
        except (TimeoutError, httpx.TimeoutException):
            raise Broken(
                f"GET {_path(url)}: no complete answer within {self.timeout:g} s"
            ) from None
        except httpx.ConnectError as exc:
            raise Broken(f"cannot connect to {self.api_url}: {exc or type(exc).__name__}") from None
        except httpx.HTTPError as exc:
            raise Broken(f"GET {_path(url)} failed: {type(exc).__name__}") from None
        return response.status_code, response.reason_phrase, response.headers, bytes(body)

    def _note_limits(self, headers: httpx.Headers) -> None:
        remaining = _int(headers.get("x-ratelimit-remaining"))
        if remaining is not None:
            self.remaining = remaining
            self.limit = _int(headers.get("x-ratelimit-limit"))
            reset = _int(headers.get("x-ratelimit-reset"))
            self.reset_ms = None if reset is None else reset * 1000

    def _stop_if_used_up(self) -> None:
        if self.remaining == 0 and self.reset_ms is not None and self.blocked is None:
            self.blocked = RateLimited(self._exhausted(), self.reset_ms)

    def _limit_hit(self, status: int, headers: httpx.Headers) -> RateLimited | None:
        now_ms = math.floor(self.clock() * 1000)
        wait = _int(headers.get("retry-after"))
        if wait is not None:
            return RateLimited(
                f"GitHub rate limit (HTTP {status}, Retry-After: {wait}): no request"
                f" before {format_ms(now_ms + wait * 1000)}",
                now_ms + wait * 1000,
            )
        if self.remaining == 0 and self.reset_ms is not None:
            return RateLimited(self._exhausted(status), max(self.reset_ms, now_ms))
        if status == 429:
            until = now_ms + SECONDARY_LIMIT_WAIT * 1000
            return RateLimited(
                f"GitHub rate limit (HTTP 429): no request before {format_ms(until)}", until
            )
        return None  # a 403 that is not a limit: a permission problem

    def _exhausted(self, status: int | None = None) -> str:
        assert self.reset_ms is not None
        per_hour = "" if self.limit is None else f" of {self.limit} requests per hour"
        answer = "" if status is None else f", HTTP {status}"
        return (
            f"GitHub rate limit used up (X-RateLimit-Remaining: 0{per_hour}{answer}):"
            f" no request before {format_ms(self.reset_ms)} (X-RateLimit-Reset)"
        )


# ---------------------------------------------------------------------- helpers


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdigit() else None


def _poll_interval(headers: httpx.Headers) -> int | None:
    return _int(headers.get("x-poll-interval"))


def _next_link(header: str) -> str | None:
    """The ``rel="next"`` target of a ``Link`` header (RFC 8288), or None."""
    for part in header.split(","):
        target, _, params = part.partition(";")
        target = target.strip()
        if not (target.startswith("<") and target.endswith(">")):
            continue
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "rel" and "next" in value.strip().strip('"').split():
                return target[1:-1]
    return None


def _same_origin(url: str, base: str) -> bool:
    try:
        a, b = httpx.URL(url), httpx.URL(base)
    except httpx.InvalidURL:
        return False
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


def _message(body: bytes, token: str) -> str:
    """GitHub's error ``message`` (or the start of the body), the token blanked: an
    answer echoing the credential it was sent must not carry it into the connector's
    ``last_error`` (shown by the status endpoints, kept in Redis)."""
    try:
        value = loads(body)
    except JSONError:
        value = None
    text = value.get("message") if isinstance(value, dict) else None
    if not isinstance(text, str):
        text = body[: MAX_MESSAGE + len(token)].decode(errors="replace") or "no message"
    if token:
        text = text.replace(token, "***")
    return text[:MAX_MESSAGE]


def _path(url: str) -> str:
    """A URL as errors show it: the path and query only."""
    parsed = httpx.URL(url)
    query = parsed.query.decode()
    return parsed.path + ("?" + query if query else "")
