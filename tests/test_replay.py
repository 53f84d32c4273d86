"""``flux replay``: the state in Redis checked against its event log, by the pure reducer.

Every test writes through a real hub (REST), then either runs the command as a user
would (a subprocess on the same Redis and key prefix) or calls :func:`hub.replay.replay`
where it needs a cut at a known point.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx

from hub.replay import replay
from hub.store import EmbeddedRedis, EventLogAudit, Keys, Store

from .conftest import make_settings, running_hub
from .test_cli_client import flux


async def flux_replay(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run ``flux replay ARGS``; ``(status, stdout, stderr)``."""
    return await flux(None, "replay", *args, env=env)


async def replay_json(redis_url: str, key_prefix: str) -> tuple[int, dict[str, Any]]:
    status, out, err = await flux_replay(
        "--redis", redis_url, "--json", env={"FLUX_KEY_PREFIX": key_prefix}
    )
    assert out, err
    report: dict[str, Any] = json.loads(out)
    assert report["status"] == status
    return status, report


def event(entity_id: str | None, properties: Any = None, **fields: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if entity_id is not None:
        payload["entity_id"] = entity_id
    if properties is not None:
        payload["properties"] = properties
    return {"stream": "s", "source": "replay-test", "payload": payload, **fields}


async def publish(http: httpx.AsyncClient, *events: dict[str, Any]) -> list[Any]:
    reply = await http.post("/api/events/batch", json={"events": list(events)})
    assert reply.status_code == 200, reply.text
    return [r.get("error") for r in reply.json()["results"]]


async def write_everything(http: httpx.AsyncClient) -> None:
    """Every way the state changes: merge, unchanged values, nulls, nested values,
    deletion, re-creation (versions go on), batch deletion, a retried eventId, a lost
    compare-and-set, an event without properties, a client timestamp."""
    first = await publish(
        http,
        event("r/a", {"n": 1, "tags": ["x"], "deep": {"k": {"v": [1, None]}}}),
        event("r/a", {"n": 1}),  # unchanged: the version stays
        event("r/a", {"n": None, "extra": "é"}),
        event("r/b", {"on": True}, eventId="fixed-id"),
        event("r/b", {"on": False}, eventId="fixed-id"),  # a retry: not applied again
        event("r/c", {"v": 1}),
        event("r/d", {"v": 1}),
        event("other/e", {"v": 1}, timestamp=1_700_000_000_000),
        event(None, {"ignored": 1}),  # no entity: logged only
        event("r/a"),  # no properties: logged only
    )
    assert first == [None] * 10
    assert (await http.delete("/api/state/entities/r%2Fc")).status_code == 200
    await publish(http, event("r/c", {"v": 2}))  # re-created at version 3
    errors = await publish(http, event("r/d", {"v": 9}, if_version=7))
    assert errors == ["conflict: entity is at version 1"]
    reply = await http.post("/api/state/entities/delete", json={"prefix": "other/"})
    assert reply.status_code == 200


async def test_replay_of_a_hubs_log_agrees_with_its_state(
    http: httpx.AsyncClient, redis_url: str, key_prefix: str
) -> None:
    await write_everything(http)
    status, report = await replay_json(redis_url, key_prefix)
    assert status == 0
    [partition] = report["partitions"]
    assert partition["differences"] == []
    # r/a, r/b, r/c, r/d and the deleted other/e (the directory may have been written).
    assert partition["agree"] >= 5
    # 9 of the first 10 (the retry is not logged), 2 for r/c, 1 tombstone for other/e.
    assert partition["events"] >= 12
    assert (partition["skipped"], partition["unreadable"]) == (None, 0)


async def test_replay_names_each_entity_that_differs_from_its_log(
    http: httpx.AsyncClient, store: Store, redis_url: str, key_prefix: str
) -> None:
    await write_everything(http)
    keys, client = store.keys, store.client
    await client.hset(keys.entity(0, "r/a"), ".extra", '"changed by hand"')
    await client.hset(keys.entity(0, "r/b"), "#v", 9)
    await client.delete(keys.entity(0, "r/d"))
    await client.hset(keys.entity(0, "r/ghost"), mapping={"#v": 1, ".v": "1"})
    await client.zadd(keys.ids(0), {"r/ghost": 0})
    await client.hset(keys.entity(0, "other/e"), mapping={"#v": 2, ".v": "1"})
    await client.hdel(keys.entity(0, "other/e"), "#d")

    status, out, _ = await flux_replay("--redis", redis_url, env={"FLUX_KEY_PREFIX": key_prefix})
    assert status == 1
    assert "5 differ" in out
    for line in [
        """  r/a: property 'extra' is "changed by hand" in Redis, "é" replayed""",
        "  r/b: version 9 in Redis, 1 replayed",
        "  r/d: absent from Redis, live replayed",
        "  r/ghost: live in Redis, never written by the log",
        "  other/e: live in Redis, deleted replayed",
    ]:
        assert line in out.splitlines(), out


async def test_replay_lists_as_many_differences_as_asked(
    http: httpx.AsyncClient, store: Store, redis_url: str, key_prefix: str
) -> None:
    await publish(http, *(event(f"many/{n}", {"v": n}) for n in range(5)))
    for n in range(5):
        await store.client.hset(store.keys.entity(0, f"many/{n}"), ".v", "-1")
    status, out, _ = await flux_replay(
        "--redis", redis_url, "--show", "2", env={"FLUX_KEY_PREFIX": key_prefix}
    )
    assert status == 1
    assert [line for line in out.splitlines() if line.startswith("  many/")] == [
        "  many/0: property 'v' is -1 in Redis, 0 replayed",
        "  many/1: property 'v' is -1 in Redis, 1 replayed",
    ]
    assert "  … and 3 more (--show N lists more)" in out


async def test_replay_counts_entities_written_after_its_cut_as_moved_on(
    http: httpx.AsyncClient, store: Store
) -> None:
    await publish(http, event("cut/1", {"v": 1}), event("cut/2", {"v": 1}))
    cut = (await EventLogAudit(store).extent(0)).newest
    assert cut is not None
    await publish(http, event("cut/1", {"v": 2}), event("cut/3", {"v": 1}))
    await http.delete("/api/state/entities/cut%2F2")

    result = await replay(store, until={0: cut})
    [partition] = result.partitions
    assert partition.differences == []
    assert partition.moved_on == 3
    assert result.exit_status == 0

    everything = await replay(store)
    assert everything.partitions[0].moved_on == 0
    assert everything.partitions[0].differences == []


async def test_replay_reports_an_event_log_entry_that_does_not_parse(
    http: httpx.AsyncClient, store: Store
) -> None:
    await publish(http, event("bad/1", {"v": 1}))
    entry = await store.client.xadd(store.keys.event_log(0), {"e": b"{not json"})
    assert isinstance(entry, bytes)
    await store.client.hincrby(store.keys.stats(0), "events", 1)
    result = await replay(store)
    [difference] = result.differences
    assert (difference.entity_id, difference.what) == (
        f"<event {entry.decode()}>",
        "the event log entry does not parse",
    )
    assert result.exit_status == 1


async def test_replay_does_not_compare_a_partition_whose_log_was_trimmed(
    redis_url: str, key_prefix: str
) -> None:
    settings = make_settings(key_prefix, log={"event_log_maxlen": 10})
    keys = Keys(key_prefix)
    async with (
        await Store.connect(redis_url, keys, settings.log) as store,
        running_hub(settings, store) as hub,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.port}") as http,
    ):
        for round_ in range(4):
            await publish(http, *(event(f"trim/{n}", {"r": round_}) for n in range(100)))
        held = await store.client.xlen(keys.event_log(0))
        assert held < 400

        status, out, _ = await flux_replay(
            "--redis", redis_url, env={"FLUX_KEY_PREFIX": key_prefix}
        )
    assert status == 3
    expected = (
        rf"Partition 0 not compared: its event log holds {held} of the 40\d events it "
        r"accepted \(trimmed by FLUX_EVENT_LOG_MAXLEN\): the state cannot be rebuilt from it\."
    )
    assert re.search(expected, out), out


async def test_replay_uses_the_embedded_redis_of_a_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "flux-data"
    with EmbeddedRedis(data_dir) as server:
        # A hub runs there: replay uses its server, and leaves it running.
        status, out, err = await flux_replay("--data-dir", str(data_dir))
        assert (status, err) == (0, "")
        assert out.startswith("Replayed 0 events of 1 partition in ")
        assert server.process is not None and server.process.poll() is None
    # Nobody runs there: replay starts the server, and stops it (the lock is free).
    status, out, _ = await flux_replay("--data-dir", str(data_dir))
    assert status == 0
    with EmbeddedRedis(data_dir):
        pass


async def test_replay_without_a_data_dir_says_what_to_pass(tmp_path: Path) -> None:
    status, out, err = await flux_replay("--data-dir", str(tmp_path / "none"))
    assert (status, out) == (2, "")
    assert (
        err
        == f"flux replay: no data directory {tmp_path / 'none'}: pass --data-dir or --redis URL\n"
    )


async def test_replay_refuses_an_unreachable_redis() -> None:
    status, _, err = await flux_replay("--redis", "redis://127.0.0.1:1")
    assert status == 2
    assert err.startswith("flux replay: cannot reach Redis at redis://127.0.0.1:1")
