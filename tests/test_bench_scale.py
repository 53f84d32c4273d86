"""bench/scale.py cannot rot: its quick mode runs whole, as a user runs it.

Real processes only (the embedded Redis, the local cluster, ``flux serve`` with one
worker, subscriber and load processes). The script checks every reply and frame and
exits non-zero on any wrong one; this test also checks that every figure came out,
with numbers that mean something.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_scale_quick_mode_prints_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "scale.jsonl"
    run = subprocess.run(
        [sys.executable, "bench/scale.py", "--quick", "--json-out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    by_kind: dict[str, list[dict[str, object]]] = {}
    for record in records:
        by_kind.setdefault(str(record["figure"]), []).append(record)
    assert {r["setup"] for r in by_kind["fanout"]} == {"redis x1", "cluster x1"}
    assert {r["setup"] for r in by_kind["ingest"]} == {"redis x1", "cluster x1"}
    for record in by_kind["fanout"]:
        assert isinstance(record["deliveries_per_s"], int) and record["deliveries_per_s"] > 0
        assert record["cpu_us_per_delivery"]["hub"] > 0  # type: ignore[index]
    for record in by_kind["ingest"]:
        assert isinstance(record["events_per_s"], int) and record["events_per_s"] > 0
    (tail,) = by_kind["tail"]
    assert tail["cpu_us_per_event"]["hub_b"] > 0  # type: ignore[index]
    (idle,) = by_kind["idle"]
    assert idle["connections"] == 200
    assert idle["hub_kib_per_connection"] > 0  # type: ignore[operator]
    (held,) = by_kind["connections"]
    assert held["connections"] == held["asked"] == 400
    assert held["latency_samples"] > 0  # type: ignore[operator]
    (entities,) = by_kind["redis_per_entity"]
    assert 100 < entities["bytes_per_entity"] < 10_000  # type: ignore[operator]
    assert "setup" in run.stdout and "deliveries/s" in run.stdout
