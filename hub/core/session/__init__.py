"""The native protocol's rules for one connection, as sans-I/O state machines.

Each module holds one set of rules and has no socket, no Redis, no clock and no event
loop; :mod:`hub.transport.native_ws` is the shell that feeds them what happened (a
frame arrived, Redis applied a submission, the socket drained, the fan-out dispatched
a delta) and carries out what they decide (send these frames, pause reading, read a
snapshot page, close with this reason):

- :mod:`.requests`: the order requests are handled in, publish pipelining, the
  request queue's bound and when reading pauses and resumes;
- :mod:`.acks`: acks go out in submission order, and what each says;
- :mod:`.sync`: one subscription's snapshot or catch-up hand-off to live deltas, and
  its resets;
- :mod:`.outbox`: a slow consumer's deltas conflated per entity, and its bound;
- :mod:`.subscribe`: whether a ``subscribe`` is accepted, and what it reads.
"""

__all__: list[str] = []
