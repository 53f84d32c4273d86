"""The image's build context: what ``.dockerignore`` lets through (deploy/README.md).

No Docker engine runs here, so the context is computed the way Docker computes it:
:class:`DockerIgnore` is a transcription of moby's ``patternmatcher`` (the rules of
``.dockerignore``: ``filepath.Clean``-ed patterns, ``*``/``?``/``[...]`` within a path
element, ``**`` across them, a pattern also matching any parent directory of a path,
``!`` re-including, the last matching line deciding). Then the context must hold
nothing heavy or secret, and must be enough for the Dockerfile's ``pip install``.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import timeout
from .doc_blocks import ROOT


@dataclass(frozen=True)
class _Pattern:
    text: str
    exclusion: bool
    regex: re.Pattern[str]


def _compile(pattern: str) -> re.Pattern[str]:
    """moby/patternmatcher's regexp of one cleaned pattern."""
    out = "^"
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < len(pattern) and pattern[i] == "*":
                i += 1
                if i < len(pattern) and pattern[i] == "/":
                    i += 1
                out += ".*" if i == len(pattern) else "(.*/)?"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch in ".$":
            out += "\\" + ch
        elif ch == "\\":
            out += "\\" + pattern[i] if i < len(pattern) else "\\\\"
            i += 1
        else:
            out += ch
    return re.compile(out + "$")


class DockerIgnore:
    """The patterns of one ``.dockerignore`` file."""

    def __init__(self, text: str) -> None:
        self.patterns: list[_Pattern] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exclusion = line.startswith("!")
            if exclusion:
                line = line[1:].strip()
            line = posixpath.normpath(line)
            if len(line) > 1 and line.startswith("/"):
                line = line[1:]
            self.patterns.append(_Pattern(line, exclusion, _compile(line)))

    def excluded(self, path: str) -> bool:
        """``path`` (relative, with ``/``) is left out of the context."""
        parents = path.split("/")[:-1]
        matched = False
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            match = bool(pattern.regex.match(path)) or any(
                pattern.regex.match("/".join(parents[: i + 1])) for i in range(len(parents))
            )
            if match:
                matched = not pattern.exclusion
        return matched

    def may_include_below(self, directory: str) -> bool:
        """Some ``!`` pattern could bring back a path below an excluded ``directory``."""
        return any(
            p.exclusion and (not re.fullmatch(r"[\w./-]+", p.text) or p.text.startswith(directory))
            for p in self.patterns
        )


def context(root: Path, ignore: DockerIgnore) -> Iterator[str]:
    """The files Docker sends for ``root`` (relative paths), walking as Docker does."""
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        dirnames[:] = [
            d
            for d in dirnames
            if not ignore.excluded(prefix + d) or ignore.may_include_below(prefix + d)
        ]
        yield from (prefix + f for f in filenames if not ignore.excluded(prefix + f))


IGNORE = DockerIgnore((ROOT / ".dockerignore").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        ("*", "README.md", True),
        ("*", "hub/app.py", True),  # via its parent "hub"
        ("*\n!hub", "hub/app.py", False),
        ("*\n!hub/", "hub/app.py", False),  # Clean drops the slash
        ("*\n!hub\nhub/x", "hub/x/y.py", True),
        ("**/__pycache__", "a/b/__pycache__/c.pyc", True),
        ("**/__pycache__", "__pycache__/c.pyc", True),
        ("*.md", "docs/a.md", False),  # * stays within one path element
        ("**/*.md", "docs/a.md", True),
        ("/dist", "dist/x.whl", True),
        ("**/*.py[cod]", "hub/a.pyc", True),
        ("**/*.py[cod]", "hub/a.py", False),
        ("?ub", "hub/a.py", True),
        ("# comment\n\n  dist  ", "dist/a", True),
        ("docs\n!docs/keep.md", "docs/keep.md", False),
        ("docs\n!docs/keep.md", "docs/other.md", True),
    ],
)
def test_the_matcher_follows_dockers_rules(patterns: str, path: str, excluded: bool) -> None:
    assert DockerIgnore(patterns).excluded(path) is excluded


#: Heavy or secret paths, wherever they appear: none may enter the image.
PLANTED = [
    ".git/config",
    ".git/objects/ab/cdef",
    ".venv/lib/python3.11/site-packages/x.py",
    ".venv-ci/bin/python",
    "clients/python/.venv/bin/python",
    "flux-data/appendonly.aof",
    "hub/flux-data/dump.rdb",
    "clients/js/node_modules/ws/index.js",
    "hub/node_modules/x/index.js",
    "hub/__pycache__/app.cpython-311.pyc",
    "hub/store/stale.pyc",
    "clients/python/flux_client/__pycache__/client.cpython-311.pyc",
    "flux_hub.egg-info/PKG-INFO",
    "clients/python/flux_client.egg-info/PKG-INFO",
    "build/lib/hub/app.py",
    "hub/build/x",
    "dist/flux_hub-0.1.0-py3-none-any.whl",
    ".mypy_cache/3.11/x.json",
    "hub/.mypy_cache/x.json",
    ".ruff_cache/x",
    ".pytest_cache/v/x",
    ".hypothesis/examples/x",
    ".coverage",
    "htmlcov/index.html",
    "readme-first-command.log",
    "bench/out/run.json",
    ".env",
    "hub/.env",
    "hub/.env.local",
    "hub/server.pem",
    "clients/python/client.key",
    "tests/test_x.py",
    "docs/x.md",
    "deploy/k8s/base/secret.example.yaml",
]
#: What ``pip install .`` needs.
NEEDED = [
    "pyproject.toml",
    "README.md",
    "hub/app.py",
    "hub/store/reduce.lua",
    "hub/dashboard/dashboard.js",
    "clients/python/flux_client/client.py",
    "clients/python/flux_client/py.typed",
]


def test_a_tree_full_of_heavy_and_secret_files_sends_only_the_sources(tmp_path: Path) -> None:
    for path in PLANTED + NEEDED:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x", encoding="utf-8")
    assert sorted(context(tmp_path, IGNORE)) == sorted(NEEDED)


def _git_ignored() -> list[str]:
    listing = subprocess.run(
        ["git", "ls-files", "--others", "--ignored", "--exclude-standard", "--directory"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [line.rstrip("/") for line in listing.stdout.splitlines()]


def _git_tracked() -> list[str]:
    listing = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return listing.stdout.splitlines()


def test_the_repositorys_context_is_the_package_sources_and_nothing_git_ignores() -> None:
    sent = set(context(ROOT, IGNORE))
    ignored = _git_ignored()
    leaked = sorted(
        p for p in sent if any(p == i or p.startswith(i + "/") for i in [".git", *ignored])
    )
    assert not leaked, f"in the image's context: {leaked[:10]}"
    allowed = ("hub/", "clients/python/")
    assert all(p in ("pyproject.toml", "README.md") or p.startswith(allowed) for p in sent)
    wanted = {
        p for p in _git_tracked() if p in ("pyproject.toml", "README.md") or p.startswith(allowed)
    }
    assert wanted - sent == set(), "tracked sources missing from the context"


def test_the_dockerfile_builds_from_the_repository_root() -> None:
    dockerfile = (ROOT / "deploy/docker/Dockerfile").read_text(encoding="utf-8")
    assert "COPY . /src" in dockerfile and "pip install /src" in dockerfile
    assert "docker build -f deploy/docker/Dockerfile" in dockerfile
    assert re.search(r"^USER 10001:10001$", dockerfile, re.M)  # runAsUser in deploy/k8s


@pytest.mark.slow
def test_the_context_alone_builds_the_package(tmp_path: Path) -> None:
    """What the image's ``pip install /src`` does first: build the wheel from the context."""
    src = tmp_path / "src"
    for path in context(ROOT, IGNORE):
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / path, src / path)
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(src)],
        capture_output=True,
        text=True,
        timeout=timeout(300),
        check=False,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("flux_hub-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ["hub/store/reduce.lua", "hub/dashboard/dashboard.js", "flux_client/py.typed"]:
        assert needed in names, f"{needed} not in the wheel"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


#: A shell that makes every file system read-only (in a mount namespace of its own),
#: then runs its arguments: a container's read-only root, with no writable /tmp even.
READ_ONLY = (
    "mount -o remount,bind,ro / "
    "&& { ! mountpoint -q /dev/shm || mount -o remount,bind,ro /dev/shm; } "
    '&& exec "$@"'
)


def _read_only_root_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY, "sh", "true"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


@pytest.mark.skipif(
    not _read_only_root_available(),
    reason="needs `unshare --mount` and remounting (root, as CI runs): not available here",
)
async def test_on_an_external_redis_the_hub_needs_no_writable_path(
    redis_url: str, key_prefix: str
) -> None:
    """What readOnlyRootFilesystem (deploy/k8s) and read_only (compose) rely on."""
    import asyncio
    import signal

    import httpx

    from .processes import free_port

    async def hub(*args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            "unshare", "--mount", "--propagation", "private", "sh", "-c", READ_ONLY, "sh",
            sys.executable, "-m", "hub.cli", "serve", "--host", "127.0.0.1", *args,
            env={**os.environ, "FLUX_KEY_PREFIX": key_prefix, "FLUX_LOG_LEVEL": "warning"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip

    port = free_port()
    process = await hub("--port", str(port), "--redis", redis_url)
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=timeout(10)) as http:
            deadline = asyncio.get_running_loop().time() + timeout(30)
            while True:
                assert process.returncode is None, "the hub stopped on a read-only root"
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert asyncio.get_running_loop().time() < deadline, "never ready"
                await asyncio.sleep(0.1)
            event = {
                "stream": "s",
                "source": "t",
                "payload": {"entity_id": "ro/a", "properties": {"v": 1}},
            }
            assert (await http.post("/api/events", json=event)).status_code == 200
            entity = (await http.get("/api/state/entities/ro/a")).json()
            assert entity["properties"] == {"v": 1}
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), timeout(20))
    assert process.returncode == 0, err.decode()[-2000:]

    # The same root refuses the embedded Redis its data directory: the mount is real.
    embedded = await hub("--port", str(free_port()), "--data-dir", "/var/lib/flux-ro-test")
    _, err = await asyncio.wait_for(embedded.communicate(), timeout(30))
    assert embedded.returncode != 0
    assert "Read-only file system" in err.decode(), err.decode()[-2000:]
