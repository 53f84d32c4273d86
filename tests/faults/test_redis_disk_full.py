"""Redis on a full disk: its AOF cannot be written, so it refuses writes (``MISCONF``).

Redis's data directory is a tmpfs of a few MiB that the test fills. With ``appendfsync
everysec`` Redis then refuses every write until it can write its AOF again, and keeps
serving reads. (With ``always`` it exits instead — it cannot keep its promise — which
is the "Redis stopped" scenario.) What a client sees meanwhile: REST publishes 503
``unavailable`` naming the reason, with ``Retry-After``; native publishes an
``unavailable`` result; reads, listings and ``/readyz`` still answer. Once space is
freed, the same ``eventId`` retried applies once.

Mounting needs root (CI runs as root); elsewhere the test says so and skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import timeout
from ..native_client import Native
from .scenarios import ANSWER_BOUND, owned_hub

#: The tmpfs Redis writes its AOF to.
DISK = "8m"


@contextlib.contextmanager
def small_disk(path: Path) -> Iterator[Path]:
    """A tmpfs of :data:`DISK` mounted at ``path``, unmounted at the end."""
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk``; returns the file to delete to free them."""
    filler = disk / "filler"
    with filler.open("wb") as out:
        with contextlib.suppress(OSError):  # ENOSPC: full
            while True:
                out.write(b"\0" * 65536)
                out.flush()
    return filler


def _event(event_id: str, entity: str) -> dict[str, object]:
    return {
        "eventId": event_id,
        "stream": "faults",
        "source": "faults",
        "payload": {"entity_id": entity, "properties": {"n": 1}},
    }


async def test_redis_on_a_full_disk_refuses_writes_clearly_and_serves_reads(
    tmp_path: Path, key_prefix: str
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        # everysec: with "always", Redis exits on a failed AOF write (see above).
        async with owned_hub(disk / "redis", key_prefix, "everysec") as (hub, _):
            base_url = f"http://127.0.0.1:{hub.port}"
            async with httpx.AsyncClient(base_url=base_url, timeout=timeout(30)) as http:
                assert (await http.post("/api/events", json=_event("a", "d/a"))).status_code == 200
                filler = fill(disk)
                # The first write after the disk filled may still be applied (Redis
                # answers before its next AOF write fails: everysec's promise); from
                # the failed write on, every write is refused.
                deadline = time.monotonic() + timeout(10)
                n = 0
                while True:
                    n += 1
                    started = time.monotonic()
                    reply = await http.post("/api/events", json=_event(f"w{n}", f"d/w{n}"))
                    assert time.monotonic() - started < ANSWER_BOUND
                    if reply.status_code != 200:
                        break
                    assert time.monotonic() < deadline, "writes were never refused"
                    await asyncio.sleep(0.2)
                refused = reply
                assert refused.status_code == 503, refused.text
                assert refused.json()["code"] == "unavailable", refused.text
                assert "MISCONF" in refused.json()["error"], refused.text
                assert refused.headers["retry-after"]
                native = await Native.connect(f"ws://127.0.0.1:{hub.port}/api/ws")
                try:
                    ack = await native.request(
                        {"type": "publish", "events": [_event("nat", "d/nat")]}, "ack"
                    )
                    assert ack["results"][0]["error"]["code"] == "unavailable", ack
                    # Reads are served.
                    got = await native.request({"type": "get", "ids": ["d/a"]}, "entities")
                    assert [e["id"] for e in got["entities"]] == ["d/a"]
                finally:
                    await native.close()
                assert (await http.get("/api/state/entities/d%2Fa")).status_code == 200
                listing = await http.get("/api/state/entities", params={"prefix": "d/"})
                assert listing.status_code == 200
                assert (await http.get("/readyz")).status_code == 200

                # Space again: the refused event, retried with its eventId, applies once.
                filler.unlink()
                deadline = time.monotonic() + timeout(15)
                while True:
                    retried = await http.post("/api/events", json=_event(f"w{n}", f"d/w{n}"))
                    if retried.status_code == 200:
                        break
                    assert time.monotonic() < deadline, retried.text
                    await asyncio.sleep(0.2)
                again = await http.post("/api/events", json=_event(f"w{n}", f"d/w{n}"))
                assert again.status_code == 200
                entity = (await http.get(f"/api/state/entities/d%2Fw{n}")).json()
                assert entity["version"] == 1, entity
