"""The HTTP API: the route table (``router``) and the handlers, one module per resource.

Every endpoint is a :class:`~hub.api.router.Route`; errors raised by handlers become
responses in one place (:func:`hub.api.errors.response_for`). See docs/architecture.md
for where a new endpoint goes.
"""

from __future__ import annotations

__all__: list[str] = []
