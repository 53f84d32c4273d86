"""schemathesis against a live hub: every answer matches ``/openapi.json``.

The run is the command docs/api.md shows (so the doc's example is executed too): the
``st`` CLI, in a process of its own, generates requests from the document (its
examples, boundary values, then random valid and invalid data) and checks that no
answer is a 5xx, that every status is documented, and that every body has the
documented media type and schema (so every error is JSON ``{"error", "code"}``).

Twice: in Internal mode (everything open), and in Public mode with the admin token
on every request, as docs/api.md says (namespaces, admin checks, 401/403 answers).
Each run is bounded (a fixed seed, a few examples per operation: about 20 s on two
cores). The hub is configured as docs/api.md asks: an encryption key and an OAuth
client per connector (else Flux's documented 500s), and no room for generic pollers
(``max_pollers=0``: a poller would fetch whatever URL the fuzzer made up).
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from hub.config import Settings
from hub.connectors import BUILTIN_NAMES

from .conftest import make_settings
from .processes import free_port
from .test_openapi import doc_examples, run_example

#: A fixed key: the run stores connector tokens, sealed with it.
ENCRYPTION_KEY = base64.b64encode(bytes(range(32))).decode()
ADMIN_TOKEN = "fuzz-admin-token"


@pytest.fixture(params=["internal", "public"])
def mode(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def settings(key_prefix: str, mode: str) -> Settings:
    clients = {name: (f"{name}-client", f"{name}-secret") for name in BUILTIN_NAMES}
    gateway = {"auth_enabled": True, "admin_token": ADMIN_TOKEN} if mode == "public" else {}
    return make_settings(
        key_prefix,
        gateway=gateway,
        connectors={
            "encryption_key": ENCRYPTION_KEY,
            "oauth_clients": clients,
            "max_pollers": 0,
            "max_taps": 0,  # a tap would run (or pip install) whatever the fuzzer names
            # A stored github token is polled: at a port nothing listens on, not GitHub.
            "github_api_url": f"http://127.0.0.1:{free_port()}",
        },
    )


def st_command(mode: str) -> str:
    """The ``st run`` of docs/api.md; in Public mode, with the admin token."""
    command = next(block for block in doc_examples() if block.startswith("st run "))
    if mode == "public":
        command = command.rstrip() + f' \\\n  -H "Authorization: Bearer {ADMIN_TOKEN}"\n'
    return command


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_schemathesis_finds_every_answer_as_documented(
    mode: str, base_url: str, tmp_path: Path
) -> None:
    await run_example(st_command(mode), base_url, tmp_path, 240, stderr_ok=True)
