"""The GitHub connector: repositories, issues, pull requests and notifications.

Reads the GitHub REST API directly (:mod:`.github_http`: pagination, conditional
requests, rate limits) with the token a user stored (``POST
/api/connectors/github/token``) or got through the OAuth flow. Each poll makes, in
this order:

1. ``GET /user/repos?per_page=100&sort=updated``: the repositories the token can
   see (owned, collaborator, organization member) → ``github/repo/<owner>/<name>``;
2. ``GET /issues?filter=all&state=all&sort=updated&direction=desc&per_page=100``
   (``&since=<the newest updated_at seen>`` after the first poll): issues and pull
   requests of every repository the token can see, open and closed →
   ``github/issue/<owner>/<repo>/<number>`` and ``github/pull/<owner>/<repo>/<number>``;
3. ``GET /notifications?per_page=50``: the unread notifications →
   ``github/notification/<thread id>``; a notification that leaves the unread list
   gets ``unread: false``. Not asked again before GitHub's ``X-Poll-Interval`` (60 s
   usually, longer under load) has passed.

Entity ids are Flux's (FLUX_COMPAT.md §6), pull requests apart; properties are listed
in docs/connectors.md. Events: stream ``connectors``, source ``github``, and an
``eventId`` derived from the entity id and its properties, so a poll that sees
nothing new applies nothing (the hub drops a repeated ``eventId``).

Kept in memory per user (bounded; lost when another hub takes the job over, which
costs one full re-read and publishes nothing twice): the ETags of the pages, the
``since`` of the issues, the unread notifications.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from ..errors import Broken
from ..wire.jsonutil import canonical
from .base import FetchResult, OAuthConfig, connector_event
from .github_http import BadToken, GitHubSession, PageCache, RateLimited

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .base import Credentials
    from .github_http import Page

__all__ = [
    "GITHUB_API_URL",
    "GITHUB_POLL_INTERVAL",
    "GITHUB_SOURCE",
    "GITHUB_STREAM",
    "MAX_PAGES",
    "GitHubConnector",
    "github_oauth",
]

GITHUB_API_URL = "https://api.github.com"
#: Flux's interval for GitHub (seconds).
GITHUB_POLL_INTERVAL = 300.0
GITHUB_STREAM = "connectors"
GITHUB_SOURCE = "github"
#: Pages of each list read per poll (100 repositories or issues, 50 notifications a page).
MAX_PAGES = 10
#: Longest ``X-Poll-Interval`` honoured, in seconds (a larger one is taken as this).
MAX_POLL_INTERVAL_ASKED = 3600
#: Users whose ETags and cursors one hub keeps (least recently polled dropped first).
MAX_USERS = 10_000

_REPOS = "/user/repos?per_page=100&sort=updated"
_ISSUES = "/issues?filter=all&state=all&sort=updated&direction=desc&per_page=100"
_NOTIFICATIONS = "/notifications?per_page=50"


def github_oauth(api_url: str) -> OAuthConfig:
    """GitHub's OAuth endpoints for an API root (Enterprise: on the same host)."""
    if api_url.rstrip("/") == GITHUB_API_URL:
        web = "https://github.com"
    else:
        url = httpx.URL(api_url)
        port = "" if url.port is None else f":{url.port}"
        web = f"{url.scheme}://{url.host}{port}"
    return OAuthConfig(
        f"{web}/login/oauth/authorize", f"{web}/login/oauth/access_token", ("repo", "read:user")
    )


@dataclass(slots=True)
class _User:
    cache: PageCache = field(default_factory=PageCache)
    #: The newest issue ``updated_at`` seen (the next poll's ``since``).
    issues_since: str | None = None
    #: Unread notification id -> its ``updated_at``; None before a complete listing.
    unread: dict[str, str] | None = None
    #: No notifications request before this wall time (GitHub's ``X-Poll-Interval``).
    notifications_after: float = 0.0


class GitHubConnector:
    """The ``github`` connector (a :class:`~hub.connectors.base.Connector`).

    Args:
        client: the hub's connector HTTP client.
        api_url: the API root: ``https://api.github.com``, or
            ``https://<host>/api/v3`` for GitHub Enterprise Server.
        timeout: seconds one request may take.
        clock: wall time in seconds.
        max_pages: pages of each list read per poll.
        poll_interval: seconds between two polls of one user's token.
    """

    name = "github"

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_url: str,
        timeout: float,
        clock: Callable[[], float],
        max_pages: int = MAX_PAGES,
        poll_interval: float = GITHUB_POLL_INTERVAL,
    ) -> None:
        self.client = client
        self.api_url = api_url.rstrip("/")
        self.timeout = timeout
        self.clock = clock
        self.max_pages = max_pages
        self.poll_interval = poll_interval
        self.oauth_config: OAuthConfig | None = github_oauth(self.api_url)
        self._users: OrderedDict[str, _User] = OrderedDict()

    async def fetch(self, credentials: Credentials | None) -> FetchResult:
        """One poll: repositories, then issues and pull requests, then notifications.

        A section GitHub refuses (a 403 without a limit, a 404, a 5xx) is reported in
        the error and the next section is read; a 401 ends the poll with its error; a
        rate limit ends it, keeping what was read, and holds the next poll until the
        limit resets. The figures: ``requests`` made, ``not_modified`` (answered 304),
        and the last ``rate_limit_limit``, ``rate_limit_remaining`` and
        ``rate_limit_reset`` (ms) GitHub sent.
        """
        if credentials is None:
            return FetchResult([], "no GitHub token stored")
        token = credentials.access_token.strip()
        if not _usable(token):
            # Never quoted: it goes in a header, and errors are shown and logged.
            return FetchResult([], _UNUSABLE)
        user = self._user(token)
        session = GitHubSession(
            self.client,
            api_url=self.api_url,
            token=token,
            cache=user.cache,
            timeout=self.timeout,
            max_pages=self.max_pages,
            clock=self.clock,
        )
        sections: list[tuple[str, Callable[[GitHubSession, _User], Awaitable[list[Any]]]]] = [
            ("repositories", _repositories),
            ("issues", _issues),
            ("notifications", _notifications),
        ]
        events: list[dict[str, Any]] = []
        problems: list[str] = []
        for label, section in sections:
            try:
                events += await section(session, user)
            except RateLimited:
                break  # session.blocked says until when
            except BadToken as exc:
                return FetchResult(events, str(exc), figures=_figures(session))
            except Broken as exc:
                problems.append(f"{label}: {exc}")
            except (KeyError, TypeError, AttributeError) as exc:
                problems.append(f"{label}: an item is not shaped as GitHub documents it ({exc!r})")
        figures = _figures(session)
        if session.blocked is not None:
            problems.append(str(session.blocked))
            return FetchResult(events, "; ".join(problems), session.blocked.until_ms, figures)
        return FetchResult(events, "; ".join(problems) or None, figures=figures)

    def _user(self, token: str) -> _User:
        key = hashlib.sha256(token.encode()).hexdigest()
        found = self._users.get(key)
        if found is None:
            found = self._users[key] = _User()
            while len(self._users) > MAX_USERS:
                self._users.popitem(last=False)
        self._users.move_to_end(key)
        return found


_UNUSABLE = (
    "the stored GitHub token cannot be sent: it must be printable ASCII without spaces"
    " (a personal access token or an OAuth token); store it again"
)


def _usable(token: str) -> bool:
    return bool(token) and token.isascii() and token.isprintable() and " " not in token


def _figures(session: GitHubSession) -> dict[str, int]:
    figures = {"requests": session.requests, "not_modified": session.not_modified}
    known = {
        "rate_limit_limit": session.limit,
        "rate_limit_remaining": session.remaining,
        "rate_limit_reset": session.reset_ms,
    }
    figures.update({k: v for k, v in known.items() if v is not None})
    return figures


# ---------------------------------------------------------------------- sections


async def _repositories(session: GitHubSession, user: _User) -> list[dict[str, Any]]:
    pages, _ = await session.pages(_REPOS, lambda repo: str(repo["full_name"]))
    return [_repo_event(repo) for repo in _items(pages)]


async def _issues(session: GitHubSession, user: _User) -> list[dict[str, Any]]:
    path = _ISSUES
    if user.issues_since is not None:
        path += "&since=" + quote(user.issues_since, safe="")
    pages, complete = await session.pages(path, lambda issue: str(issue["id"]))
    events = []
    newest = user.issues_since
    for issue in _items(pages):
        events.append(_issue_event(issue))
        updated = issue.get("updated_at")
        if isinstance(updated, str) and (newest is None or updated > newest):
            newest = updated
    # Newest first: a list cut by the page bound leaves only older updates behind
    # (documented), but one cut by a rate limit is read again from the same since.
    if complete or len(pages) >= session.max_pages:
        user.issues_since = newest
    return events


async def _notifications(session: GitHubSession, user: _User) -> list[dict[str, Any]]:
    now = session.clock()
    if now < user.notifications_after:
        return []  # GitHub asked for a longer interval (X-Poll-Interval)
    pages, complete = await session.pages(_NOTIFICATIONS, lambda thread: str(thread["id"]))
    asked = pages[0].poll_interval if pages else None
    if asked is not None:
        user.notifications_after = now + min(asked, MAX_POLL_INTERVAL_ASKED)
    before = user.unread or {}
    events = []
    unread: dict[str, str] = {}
    for page in pages:
        if page.items is None:
            unread.update((key, before.get(key, "")) for key in page.keys)
            continue
        for thread in page.items:
            events.append(_notification_event(thread))
            unread[str(thread["id"])] = str(thread.get("updated_at"))
    if complete:
        if user.unread is not None:
            for thread_id, updated in user.unread.items():
                if thread_id not in unread:
                    # Read (or done) since the last poll: the entity says so.
                    entity_id = f"github/notification/{thread_id}"
                    events.append(_event(entity_id, {"unread": False}, salt=updated))
        user.unread = unread
    return events


def _items(pages: list[Page]) -> list[Any]:
    return [item for page in pages if page.items is not None for item in page.items]


# ---------------------------------------------------------------------- entities


def _repo_event(repo: dict[str, Any]) -> dict[str, Any]:
    owner, _, name = str(repo["full_name"]).partition("/")
    properties = {
        "full_name": repo["full_name"],
        "name": repo.get("name"),
        "owner": _login(repo.get("owner")),
        "private": repo.get("private"),
        "visibility": repo.get("visibility"),
        "description": repo.get("description"),
        "html_url": repo.get("html_url"),
        "default_branch": repo.get("default_branch"),
        "language": repo.get("language"),
        "topics": repo.get("topics", []),
        "fork": repo.get("fork"),
        "archived": repo.get("archived"),
        "stargazers_count": repo.get("stargazers_count"),
        "forks_count": repo.get("forks_count"),
        "open_issues_count": repo.get("open_issues_count"),
        "created_at": repo.get("created_at"),
        "updated_at": repo.get("updated_at"),
        "pushed_at": repo.get("pushed_at"),
    }
    return _event(f"github/repo/{owner}/{name}", properties)


def _issue_event(issue: dict[str, Any]) -> dict[str, Any]:
    repository = issue.get("repository")
    if isinstance(repository, dict) and isinstance(repository.get("full_name"), str):
        full_name = repository["full_name"]
    else:  # repository_url: <api>/repos/<owner>/<repo>
        full_name = "/".join(str(issue["repository_url"]).rstrip("/").split("/")[-2:])
    pull = issue.get("pull_request")
    kind = "pull" if isinstance(pull, dict) else "issue"
    milestone = issue.get("milestone")
    properties = {
        "kind": "pull_request" if kind == "pull" else "issue",
        "repository": full_name,
        "number": issue["number"],
        "title": issue.get("title"),
        "state": issue.get("state"),
        "state_reason": issue.get("state_reason"),
        "author": _login(issue.get("user")),
        "assignees": [_login(a) for a in issue.get("assignees") or []],
        "labels": [
            label.get("name") for label in issue.get("labels") or [] if isinstance(label, dict)
        ],
        "milestone": milestone.get("title") if isinstance(milestone, dict) else None,
        "comments": issue.get("comments"),
        "locked": issue.get("locked"),
        "html_url": issue.get("html_url"),
        "created_at": issue.get("created_at"),
        "updated_at": issue.get("updated_at"),
        "closed_at": issue.get("closed_at"),
    }
    if isinstance(pull, dict):
        properties["draft"] = issue.get("draft", False)
        properties["merged_at"] = pull.get("merged_at")
    return _event(f"github/{kind}/{full_name}/{issue['number']}", properties)


def _notification_event(thread: dict[str, Any]) -> dict[str, Any]:
    subject = thread.get("subject") or {}
    repository = thread.get("repository") or {}
    properties = {
        "reason": thread.get("reason"),
        "unread": thread.get("unread"),
        "title": subject.get("title"),
        "subject_type": subject.get("type"),
        "subject_url": subject.get("url"),
        "repository": repository.get("full_name"),
        "updated_at": thread.get("updated_at"),
        "last_read_at": thread.get("last_read_at"),
    }
    return _event(f"github/notification/{thread['id']}", properties)


def _event(entity_id: str, properties: dict[str, Any], *, salt: str = "") -> dict[str, Any]:
    event = connector_event(entity_id, properties, stream=GITHUB_STREAM, source=GITHUB_SOURCE)
    digest = hashlib.sha256(
        entity_id.encode() + b"\n" + salt.encode() + b"\n" + canonical(properties)
    ).hexdigest()
    event["eventId"] = "github-" + digest[:32]
    return event


def _login(user: Any) -> str | None:
    if isinstance(user, dict) and isinstance(user.get("login"), str):
        return str(user["login"])
    return None
