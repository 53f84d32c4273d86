"""The shipped nginx configuration in front of a hub that is gone (docs/scaling.md,
"Behind nginx"): open-source nginx never reads ``/readyz``, so what keeps clients
served is its passive checks, which this runs with Debian's nginx.

deploy/nginx/flux-hub.conf is rendered (tests/nginx_local.py: only the upstream
addresses and the listen line change) with a live hub twice and, between them, a port
nobody listens on: a hub that stopped. Every request through nginx, publishes
included, is answered by the live hub, and the gone one is tried once, then left out
for its ``fail_timeout``.
"""

from __future__ import annotations

import httpx
import pytest

from .conftest import timeout
from .doc_blocks import ROOT
from .native_client import event
from .nginx_local import NGINX, prefix_dir, render, run_nginx
from .processes import free_port

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (.ci/run installs Debian's nginx)"
)

REQUESTS = 30


async def test_nginx_sends_every_method_past_a_gone_hub_and_leaves_it_out(base_url: str) -> None:
    live = base_url.removeprefix("http://")
    gone = f"127.0.0.1:{free_port()}"
    listen = free_port()
    shipped = (ROOT / "deploy/nginx/flux-hub.conf").read_text(encoding="utf-8")
    conf = render(shipped, [live, gone, live], f"127.0.0.1:{listen}")
    with prefix_dir(conf) as prefix:
        async with (
            run_nginx(prefix, listen),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{listen}", timeout=timeout(10)) as http,
        ):
            for n in range(REQUESTS):
                # A publish (POST: never sent twice once sent) and a read (GET).
                posted = await http.post("/api/events", json=event(f"nginx/{n}", n=n))
                assert posted.status_code == 200, posted.text
                read = await http.get(f"/api/state/entities/nginx%2F{n}")
                assert read.status_code == 200, read.text
        log = (prefix / "error.log").read_text(errors="replace")
    # max_fails=1 fail_timeout=10s: one refused connection, then the gone hub is
    # skipped for the rest of the run (without them, about a third of 60 requests).
    assert log.count("Connection refused") == 1, log
    assert "no live upstreams" not in log, log
