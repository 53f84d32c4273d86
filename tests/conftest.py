"""Shared fixtures: a real Redis, a fresh key prefix per test, a real hub on port 0.

Redis: ``FLUX_TEST_REDIS_URL`` if set, else the embedded server the hub itself uses,
started once per session in a temporary directory. Each test gets its own key prefix,
so tests never see each other's data and need no FLUSHDB.

Timeouts scale with ``FLUX_TESTS_TIMEOUT_FACTOR`` (default 1) for slow CI machines.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from hub.app import Hub
from hub.config import Settings
from hub.store import EmbeddedRedis, Keys, Store

if TYPE_CHECKING:
    from .browser import DevTools

TIMEOUT_FACTOR = float(os.environ.get("FLUX_TESTS_TIMEOUT_FACTOR", "1"))

# Started in the background by a non-interactive shell (`nohup pytest &` in a script,
# some CI runners), pytest inherits SIGINT ignored, and so would every process it
# starts: an ignored signal stays ignored across exec. The tests interrupt `flux watch`
# and `flux serve` with SIGINT, as a user's Ctrl-C does; ignored, each waited out its
# timeout and failed (four tests, 25 s each). Python's own handler is restored here.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


class _Room:
    """A readers-writer lock across the pytest-xdist workers of one run.

    The suite runs on two workers (pyproject's addopts). A test marked ``alone`` (one
    that measures the hub's latency or its timing under load) runs while no other test
    does: every test holds the room shared, an ``alone`` test holds it exclusively. The
    turnstile, held by an ``alone`` test from before it waits for the room, stops the
    other worker from starting tests meanwhile (without it, that worker's tests, back to
    back, could keep the room shared indefinitely). Both are ``flock`` locks on two
    files in the run's temporary directory, which every worker shares.
    """

    def __init__(self, directory: Path) -> None:
        flags = os.O_CREAT | os.O_RDWR | os.O_CLOEXEC
        self.turnstile = os.open(directory / "alone-turnstile.lock", flags, 0o600)
        self.room = os.open(directory / "alone-room.lock", flags, 0o600)

    @contextmanager
    def enter(self, *, alone: bool) -> Iterator[None]:
        fcntl.flock(self.turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(self.room, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(self.turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(self.room, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(self.turnstile, fcntl.LOCK_UN)


_rooms: dict[str, _Room] = {}


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Run each test in the room (:class:`_Room`) when the suite runs on xdist workers.

    Outermost (``tryfirst``): the wait for the room is not counted in the test's time
    limit, which pytest-timeout starts in its own wrapper of this hook.
    """
    basetemp = item.config.option.basetemp
    if "PYTEST_XDIST_WORKER" not in os.environ or not basetemp:
        return (yield)
    # A worker's base directory is the run's, plus its name (xdist's workermanage).
    shared = str(Path(basetemp).parent)
    room = _rooms.get(shared)
    if room is None:
        room = _rooms[shared] = _Room(Path(shared))
    with room.enter(alone=item.get_closest_marker("alone") is not None):
        return (yield)


def timeout(seconds: float) -> float:
    """A test timeout, scaled for slow machines."""
    return seconds * TIMEOUT_FACTOR


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis for the whole session."""
    external = os.environ.get("FLUX_TEST_REDIS_URL")
    if external:
        yield external
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
def key_prefix() -> str:
    """A key prefix no other test uses."""
    return "t" + uuid.uuid4().hex[:12]


def make_settings(key_prefix: str, **groups: dict[str, Any]) -> Settings:
    """Settings for a test hub: loopback, port 0, the test's key prefix.

    Args:
        key_prefix: the test's prefix.
        groups: overrides per settings group, e.g. ``gateway={"admin_token": "x"}``.
    """
    base: dict[str, dict[str, Any]] = {
        "gateway": {"host": "127.0.0.1", "port": 0},
        "redis": {"key_prefix": key_prefix},
    }
    for group, values in groups.items():
        base.setdefault(group, {}).update(values)
    return Settings.model_validate(base)


@pytest.fixture
def settings(key_prefix: str) -> Settings:
    return make_settings(key_prefix)


@pytest.fixture
async def store(redis_url: str, settings: Settings) -> AsyncIterator[Store]:
    keys = Keys(settings.redis.key_prefix, settings.redis.partitions)
    async with await Store.connect(redis_url, keys, settings.log) as s:
        yield s


@asynccontextmanager
async def running_hub(settings: Settings, store: Store) -> AsyncIterator[Hub]:
    """Run a hub in a task of its own while the body runs.

    pytest-asyncio runs a fixture's setup and teardown in different tasks, and an
    anyio task group must be entered and left in one task: so the hub lives in its
    own task, started here and told to stop at the end.
    """
    started: asyncio.Future[Hub] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()

    async def run() -> None:
        try:
            async with Hub(settings, store) as h:
                started.set_result(h)
                await stop.wait()
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise

    task = asyncio.create_task(run())
    try:
        yield await started
    finally:
        stop.set()
        await task


@asynccontextmanager
async def hub_on_own_store(redis_url: str, settings: Settings) -> AsyncIterator[Hub]:
    """A hub over a store built from ``settings``: for settings the store owns (log
    retention, ``delta_log_maxlen``...), which the shared ``store`` fixture lacks."""
    keys = Keys(settings.redis.key_prefix, settings.redis.partitions)
    async with (
        await Store.connect(redis_url, keys, settings.log) as store,
        running_hub(settings, store) as hub,
    ):
        yield hub


@pytest.fixture
async def hub(store: Store, settings: Settings) -> AsyncIterator[Hub]:
    """A real hub on 127.0.0.1, port 0."""
    async with running_hub(settings, store) as h:
        yield h


@pytest.fixture
def base_url(hub: Hub) -> str:
    return f"http://127.0.0.1:{hub.port}"


@pytest.fixture
def ws_url(hub: Hub) -> str:
    return f"ws://127.0.0.1:{hub.port}/api/ws"


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout(10)) as client:
        yield client


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "flux-data"


@pytest.fixture
async def devtools(tmp_path: Path) -> AsyncIterator[DevTools]:
    """Headless Chromium with one page open (tests/browser.py); skips without Chromium."""
    from .browser import open_chromium  # tests/browser.py reads this module's timeout()

    async with open_chromium(tmp_path) as tools:
        yield tools
