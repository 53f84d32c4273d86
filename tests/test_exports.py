"""The public surface of the hub: every module declares ``__all__``, and the names each
package exports are pinned here, so a change to them is a visible decision.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import pkgutil
from types import ModuleType

import pytest

import hub


def all_modules() -> list[str]:
    names = ["hub"]
    names += [m.name for m in pkgutil.walk_packages(hub.__path__, prefix="hub.")]
    return sorted(names)


MODULES = all_modules()

EXPECTED: dict[str, set[str]] = {
    "hub": {"__version__"},
    "hub.core": {
        "DELETED_PROPERTY",
        "Change",
        "ChangeKind",
        "Delta",
        "Entity",
        "Outcome",
        "OutcomeStatus",
        "Pattern",
        "PatternKind",
        "SubscriptionIndex",
        "World",
        "format_ms",
        "parse_rfc3339_ms",
    },
    "hub.wire": {
        "Envelope",
        "EventLimits",
        "parse_batch_body",
        "parse_event",
        "parse_event_body",
    },
    "hub.store": {
        "MIN_REDIS_VERSION",
        "Applied",
        "ConnectorStore",
        "DeltaBatch",
        "EmbeddedRedis",
        "EntityRecord",
        "EventLogAudit",
        "Keys",
        "LogExtent",
        "LogHead",
        "Namespace",
        "NamespaceTotals",
        "PendingApply",
        "Registry",
        "SnapshotPage",
        "Store",
        "Submission",
        "Totals",
        "find_server_binary",
        "stream_id",
    },
    "hub.api": set(),
    "hub.engine": set(),
    "hub.transport": set(),
}


def test_exports_finds_every_package_and_module() -> None:
    assert set(EXPECTED) <= set(MODULES)
    assert {"hub.core.reducer", "hub.wire.envelope", "hub.store.keys", "hub.app"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_declares_all(name: str) -> None:
    module = importlib.import_module(name)
    assert "__all__" in vars(module)
    assert isinstance(module.__all__, list | tuple)
    assert all(isinstance(n, str) for n in module.__all__)


@pytest.mark.parametrize("name", MODULES)
def test_module_defines_every_name_in_all(name: str) -> None:
    module = importlib.import_module(name)
    missing = [n for n in getattr(module, "__all__", []) if not hasattr(module, n)]
    assert missing == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_package_exports_expected_names(name: str) -> None:
    package = importlib.import_module(name)
    assert set(package.__all__) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_package_has_no_public_name_outside_all(name: str) -> None:
    package = importlib.import_module(name)
    public = {
        n
        for n, value in vars(package).items()
        if not n.startswith("_")
        and not isinstance(value, ModuleType)
        # ``from __future__ import annotations`` leaves a feature object behind.
        and type(value).__module__ != "__future__"
    }
    assert public <= set(package.__all__)


def test_package_version_matches_distribution_metadata() -> None:
    assert hub.__version__ == importlib.metadata.version("flux-hub")
