"""The README's two Python agents, copied out of it and run as a user runs them.

``python worker.py &`` then ``python planner.py`` must print ``taken by worker-1``. The
blocks are taken from README.md as they stand (only the hub's address changes), so an
edit that breaks them fails here.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from hub.app import Hub

from .conftest import timeout

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SDK_README = ROOT / "clients" / "python" / "README.md"


def python_block(first_line: str, readme: Path = README) -> str:
    """The ```python block of ``readme`` whose first line is ``first_line``."""
    for block in re.findall(r"```python\n(.*?)```", readme.read_text(encoding="utf-8"), re.S):
        if block.startswith(first_line):
            return str(block)
    raise AssertionError(f"no python block starting {first_line!r} in {readme.name}")


def _subscriptions(hub: Hub) -> int:
    return sum(s.statistics().subscriptions for s in hub.gateway.native_sessions)


async def test_readme_planner_and_worker_agree_on_a_claim(
    hub: Hub, base_url: str, tmp_path: Path
) -> None:
    for name in ("worker", "planner"):
        code = python_block(f"# {name}.py").replace("http://localhost:3000", base_url)
        (tmp_path / f"{name}.py").write_text(code, encoding="utf-8")
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        str(tmp_path / "worker.py"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        # "python worker.py &": the worker listens live; the planner comes once it does.
        async with asyncio.timeout(timeout(20)):
            while _subscriptions(hub) < 1:
                assert worker.returncode is None, await worker.stderr.read()  # type: ignore[union-attr]
                await asyncio.sleep(0.05)
        planner = await asyncio.create_subprocess_exec(
            sys.executable,
            str(tmp_path / "planner.py"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(planner.communicate(), timeout(30))
        assert planner.returncode == 0, err.decode()
        assert out.decode() == "taken by worker-1\n"
        assert worker.stdout is not None
        line = await asyncio.wait_for(worker.stdout.readline(), timeout(10))
        assert line.decode() == "claimed crew/task-1\n"
    finally:
        if worker.returncode is None:
            worker.terminate()
        await worker.wait()


async def test_sdk_readme_example_runs_to_its_end(base_url: str, tmp_path: Path) -> None:
    """clients/python/README.md's example, run as a user runs it: it must finish.

    Its subscription loop once never ended (nothing told it to leave), and a snapshot
    update printed ``{}`` as its changes, which reads as an empty entity.
    """
    code = python_block("import asyncio", SDK_README).replace("http://localhost:3000", base_url)
    (tmp_path / "example.py").write_text(code, encoding="utf-8")
    example = await asyncio.create_subprocess_exec(
        sys.executable,
        str(tmp_path / "example.py"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(example.communicate(), timeout(30))
    assert example.returncode == 0, err.decode()
    state = "{'owner': 'me', 'state': 'open'}"
    assert out.decode().splitlines() == [
        "1",  # the first publish's version
        f"snapshot crew/task-7 {state}",
        "synced  {}",
        state,  # the cache's copy
    ]
