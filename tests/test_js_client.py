"""The JavaScript client (clients/js) against a real hub, through Node's test runner.

The hub runs here (fixture); ``node --test`` runs ``clients/js/test/*.test.mjs`` with
its URL in ``FLUX_TEST_URL``: what clients/js/README.md's ``npm test`` command runs
(package.json's ``test`` script). ``FLUX_TEST_SERVE`` gives the JS tests a command that
starts another hub on the same store (the same Redis and key prefix), so that they
can stop and restart a hub under a connected client.

Node 20 has no WebSocket of its own: the tests use the ``ws`` package, installed
into clients/js/node_modules by ``npm ci`` (``.ci/run`` does it; so does this module
when it is missing and npm is there).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hub.app import Hub

from .conftest import timeout

JS_DIR = Path(__file__).resolve().parent.parent / "clients" / "js"
NODE = shutil.which("node")


def _node_major() -> int:
    if NODE is None:
        return 0
    version = subprocess.run([NODE, "--version"], capture_output=True, text=True, check=False)
    found = re.match(r"v(\d+)\.", version.stdout)
    return int(found.group(1)) if found else 0


pytestmark = pytest.mark.skipif(
    _node_major() < 20, reason="no Node >= 20 on PATH: the JavaScript client's tests need it"
)


@pytest.fixture(scope="module")
def node_modules() -> None:
    """clients/js/node_modules with ``ws``, installed with npm if missing."""
    if (JS_DIR / "node_modules" / "ws").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("clients/js/node_modules is missing and npm is not installed to fetch ws")
    lock = (JS_DIR / "package-lock.json").exists()
    command = [npm, "ci" if lock else "install", "--no-audit", "--no-fund"]
    subprocess.run(command, cwd=JS_DIR, check=True, capture_output=True, timeout=timeout(300))


async def test_js_client_suite_passes_against_a_real_hub(
    hub: Hub, base_url: str, redis_url: str, key_prefix: str, node_modules: None
) -> None:
    assert NODE is not None
    serve = [sys.executable, "-m", "hub.cli", "serve", "--host", "127.0.0.1", "--port", "{port}"]
    serve += ["--redis", redis_url, "--log-level", "warning"]
    env = {
        **os.environ,
        "FLUX_TEST_URL": base_url,
        "FLUX_TEST_SERVE": json.dumps(serve),
        "FLUX_TEST_SERVE_ENV": json.dumps({"FLUX_KEY_PREFIX": key_prefix}),
    }
    files = sorted(str(p) for p in (JS_DIR / "test").glob("*.test.mjs"))
    assert files, "no clients/js/test/*.test.mjs"
    proc = await asyncio.create_subprocess_exec(
        NODE,
        "--test",
        *files,
        cwd=JS_DIR,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), timeout(90))
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text
    summary = dict(re.findall(r"^# (pass|fail|skipped|cancelled) (\d+)$", text, re.MULTILINE))
    assert summary.get("fail") == "0" and summary.get("cancelled") == "0", text
    assert summary.get("skipped") == "0", f"JS tests skipped:\n{text}"
    assert int(summary.get("pass", "0")) >= 10, text
