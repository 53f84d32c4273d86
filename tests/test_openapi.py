"""``GET /openapi.json`` describes exactly the live route table, as valid OpenAPI 3.1.

- every ``(template, method)`` of the hub's router (extensions included) is an
  operation of the document, and every operation of the document is a route: no
  route undocumented, no stale path;
- the document validates against the OpenAPI 3.1 schema (``openapi-spec-validator``);
- every operation is written for a user (summary, description, its statuses) and
  every error response has the ``{"error", "code"}`` schema;
- the examples of docs/api.md run against a live hub.

The answers themselves are checked against the document by schemathesis in
``tests/test_openapi_live.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from hub.api.openapi import UndocumentedRoutes, build_document, openapi_path, operation, reply
from hub.app import Hub

from .conftest import timeout
from .processes import tools_env

DOCS = Path(__file__).resolve().parent.parent / "docs" / "api.md"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


async def _document(http: httpx.AsyncClient) -> dict[str, Any]:
    reply = await http.get("/openapi.json")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["access-control-allow-origin"] == "*"
    document: dict[str, Any] = reply.json()
    return document


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (path, method): op
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
    }


async def test_document_has_every_route_of_the_live_table_and_no_other(
    hub: Hub, http: httpx.AsyncClient
) -> None:
    document = await _document(http)
    table = hub.api.router.templates()
    routes = {(openapi_path(t), m.lower()) for t, methods in table for m in methods}
    assert any(t.startswith("/api/connectors/") for t, _ in table)  # extensions included
    documented = set(_operations(document))
    assert sorted(routes - documented) == [], "routes missing from /openapi.json"
    assert sorted(documented - routes) == [], "stale operations in /openapi.json"


async def test_document_is_valid_openapi_3_1(http: httpx.AsyncClient) -> None:
    document = await _document(http)
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises OpenAPIValidationError with the offending part


async def test_every_operation_is_written_for_a_user(http: httpx.AsyncClient) -> None:
    document = await _document(http)
    operations = _operations(document)
    ids = [op["operationId"] for op in operations.values()]
    assert len(ids) == len(set(ids))
    for (path, method), op in operations.items():
        where = f"{method.upper()} {path}"
        assert op["summary"] and op["description"], where
        assert op["responses"], where
        for param in re.findall(r"\{(\w+)\}", path):
            declared = [p["name"] for p in op.get("parameters", ()) if p["in"] == "path"]
            assert param in declared, where
        for status, response in op["responses"].items():
            assert response["description"], (where, status)
            if int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema["$ref"].rsplit("/", 1)[1] in {"Error", "Conflict"}, (where, status)


async def test_error_schema_lists_the_codes_the_hub_sends(http: httpx.AsyncClient) -> None:
    document = await _document(http)
    codes = set(document["components"]["schemas"]["Error"]["properties"]["code"]["enum"])
    assert {"invalid_event", "bad_request", "not_found", "method_not_allowed"} <= codes
    missing = await http.get("/api/state/entities/nobody%2Fhere")
    assert missing.json()["code"] in codes


def test_build_document_names_the_routes_without_an_operation() -> None:
    documented = operation(
        "a", "A", "The A.", tag="t", responses={200: reply("Yes.", {"type": "object"})}
    )
    table = [("/a/{id:path}", ["GET"]), ("/b", ["GET", "POST"])]
    operations = {("/a/{id:path}", "GET"): documented, ("/b", "GET"): documented}
    with pytest.raises(UndocumentedRoutes, match=r"POST /b") as caught:
        build_document(table, operations, {}, version="0")
    assert caught.value.missing == ["POST /b"]
    document = build_document(table[:1], operations, {}, version="0")
    assert list(document["paths"]) == ["/a/{id}"]


# ---------------------------------------------------------------------- docs/api.md


def doc_examples() -> list[str]:
    """The ``sh`` blocks of docs/api.md, in order."""
    return re.findall(r"```sh\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL)


async def run_example(
    script: str, base_url: str, cwd: Path, seconds: float, *, stderr_ok: bool = False
) -> str:
    """Run a docs example in ``cwd``, ``localhost:3000`` being the test hub; its stdout.

    It must exit 0 and, unless ``stderr_ok``, print nothing on stderr.
    """
    host = base_url.removeprefix("http://")
    env = tools_env()  # `python` and `st` of this environment, as after activating its venv
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        "set -euo pipefail\n" + script.replace("localhost:3000", host),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout(seconds))
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    output = stdout.decode()
    assert process.returncode == 0, f"{script}\nexit {process.returncode}\n{output}\n{stderr!r}"
    assert stderr_ok or not stderr, stderr
    return output


@pytest.mark.skipif(shutil.which("curl") is None, reason="the docs examples use curl")
async def test_docs_api_examples_run_against_a_live_hub(base_url: str, tmp_path: Path) -> None:
    saved, listed = doc_examples()[:2]
    head = await run_example(saved, base_url, tmp_path, 30)
    assert head.splitlines()[:2] == ["{", '    "openapi": "3.1.0",']
    assert len(head.splitlines()) == 20
    validate(json.loads((tmp_path / "openapi.json").read_text(encoding="utf-8")))
    operations = (await run_example(listed, base_url, tmp_path, 30)).splitlines()
    assert "POST /api/events - Publish one event" in operations
    assert any(line.startswith("GET /api/connectors/{name} - ") for line in operations)
