"""A native ``publish`` frame's events checked, before they go to Redis.

The checks are the policy every way in shares (:class:`~hub.engine.publish.PublishPolicy`,
in Flux's order: limits, then authorization, then the namespace's rate limit); this
module turns its verdicts into the frame's per-event results
(:class:`~hub.core.session.acks.PreparedPublish`), which the ack completes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..core.session.acks import PreparedPublish, event_failure, event_refusal
from ..engine.publish import RateRefusal
from ..errors import PayloadTooLarge

if TYPE_CHECKING:
    from ..engine.auth import BearerProblem
    from ..engine.publish import Admission, PublishPolicy
    from ..engine.tenancy import Tenancy
    from ..wire.frames import PublishFrame

__all__ = ["PublishChecks"]


class PublishChecks:
    """The checks of one hub's native publishes."""

    def __init__(self, policy: PublishPolicy, tenancy: Tenancy, max_events: int) -> None:
        self.policy = policy
        self.tenancy = tenancy
        self.max_events = max_events

    async def prepare(self, frame: PublishFrame, token: str | BearerProblem) -> PreparedPublish:
        """Every check, for a connection speaking with ``token``."""
        prepared = self.parse(frame)
        if prepared.refusal is not None:
            return prepared
        if not self.tenancy.enabled:
            return self.admit_open(prepared)
        tenancy = self.tenancy

        async def authorize(entity_id: str | None) -> str | None:
            return await tenancy.authorize_token(token, entity_id)

        return _admitted(prepared, await self.policy.admit(prepared.accepted, authorize))

    def parse(self, frame: PublishFrame) -> PreparedPublish:
        """The frame's events parsed: the failures as results, the valid events as
        accepted (until admitted); or the whole frame refused."""
        count = len(frame.events)
        if count > self.max_events:
            refusal = f"{count} events in one frame; the limit is {self.max_events}"
            return PreparedPublish(frame.ref, refusal=refusal)
        policy = self.policy
        valid, failed = policy.parse_many(frame.events, policy.now_ms())
        prepared = PreparedPublish(frame.ref, [None] * count, valid)
        for index, raw, exc in failed:
            code = "too_large" if isinstance(exc, PayloadTooLarge) else "invalid"
            prepared.results[index] = event_failure(raw, code, str(exc))
        return prepared

    def admit_open(self, prepared: PreparedPublish) -> PreparedPublish:
        """The admission when auth is off: nothing to await (only the hub's own
        namespace is refused)."""
        return _admitted(prepared, self.policy.admit_open(prepared.accepted))


def _admitted(prepared: PreparedPublish, admission: Admission) -> PreparedPublish:
    prepared.accepted = admission.accepted
    for index, envelope, why in admission.refused:
        if isinstance(why, RateRefusal):
            result = event_refusal(envelope, "rate_limited", "rate limit exceeded")
            result["retry_after_ms"] = math.ceil(why.wait * 1000)
        else:
            result = event_refusal(envelope, why.code, why.message)
        prepared.results[index] = result
    return prepared
