"""Flux's rules for namespace names and namespaced entity ids, with Flux's messages.

FLUX_COMPAT.md §1.8 (names) and §1.11 (ids). One deliberate difference: an entity id's
namespace is the text before the *first* ``/`` and the rest may contain more ``/``
(Flux rejects those, which breaks its own GitHub connector's ids).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "RESERVED_NAMESPACE",
    "EntityIdError",
    "ParsedId",
    "namespace_error",
    "parse_entity_id",
]

#: The hub's own namespace (``flux-core/directory``); clients cannot write to it.
RESERVED_NAMESPACE = "flux-core"

_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
MIN_NAME, MAX_NAME = 3, 32


def namespace_error(name: str) -> tuple[str, str] | None:
    """Why ``name`` is not a valid namespace name: ``(Flux's message, Debug form)``.

    None when it is valid: 3 to 32 bytes, every character in ``[a-z0-9_-]``.
    """
    size = len(name.encode())
    if size < MIN_NAME:
        return "Namespace name too short (minimum 3 characters)", "TooShort"
    if size > MAX_NAME:
        return "Namespace name too long (maximum 32 characters)", "TooLong"
    for char in name:
        if char not in _ALLOWED:
            message = f"Invalid character '{char}' (must be [a-z0-9-_])"
            debug = 'InvalidCharacters("' + message.replace('"', '\\"') + '")'
            return message, debug
    return None


class EntityIdError(ValueError):
    """An entity id that does not parse; ``debug`` is Flux's Debug rendering."""

    def __init__(self, debug: str) -> None:
        super().__init__(debug)
        self.debug = debug


@dataclass(frozen=True, slots=True)
class ParsedId:
    """An entity id split into its namespace (None if it has no ``/``) and the rest."""

    namespace: str | None
    entity: str


def parse_entity_id(entity_id: str) -> ParsedId:
    """Split an entity id the way auth mode reads it.

    Raises:
        EntityIdError: empty, an empty part around the first ``/``, or an invalid
            namespace name (the Debug text Flux shows, e.g.
            ``InvalidNamespace("Invalid namespace 'AB': TooShort")``).
    """
    if not entity_id:
        raise EntityIdError("Empty")
    namespace, slash, rest = entity_id.partition("/")
    if not slash:
        return ParsedId(None, entity_id)
    if not namespace or not rest:
        raise EntityIdError(
            f"InvalidFormat(\"Entity ID '{entity_id}' must be 'namespace/entity' with both parts non-empty\")"
        )
    problem = namespace_error(namespace)
    if problem is not None:
        detail = problem[1].replace("\\", "\\\\").replace('"', '\\"')
        raise EntityIdError(f"InvalidNamespace(\"Invalid namespace '{namespace}': {detail}\")")
    return ParsedId(namespace, rest)
