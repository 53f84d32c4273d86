"""The GitHub connector against a local GitHub replaying recorded REST responses.

Here the connector is driven alone (one real HTTP client, one real local server);
tests/test_connectors_github_hub.py runs it inside a hub.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from hub.connectors import Credentials, FetchResult
from hub.connectors.github import GitHubConnector, github_oauth
from hub.connectors.github_http import API_VERSION, MAX_CACHED_PAGES
from hub.core.timefmt import format_ms

from .conftest import timeout
from .github_replay import GitHubReplay, fixture
from .local_http import Reply, Seen

TOKEN = Credentials("ghp_16C7e42F292c6912E7710c838347Ae178B4a")
REPOS = "/user/repos?per_page=100&sort=updated"
REPOS_2 = REPOS + "&page=2"
ISSUES = "/issues?filter=all&state=all&sort=updated&direction=desc&per_page=100"
NOTIFICATIONS = "/notifications?per_page=50"
ENTITIES = [
    "github/repo/octocat/Hello-World",
    "github/repo/acme-labs/flux-agents",
    "github/repo/octocat/Spoon-Knife",
    "github/issue/octocat/Hello-World/1347",
    "github/pull/acme-labs/flux-agents/88",
    "github/pull/octocat/Hello-World/1340",
    "github/notification/14813457190",
    "github/notification/14810222001",
]


@pytest.fixture
async def github() -> AsyncIterator[GitHubReplay]:
    async with GitHubReplay() as replay:
        yield replay


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False) as http:
        yield http


class Clock:
    """Wall time that a test moves on (X-Poll-Interval is 60 s in the recordings)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def connector(
    client: httpx.AsyncClient, api_url: str, clock: Clock | None = None, **kw: Any
) -> GitHubConnector:
    return GitHubConnector(
        client, api_url=api_url, timeout=timeout(5), clock=clock or Clock(), **kw
    )


def by_id(result: FetchResult) -> dict[str, dict[str, Any]]:
    return {e["payload"]["entity_id"]: e for e in result.events}


async def test_poll_reads_repositories_issues_pulls_and_notifications_across_pages(
    github: GitHubReplay, client: httpx.AsyncClient
) -> None:
    result = await connector(client, github.api_url).fetch(TOKEN)
    assert result.error is None and result.not_before is None
    assert github.targets() == [REPOS, REPOS_2, ISSUES, NOTIFICATIONS]
    assert result.figures == {
        "requests": 4,
        "not_modified": 0,
        "rate_limit_limit": 5000,
        "rate_limit_remaining": 4995,
        "rate_limit_reset": github.reset * 1000,
    }
    for seen in github.requests:
        assert seen.headers["authorization"] == f"Bearer {TOKEN.access_token}"
        assert seen.headers["accept"] == "application/vnd.github+json"
        assert seen.headers["x-github-api-version"] == API_VERSION
        assert seen.headers["user-agent"].startswith("flux-hub")
        assert "if-none-match" not in seen.headers
    events = by_id(result)
    assert list(events) == ENTITIES
    for event in result.events:
        assert (event["stream"], event["source"]) == ("connectors", "github")
        assert event["eventId"].startswith("github-")
    repo = events["github/repo/octocat/Hello-World"]["payload"]["properties"]
    assert repo == {
        "full_name": "octocat/Hello-World",
        "name": "Hello-World",
        "owner": "octocat",
        "private": False,
        "visibility": "public",
        "description": "My first repository on GitHub!",
        "html_url": "https://github.com/octocat/Hello-World",
        "default_branch": "main",
        "language": "Ruby",
        "topics": ["demo", "octocat"],
        "fork": False,
        "archived": False,
        "stargazers_count": 2713,
        "forks_count": 2602,
        "open_issues_count": 2,
        "created_at": "2024-03-02T10:11:12Z",
        "updated_at": "2026-12-05T17:30:02Z",
        "pushed_at": "2026-12-05T17:29:58Z",
    }
    issue = events["github/issue/octocat/Hello-World/1347"]["payload"]["properties"]
    assert issue == {
        "kind": "issue",
        "repository": "octocat/Hello-World",
        "number": 1347,
        "title": "Found a bug",
        "state": "open",
        "state_reason": None,
        "author": "octocat",
        "assignees": ["hubot"],
        "labels": ["bug"],
        "milestone": "v1.0",
        "comments": 3,
        "locked": False,
        "html_url": "https://github.com/octocat/Hello-World/issues/1347",
        "created_at": "2026-11-30T12:00:00Z",
        "updated_at": "2026-12-05T17:02:11Z",
        "closed_at": None,
    }
    draft = events["github/pull/acme-labs/flux-agents/88"]["payload"]["properties"]
    assert draft["kind"] == "pull_request" and draft["draft"] is True
    assert draft["merged_at"] is None and draft["state"] == "open"
    merged = events["github/pull/octocat/Hello-World/1340"]["payload"]["properties"]
    assert merged["merged_at"] == "2026-12-01T10:00:07Z" and merged["state"] == "closed"
    thread = events["github/notification/14813457190"]["payload"]["properties"]
    assert thread == {
        "reason": "review_requested",
        "unread": True,
        "title": "Subscribe to GitHub entities",
        "subject_type": "PullRequest",
        "subject_url": "https://api.github.com/repos/acme-labs/flux-agents/pulls/88",
        "repository": "acme-labs/flux-agents",
        "updated_at": "2026-12-04T09:13:05Z",
        "last_read_at": None,
    }


async def test_second_poll_is_conditional_and_publishes_the_same_event_ids(
    github: GitHubReplay, client: httpx.AsyncClient
) -> None:
    clock = Clock()
    github_connector = connector(client, github.api_url, clock)
    first = await github_connector.fetch(TOKEN)
    del github.requests[:]
    clock.now += 300
    second = await github_connector.fetch(TOKEN)
    assert second.error is None
    assert second.figures["requests"] == 4 and second.figures["not_modified"] == 3
    since = "&since=2026-12-05T17%3A02%3A11Z"  # the newest issue's updated_at
    assert github.targets() == [REPOS, REPOS_2, ISSUES + since, NOTIFICATIONS]
    etags = [seen.headers.get("if-none-match") for seen in github.requests]
    assert etags == [
        fixture("repos-page-1")["headers"]["etag"],
        fixture("repos-page-2")["headers"]["etag"],
        None,  # a new URL (since): nothing cached for it
        fixture("notifications")["headers"]["etag"],
    ]
    # Repositories and notifications came back 304: nothing to publish. The issues
    # came back (since is inclusive), with the event ids of the first poll, which
    # the hub drops as duplicates.
    first_ids = {e["payload"]["entity_id"]: e["eventId"] for e in first.events}
    assert [e["payload"]["entity_id"] for e in second.events] == ENTITIES[3:6]
    for event in second.events:
        assert event["eventId"] == first_ids[event["payload"]["entity_id"]]


async def test_pages_per_poll_are_bounded(github: GitHubReplay, client: httpx.AsyncClient) -> None:
    result = await connector(client, github.api_url, max_pages=1).fetch(TOKEN)
    assert github.targets() == [REPOS, ISSUES, NOTIFICATIONS]
    assert "github/repo/octocat/Spoon-Knife" not in by_id(result)
    assert result.error is None


async def test_403_rate_limit_stops_every_request_until_the_reset(
    github: GitHubReplay, client: httpx.AsyncClient
) -> None:
    def limited(seen: Seen, target: str) -> Reply | None:
        return github.reply("rate-limit-403") if target.startswith("/issues") else None

    github.override = limited
    result = await connector(client, github.api_url).fetch(TOKEN)
    # What was read before the limit is kept; nothing is asked after it.
    assert github.targets() == [REPOS, REPOS_2, ISSUES]
    assert list(by_id(result)) == ENTITIES[:3]
    assert result.not_before == github.reset * 1000
    assert result.error == (
        "GitHub rate limit used up (X-RateLimit-Remaining: 0 of 5000 requests per hour,"
        f" HTTP 403): no request before {format_ms(github.reset * 1000)} (X-RateLimit-Reset)"
    )


async def test_a_success_that_uses_the_last_request_stops_the_poll(
    github: GitHubReplay, client: httpx.AsyncClient
) -> None:
    def last_one(seen: Seen, target: str) -> Reply | None:
        if target == REPOS:
            return github.reply("repos-page-1", **{"x-ratelimit-remaining": "0"})
        return None

    github.override = last_one
    result = await connector(client, github.api_url).fetch(TOKEN)
    assert github.targets() == [REPOS]
    assert list(by_id(result)) == ENTITIES[:2]
    assert result.not_before == github.reset * 1000
    assert result.error is not None and "X-RateLimit-Remaining: 0" in result.error


async def test_429_with_retry_after_waits_that_long(
    github: GitHubReplay, client: httpx.AsyncClient
) -> None:
    github.override = lambda seen, target: github.reply("secondary-limit-429")
    before = time.time()
    result = await connector(client, github.api_url).fetch(TOKEN)
    after = time.time()
    assert github.targets() == [REPOS] and result.events == []
    assert result.not_before is not None
    assert int(before + 30) * 1000 - 1000 <= result.not_before <= (after + 30) * 1000
    assert result.error is not None
    assert result.error.startswith("GitHub rate limit (HTTP 429, Retry-After: 30): no request")


async def test_429_without_retry_after_waits_a_minute(
    github: GitHubReplay, client: httpx.AsyncClient
) -> None:
    reply = github.reply("secondary-limit-429")
    del reply.headers["retry-after"]
    github.override = lambda seen, target: reply
    before = time.time()
    result = await connector(client, github.api_url).fetch(TOKEN)
    assert result.not_before is not None and result.not_before >= (before + 59) * 1000


async def test_401_fails_the_poll_with_a_clear_error_and_no_token(
    github: GitHubReplay, client: httpx.AsyncClient
) -> None:
    github.override = lambda seen, target: github.reply("bad-credentials-401")
    result = await connector(client, github.api_url).fetch(TOKEN)
    assert result.events == [] and result.not_before is None
    assert result.error == "GitHub refused the token (HTTP 401: Bad credentials): store a new one"
    assert TOKEN.access_token not in result.error
    assert github.targets() == [REPOS]
    assert result.figures == {
        "requests": 1,
        "not_modified": 0,
        "rate_limit_limit": 60,
        "rate_limit_remaining": 59,
        "rate_limit_reset": github.reset * 1000,
    }


async def test_a_refused_section_is_reported_and_the_others_are_read(
    github: GitHubReplay, client: httpx.AsyncClient
) -> None:
    # A fine-grained token cannot read notifications: GitHub says 403, no limit.
    body = {
        "message": "Resource not accessible by personal access token",
        "documentation_url": "https://docs.github.com/rest/activity/notifications",
        "status": "403",
    }

    def refuse(seen: Seen, target: str) -> Reply | None:
        if target.startswith("/notifications"):
            return Reply(403, httpx.Response(200, json=body).content, {})
        return None

    github.override = refuse
    result = await connector(client, github.api_url).fetch(TOKEN)
    assert list(by_id(result)) == ENTITIES[:6]
    assert result.not_before is None
    assert result.error == (
        "notifications: HTTP 403 Forbidden: Resource not accessible by personal access token"
    )


async def test_notification_that_was_read_gets_unread_false(
    github: GitHubReplay, client: httpx.AsyncClient
) -> None:
    clock = Clock()
    github_connector = connector(client, github.api_url, clock)
    await github_connector.fetch(TOKEN)
    clock.now += 300
    recorded = fixture("notifications")
    unread_only_one = recorded["body"][:1]

    def one_read(seen: Seen, target: str) -> Reply | None:
        if target == NOTIFICATIONS:
            return Reply(200, httpx.Response(200, json=unread_only_one).content, {})
        return None

    github.override = one_read
    result = await github_connector.fetch(TOKEN)
    events = by_id(result)
    assert events["github/notification/14810222001"]["payload"]["properties"] == {"unread": False}
    assert "github/notification/14813457190" in events


async def test_enterprise_server_under_api_v3(client: httpx.AsyncClient) -> None:
    async with GitHubReplay(prefix="/api/v3") as enterprise:
        assert enterprise.api_url.endswith("/api/v3")
        github_connector = connector(client, enterprise.api_url + "/")
        result = await github_connector.fetch(TOKEN)
        assert result.error is None and list(by_id(result)) == ENTITIES
        # Every request, the Link-followed page 2 included, went under /api/v3.
        assert [seen.target for seen in enterprise.requests] == [
            "/api/v3" + target for target in (REPOS, REPOS_2, ISSUES, NOTIFICATIONS)
        ]
        host = enterprise.api_url.removesuffix("/api/v3")
        assert github_connector.oauth_config == github_oauth(enterprise.api_url)
        assert github_oauth(enterprise.api_url).auth_url == f"{host}/login/oauth/authorize"
        assert github_oauth(enterprise.api_url).token_url == f"{host}/login/oauth/access_token"


async def test_next_link_to_another_host_is_not_followed(
    github: GitHubReplay, client: httpx.AsyncClient
) -> None:
    def elsewhere(seen: Seen, target: str) -> Reply | None:
        if target == REPOS:
            return github.reply("repos-page-1", link='<https://evil.example/x>; rel="next"')
        return None

    github.override = elsewhere
    result = await connector(client, github.api_url).fetch(TOKEN)
    assert github.targets() == [REPOS, ISSUES, NOTIFICATIONS]
    assert result.error is not None
    assert result.error.startswith("repositories: GET /user/repos?per_page=100&sort=updated:")
    assert "another host" in result.error


async def test_unreachable_github_and_garbage_are_section_errors(
    github: GitHubReplay, client: httpx.AsyncClient
) -> None:
    def garbage(seen: Seen, target: str) -> Reply | None:
        if target == REPOS:
            return Reply(200, b"<html>", {"content-type": "text/html"})
        if target.startswith("/issues"):
            return Reply(200, b'{"message": "not a list"}', {})
        if target.startswith("/notifications"):
            return Reply(200, b'[{"no_id": 1}]', {})
        return None

    github.override = garbage
    result = await connector(client, github.api_url).fetch(TOKEN)
    assert result.events == []
    assert result.error == (
        "repositories: GET /user/repos?per_page=100&sort=updated: the answer is not JSON; "
        f"issues: GET {ISSUES}: expected a JSON array, got dict; "
        f"notifications: GET {NOTIFICATIONS}: an item is not shaped as documented (KeyError('id'))"
    )


def test_page_cache_is_bounded() -> None:
    from hub.connectors.github_http import PageCache, _Cached

    cache = PageCache()
    for n in range(MAX_CACHED_PAGES + 10):
        cache.put(f"/p{n}", _Cached(f"e{n}", (), None))
    assert len(cache.pages) == MAX_CACHED_PAGES
    assert cache.get("/p0") is None and cache.get(f"/p{MAX_CACHED_PAGES + 9}") is not None


async def test_issues_cut_by_a_rate_limit_are_read_again_from_the_same_since(
    github: GitHubReplay, client: httpx.AsyncClient
) -> None:
    page_2 = ISSUES + "&page=2"

    def limited_on_page_2(seen: Seen, target: str) -> Reply | None:
        if target == ISSUES:
            return github.reply("issues", link=f'<{github.api_url}{page_2}>; rel="next"')
        if target == page_2:
            return github.reply("rate-limit-403")
        return None

    github_connector = connector(client, github.api_url)
    github.override = limited_on_page_2
    first = await github_connector.fetch(TOKEN)
    assert github.targets() == [REPOS, REPOS_2, ISSUES, page_2]
    assert list(by_id(first)) == ENTITIES[:6] and first.not_before == github.reset * 1000
    github.override = None
    del github.requests[:]
    await github_connector.fetch(TOKEN)
    # Not "since the newest issue of page 1": page 2's older updates would be lost.
    assert github.targets()[2] == ISSUES


@pytest.mark.parametrize("token", ["ghp_…", "ghp x", "ghp\nx", "", "  "])
async def test_a_token_that_cannot_be_sent_is_reported_without_quoting_it(
    github: GitHubReplay, client: httpx.AsyncClient, token: str
) -> None:
    result = await connector(client, github.api_url).fetch(Credentials(token))
    assert github.requests == [] and result.events == []
    assert result.error == (
        "the stored GitHub token cannot be sent: it must be printable ASCII without spaces"
        " (a personal access token or an OAuth token); store it again"
    )


async def test_a_pasted_token_s_surrounding_whitespace_is_dropped(
    github: GitHubReplay, client: httpx.AsyncClient
) -> None:
    result = await connector(client, github.api_url).fetch(Credentials(f" {TOKEN.access_token}\n"))
    assert result.error is None
    assert github.requests[0].headers["authorization"] == f"Bearer {TOKEN.access_token}"


async def test_notifications_wait_for_github_s_poll_interval(
    github: GitHubReplay, client: httpx.AsyncClient
) -> None:
    assert fixture("notifications")["headers"]["x-poll-interval"] == "60"
    clock = Clock()
    github_connector = connector(client, github.api_url, clock)
    await github_connector.fetch(TOKEN)
    for seconds in (30, 29.9, 0.2):
        clock.now += seconds
        del github.requests[:]
        await github_connector.fetch(TOKEN)
        asked = NOTIFICATIONS in github.targets()
        assert asked == (seconds == 0.2), seconds  # 60.1 s after the first
