"""The fault suite, longer: Redis killed, stalled and full under load, and storms.

Runs the scenarios of ``tests/faults`` (real hubs on 127.0.0.1, each over a Redis of
its own in a temporary directory, ``appendfsync always``) with more events and longer
faults, then prints one JSON line per scenario and a table::

    scenario | acked | lost | doubled | gaps | recovery s | delivery s | slowest answer s

``acked``: events acknowledged (two REST publishers and one native, each retrying by
``eventId``); ``lost``: acknowledged but not in Redis; ``doubled``: an ``eventId``
applied twice; ``gaps``: a subscriber's replica missed a version; ``recovery``: from
the fault's end (Redis answering again) to the first acknowledged publish; ``delivery``:
from the fault's end to the subscriber's first delta; ``slowest
answer``: the longest any publish waited for its answer, ack or refusal. It exits 1 if any of lost, doubled
or gaps is not 0, or an answer took longer than the bound. Run::

    python bench/faults.py                       # about 70 s on 2 vCPUs
    python bench/faults.py --events 300 --outage 2 --storm-seconds 5   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import tempfile
import uuid
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.faults.scenarios import (
    ANSWER_BOUND,
    Outcome,
    OwnedRedis,
    fault_run,
    owned_hub,
)
from tests.faults.storms import StormOutcome, connect_storm, resume_storm, rss_kib
from tests.processes import HubProcess, free_port


async def redis_fault(kind: str, events: int, outage: float, root: Path) -> Outcome:
    prefix = "b" + uuid.uuid4().hex[:12]
    async with owned_hub(root / kind, prefix) as (hub, owned):

        async def break_it() -> None:
            if kind == "SIGSTOP":
                owned.pause()
            elif kind == "OOM":
                _max_memory(owned, "1")
            else:
                await asyncio.to_thread(owned.kill, signal.Signals[kind])

        async def mend_it() -> None:
            if kind == "SIGSTOP":
                owned.resume()
            elif kind == "OOM":
                _max_memory(owned, "0")
            else:
                await asyncio.to_thread(owned.start)

        return await fault_run(
            f"redis {kind} {outage:g} s",
            hub,
            owned,
            prefix,
            events=events,
            break_it=break_it,
            mend_it=mend_it,
            broken_for=outage,
        )


def _max_memory(owned: OwnedRedis, value: str) -> None:
    with owned.client() as client:
        client.config_set("maxmemory", value)


async def storms(
    connections: int, subscribers: int, seconds: float, root: Path
) -> list[tuple[StormOutcome, list[int]]]:
    """Both storms against a ``flux serve`` process (its memory its own): each with the
    hub's resident memory (KiB) before and after."""
    owned = OwnedRedis(root / "storms")
    owned.start()
    hub = HubProcess(owned.url, "b" + uuid.uuid4().hex[:12], free_port())
    try:
        await hub.start()
        assert hub.process is not None
        pid = hub.process.pid
        base_url = f"http://127.0.0.1:{hub.port}"
        found = []
        before = rss_kib(pid)
        outcome = await connect_storm(base_url, total=connections, concurrency=50)
        found.append((outcome, [before, rss_kib(pid)]))
        before = rss_kib(pid)
        outcome = await resume_storm(base_url, subscribers=subscribers, seconds=seconds)
        found.append((outcome, [before, rss_kib(pid)]))
        return found
    finally:
        await hub.stop()
        owned.stop()


async def main(args: argparse.Namespace) -> int:
    # The hub's warnings (each refused call) would bury the table; errors still show.
    logging.getLogger("hub").setLevel(logging.ERROR)
    rows: list[str] = []
    bad = False
    with tempfile.TemporaryDirectory(prefix="flux-faults-") as tmp:
        root = Path(tmp)
        for kind in ("SIGKILL", "SIGTERM", "SIGSTOP", "OOM"):
            outcome = await redis_fault(kind, args.events, args.outage, root)
            print(json.dumps({**asdict(outcome), "refusals": dict(outcome.refusals)}))
            rows.append(outcome.row())
            bad |= bool(outcome.lost or outcome.doubled or outcome.gaps)
            bad |= outcome.recovery is None or outcome.slowest >= ANSWER_BOUND
        for storm, rss in await storms(
            args.storm_connections, args.storm_subscribers, args.storm_seconds, root
        ):
            print(json.dumps({**asdict(storm), "rss_kib": rss}))
            name = f"{storm.scenario}: {storm.connections} connections in {storm.seconds:.1f} s"
            if storm.resumes:
                name += f", {storm.resumes} resumes"
            name += f", hub RSS {rss[0] // 1024} -> {rss[1] // 1024} MiB"
            rows.append(f"| {name} | {storm.acked} | - | - | {storm.gaps} | - | - | - |")
            bad |= bool(storm.gaps or storm.failures) or storm.readyz != 200
            bad |= storm.after != storm.before
    print()
    print(
        "| scenario | acked | lost | doubled | gaps | recovery s | delivery s | slowest answer s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)
    return 1 if bad else 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1000, help="events per publisher (3)")
    parser.add_argument("--outage", type=float, default=5.0, help="seconds each fault lasts")
    parser.add_argument("--storm-connections", type=int, default=5000)
    parser.add_argument("--storm-subscribers", type=int, default=100)
    parser.add_argument("--storm-seconds", type=float, default=20.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
