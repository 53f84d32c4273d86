"""The real nginx (Debian's) with the shipped configuration, as an unprivileged user.

deploy/README.md says how: ``deploy/nginx/standalone.conf`` (the http{} frame, every
path relative to a temporary prefix, ``daemon off``) includes a copy of the shipped
upstream/server configuration in which only the upstream ``server`` lines and the
``listen`` line are rewritten (:func:`render`); every other byte is the shipped file's.
Run as root, nginx is started as ``nobody`` (its prefix handed to that user).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from .conftest import timeout
from .doc_blocks import ROOT

__all__ = [
    "NGINX",
    "STANDALONE",
    "prefix_dir",
    "render",
    "run_nginx",
    "unprivileged",
    "upstream_servers",
    "without_addresses",
]

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
STANDALONE = ROOT / "deploy/nginx/standalone.conf"

_UPSTREAM_SERVER = re.compile(
    r"^(?P<indent>[ \t]*)server[ \t]+(?P<address>[^;{\s]+)(?P<params>[^;{]*);$", re.M
)
_LISTEN = re.compile(r"^(?P<indent>[ \t]*)listen[ \t]+(?P<address>[^;\s]+);$", re.M)


def render(conf: str, servers: list[str], listen: str) -> str:
    """``conf`` with its upstream servers' addresses and its listen address replaced,
    nothing else (a server's parameters, ``max_fails=1``..., are kept).

    Raises:
        AssertionError: the file does not have exactly ``len(servers)`` upstream
            servers and one ``listen`` line.
    """
    found = _UPSTREAM_SERVER.findall(conf)
    assert len(found) == len(servers), f"{len(found)} upstream servers, not {len(servers)}"
    assert len(_LISTEN.findall(conf)) == 1, "not exactly one listen line"
    addresses = iter(servers)
    conf = _UPSTREAM_SERVER.sub(
        lambda m: f"{m['indent']}server {next(addresses)}{m['params']};", conf
    )
    return _LISTEN.sub(lambda m: f"{m['indent']}listen {listen};", conf)


def upstream_servers(conf: str) -> list[str]:
    """The addresses of the upstream ``server`` lines."""
    return [m["address"] for m in _UPSTREAM_SERVER.finditer(conf)]


def without_addresses(conf: str) -> str:
    """``conf`` with each upstream server's address replaced by ``ADDRESS``."""
    return _UPSTREAM_SERVER.sub(lambda m: f"{m['indent']}server ADDRESS{m['params']};", conf)


def unprivileged() -> dict[str, Any]:
    """``subprocess`` arguments that drop root to ``nobody`` (nothing if not root)."""
    if os.geteuid() != 0:
        return {}
    nobody = pwd.getpwnam("nobody")
    return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}


@contextlib.contextmanager
def prefix_dir(flux_hub_conf: str) -> Iterator[Path]:
    """A fresh nginx prefix holding standalone.conf (as shipped) and ``flux_hub_conf``.

    Owned by the user nginx runs as (:func:`unprivileged`); removed afterwards.
    """
    prefix = Path(tempfile.mkdtemp(prefix="flux-nginx-"))
    try:
        shutil.copyfile(STANDALONE, prefix / "standalone.conf")
        (prefix / "flux-hub.conf").write_text(flux_hub_conf, encoding="utf-8")
        user = unprivileged()
        if user:
            prefix.chmod(0o755)
            for path in [prefix, *prefix.iterdir()]:
                os.chown(path, user["user"], user["group"])
        yield prefix
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def nginx_test(prefix: Path) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` of the prefix's standalone.conf, as the unprivileged user."""
    assert NGINX is not None
    return subprocess.run(
        [NGINX, "-t", "-p", str(prefix), "-c", str(prefix / "standalone.conf"), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=timeout(30),
        check=False,
        **unprivileged(),
    )


@contextlib.asynccontextmanager
async def run_nginx(prefix: Path, port: int) -> AsyncIterator[asyncio.subprocess.Process]:
    """nginx in the foreground on ``prefix`` until the block ends (then SIGTERM).

    Its error log (stderr) goes to ``prefix/error.log``.
    """
    assert NGINX is not None
    log = (prefix / "error.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        NGINX,
        "-p",
        str(prefix),
        "-c",
        str(prefix / "standalone.conf"),
        "-e",
        "stderr",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=log,
        **unprivileged(),
    )
    log.close()
    try:
        deadline = asyncio.get_running_loop().time() + timeout(10)
        while True:
            if process.returncode is not None:
                raise AssertionError(f"nginx exited: {(prefix / 'error.log').read_text()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                assert asyncio.get_running_loop().time() < deadline, "nginx did not listen"
                await asyncio.sleep(0.05)
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)  # fast shutdown
            try:
                await asyncio.wait_for(process.wait(), timeout(10))
            except TimeoutError:
                process.kill()
                await process.wait()
