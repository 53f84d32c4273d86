"""Routing as data: every HTTP endpoint of the hub is a :class:`Route` in one table.

A route is a path template and the handlers of its methods. A template's segments are
literal, ``{name}`` (one non-empty segment, percent-decoded) or, last, ``{name:path}``
(the rest of the path, ``/`` included, percent-decoded). Handlers receive the request
and the captured segments as keyword arguments::

    router = Router([
        Route("/api/state/entities/delete", {"POST": state.batch_delete}),
        Route("/api/state/entities/{entity_id:path}", {"GET": state.get, "DELETE": state.delete}),
    ])
    handler = router.resolve("GET", "/api/state/entities/a%2Fb")  # state.get(request, entity_id="a/b")

Resolution (RFC 9110 §15.5.6): among the routes whose template matches the path, the
first, in table order, that has the method wins; when some match and none has the
method, :class:`MethodNotAllowed` carries every method they allow (the ``Allow``
header); when none matches, :class:`NotFound`. So ``GET /api/state/entities/delete``
reaches the entity called ``delete`` while ``POST`` reaches the batch delete.

:func:`mount` prefixes a group's routes, so a feature (connectors, namespaces) keeps
its templates relative to where it is mounted.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import unquote

from ..errors import BadRequest

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping

    from ..transport.http import Request, Response

__all__ = ["Handler", "MethodNotAllowed", "NotFound", "Route", "Router", "mount"]

#: A bound handler: the request in, the response out (captures already applied).
Handler: TypeAlias = "Callable[[Request], Awaitable[Response]]"


class NotFound(BadRequest):
    """404: no route has this path."""

    def __init__(self, path: str) -> None:
        super().__init__(f"no such endpoint: {path}", 404)


class MethodNotAllowed(BadRequest):
    """405, with the methods the path does allow (the ``Allow`` header)."""

    def __init__(self, method: str, path: str, allowed: Iterable[str]) -> None:
        #: The allowed methods, sorted, as the ``Allow`` header lists them.
        self.allowed = ", ".join(sorted(set(allowed)))
        super().__init__(f"method {method} not allowed on {path} (allowed: {self.allowed})", 405)


@dataclass(frozen=True, slots=True)
class _Segment:
    name: str
    capture: bool
    rest: bool


@dataclass(frozen=True, slots=True)
class Route:
    """One path template and the handler of each of its methods."""

    template: str
    methods: Mapping[str, Callable[..., Awaitable[Response]]]

    def __post_init__(self) -> None:
        if not self.template.startswith("/"):
            raise ValueError(f"route template {self.template!r} must start with '/'")
        if not self.methods:
            raise ValueError(f"route {self.template!r} has no methods")


class _Compiled:
    __slots__ = ("literal", "methods", "segments", "template")

    def __init__(self, route: Route) -> None:
        self.template = route.template
        self.methods = route.methods
        parts = route.template.strip("/").split("/") if route.template != "/" else []
        self.segments: list[_Segment] = []
        for index, part in enumerate(parts):
            if part.startswith("{") and part.endswith("}"):
                name, _, kind = part[1:-1].partition(":")
                if kind not in ("", "path"):
                    raise ValueError(f"unknown capture kind {kind!r} in {route.template!r}")
                if kind == "path" and index != len(parts) - 1:
                    raise ValueError(f"{{{name}:path}} must be last in {route.template!r}")
                self.segments.append(_Segment(name, True, kind == "path"))
            else:
                self.segments.append(_Segment(part, False, False))
        #: A template without captures matches one path exactly: looked up in a dict.
        self.literal = route.template if all(not s.capture for s in self.segments) else None

    def match(self, path: str) -> dict[str, str] | None:
        parts = path[1:].split("/") if path != "/" else []
        captured: dict[str, str] = {}
        for index, segment in enumerate(self.segments):
            if segment.rest:
                rest = "/".join(parts[index:])
                if not rest:
                    return None
                captured[segment.name] = unquote(rest)
                return captured
            if index >= len(parts):
                return None
            part = parts[index]
            if segment.capture:
                if not part:
                    return None
                captured[segment.name] = unquote(part)
            elif part != segment.name:
                return None
        return captured if len(parts) == len(self.segments) else None


class Router:
    """The route table. See the module docstring for how a request is resolved."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._routes = [_Compiled(r) for r in routes]
        # Literal paths are the common case (every publish): found without a scan.
        self._literal: dict[str, list[int]] = {}
        self._templated: list[int] = []
        for index, compiled in enumerate(self._routes):
            if compiled.literal is not None:
                self._literal.setdefault(compiled.literal, []).append(index)
            else:
                self._templated.append(index)

    def resolve(self, method: str, path: str) -> Handler:
        """The handler of ``method path``, its captures bound.

        Raises:
            NotFound: no route matches the path.
            MethodNotAllowed: routes match the path, none with this method.
        """
        matched: list[tuple[int, dict[str, str]]] = [(i, {}) for i in self._literal.get(path, ())]
        for index in self._templated:
            captured = self._routes[index].match(path)
            if captured is not None:
                matched.append((index, captured))
        if not matched:
            raise NotFound(path)
        matched.sort(key=lambda item: item[0])
        for index, captured in matched:
            endpoint = self._routes[index].methods.get(method)
            if endpoint is not None:
                return partial(endpoint, **captured) if captured else endpoint
        allowed: list[str] = []
        for index, _ in matched:
            allowed += self._routes[index].methods
        raise MethodNotAllowed(method, path, allowed)

    def templates(self) -> list[tuple[str, list[str]]]:
        """Every route as ``(template, methods)``, in table order (for docs and tests)."""
        return [(c.template, sorted(c.methods)) for c in self._routes]


def mount(prefix: str, routes: Iterable[Route]) -> list[Route]:
    """``routes`` with their templates under ``prefix`` (``"/"`` of a group: the prefix)."""
    if not prefix.startswith("/") or prefix.endswith("/"):
        raise ValueError(f"mount prefix {prefix!r} must start and not end with '/'")
    return [Route(prefix if r.template == "/" else prefix + r.template, r.methods) for r in routes]
