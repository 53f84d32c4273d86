"""Namespace names and namespaced entity ids (hub/wire/names.py), with Flux's messages."""

from __future__ import annotations

import pytest

from hub.wire.names import EntityIdError, ParsedId, namespace_error, parse_entity_id


@pytest.mark.parametrize("name", ["abc", "lab-1", "a_b", "x" * 32, "0123456789"])
def test_namespace_name_in_the_rules_is_valid(name: str) -> None:
    assert namespace_error(name) is None


@pytest.mark.parametrize(
    ("name", "message", "debug"),
    [
        ("ab", "Namespace name too short (minimum 3 characters)", "TooShort"),
        ("", "Namespace name too short (minimum 3 characters)", "TooShort"),
        ("x" * 33, "Namespace name too long (maximum 32 characters)", "TooLong"),
        # Measured in bytes, as Flux does: 11 two-byte characters are 22 bytes…
        ("é" * 17, "Namespace name too long (maximum 32 characters)", "TooLong"),
        (
            "Lab",
            "Invalid character 'L' (must be [a-z0-9-_])",
            "InvalidCharacters(\"Invalid character 'L' (must be [a-z0-9-_])\")",
        ),
        (
            'a"bc',
            "Invalid character '\"' (must be [a-z0-9-_])",
            'InvalidCharacters("Invalid character \'\\"\' (must be [a-z0-9-_])")',
        ),
    ],
)
def test_namespace_name_outside_the_rules_says_why(name: str, message: str, debug: str) -> None:
    assert namespace_error(name) == (message, debug)


def test_entity_id_without_slash_has_no_namespace() -> None:
    assert parse_entity_id("sensor-1") == ParsedId(None, "sensor-1")


def test_entity_id_splits_at_the_first_slash() -> None:
    # Flux rejects a second "/"; the hub keeps it in the entity part.
    assert parse_entity_id("git/org/repo") == ParsedId("git", "org/repo")


@pytest.mark.parametrize(
    ("entity_id", "debug"),
    [
        ("", "Empty"),
        (
            "/x",
            "InvalidFormat(\"Entity ID '/x' must be 'namespace/entity' with both parts non-empty\")",
        ),
        (
            "lab/",
            "InvalidFormat(\"Entity ID 'lab/' must be 'namespace/entity' with both parts non-empty\")",
        ),
        ("AB/x", "InvalidNamespace(\"Invalid namespace 'AB': TooShort\")"),
        (
            "A_B/x",
            "InvalidNamespace(\"Invalid namespace 'A_B': InvalidCharacters(\\\"Invalid"
            " character 'A' (must be [a-z0-9-_])\\\")\")",
        ),
    ],
)
def test_entity_id_that_does_not_parse_carries_fluxs_debug_text(entity_id: str, debug: str) -> None:
    with pytest.raises(EntityIdError) as info:
        parse_entity_id(entity_id)
    assert info.value.debug == debug
    assert str(info.value) == debug
