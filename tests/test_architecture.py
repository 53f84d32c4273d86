"""The shape of the code, as docs/architecture.md draws it, checked.

- no import cycle between the hub's modules, imports under ``TYPE_CHECKING`` included:
  a cycle means two modules are one component in two files;
- each package imports only the layers :data:`MAY_IMPORT` allows it (the diagram of
  docs/architecture.md, as data);
- no module over :data:`MAX_LINES` lines: a newcomer reads a module in one sitting;
- only the composition root (``hub/app.py``) and what runs it know the ``Hub``;
- every route of the live route table answers a method it lacks with 405 and an
  ``Allow`` header whose methods all work (RFC 9110 §15.5.6).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import httpx
import pytest

from .test_layering import HUB, ROOT, imports, module_name, python_files

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from hub.app import Hub

MAX_LINES = 500
#: The modules that build or run the hub as a whole.
ROOT_MODULES = frozenset({"hub.app", "hub.runner", "hub.commands", "hub.cli"})
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

HUB_FILES = python_files(HUB)
MODULES = {module_name(p): p for p in HUB_FILES}


def import_graph() -> dict[str, set[str]]:
    """Module → the hub modules it imports (``from pkg import sub`` included)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for found in imports(path):
            if found.module in MODULES and found.module != name:
                graph[name].add(found.module)
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    # Guards the check below against passing vacuously.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_import_graph_sees_type_checking_imports() -> None:
    # hub/api/router.py imports Request only under TYPE_CHECKING.
    assert "hub.transport.http" in import_graph()["hub.api.router"]


def test_no_import_cycle_between_hub_modules() -> None:
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("path", HUB_FILES, ids=lambda p: p.relative_to(HUB).as_posix())
def test_module_is_small_enough_to_read_in_one_sitting(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines"


def test_only_the_composition_root_knows_the_hub() -> None:
    users = sorted(name for name, targets in import_graph().items() if "hub.app" in targets)
    assert set(users) <= ROOT_MODULES, users


#: The layers, top to bottom: each package and the hub packages it may import.
#: ``hub.core`` and ``hub.wire`` are one pure layer; within it, the model and rules
#: sit below the wire formats, and the protocol state machines (``hub.core.session``)
#: above them (see the next test).
PURE = {"hub.core", "hub.wire", "hub.errors"}
MAY_IMPORT: dict[str, set[str]] = {
    "hub.core": PURE,
    "hub.wire": PURE,
    "hub.store": PURE | {"hub.store", "hub.config"},
    "hub.engine": PURE | {"hub.engine", "hub.store", "hub.config"},
    # The HTTP API's handlers take the transport's request and response types.
    "hub.transport": PURE | {"hub.transport", "hub.engine", "hub.store", "hub.config"},
    "hub.api": PURE | {"hub.api", "hub.transport", "hub.engine", "hub.store", "hub.config"},
    "hub.connectors": PURE
    | {"hub.connectors", "hub.api", "hub.transport", "hub.engine", "hub.store", "hub.config"},
    # The MCP server is a client of the hub's REST and native endpoints (in-process on /mcp).
    "hub.mcp": PURE | {"hub.mcp", "hub.api", "hub.transport", "hub.engine", "hub.config"},
}


def package_of(module: str) -> str:
    """``hub.engine.fanout`` -> ``hub.engine``; top-level modules are their own."""
    return ".".join(module.split(".")[:2])


def test_layers_import_only_the_layers_below_them() -> None:
    wrong = [
        f"{name} imports {target}"
        for name, targets in import_graph().items()
        if package_of(name) in MAY_IMPORT
        for target in sorted(targets)
        if package_of(target) not in MAY_IMPORT[package_of(name)]
    ]
    assert wrong == []


def test_within_the_pure_layer_only_the_protocol_machines_read_wire_formats() -> None:
    # The model and rules of hub.core are below hub.wire, which builds on them; the
    # session state machines speak frames, so they are above it.
    wrong = [
        f"{name} imports {target}"
        for name, targets in import_graph().items()
        for target in sorted(targets)
        if (name.startswith("hub.core.") and not name.startswith("hub.core.session"))
        and target.startswith("hub.wire")
        or name.startswith("hub.wire")
        and target.startswith("hub.core.session")
    ]
    assert wrong == []


def sample_path(template: str) -> str:
    """A concrete path for a template: every capture becomes ``sample``."""
    return re.sub(r"\{[^}]+\}", "sample", template)


async def test_every_route_answers_a_missing_method_with_405_and_a_working_allow(
    hub: Hub, http: httpx.AsyncClient
) -> None:
    table = hub.api.router.templates()
    assert len(table) >= 20, table  # the whole table, extensions included
    for template, methods in table:
        path = sample_path(template)
        refusals = []
        for method in (m for m in METHODS if m not in methods):
            reply = await http.request(method, path)
            # Another route may take it (GET /api/state/entities/delete reads the
            # entity "delete"); otherwise it is refused with the methods that work.
            if reply.status_code == 405:
                refusals.append(reply)
        if len(methods) < len(METHODS):
            assert refusals, template
        for reply in refusals:
            assert reply.json()["error"], template
            allowed = [m.strip() for m in reply.headers["allow"].split(",")]
            assert set(methods) <= set(allowed), (template, allowed)
            for method in allowed:
                answer = await http.request(method, path)
                assert answer.status_code != 405, (template, method)
