"""Script calls pipelined on one Redis connection, their replies read in order.

redis-py's client waits for a command's reply before the connection serves another,
so a caller whose calls must keep their order (the reduce script: events apply in the
order they were submitted) could have only one call in flight, and the hub and Redis
took turns: Redis idle while the hub handled a reply and built the next call, the hub
waiting while Redis ran it (bench/RESULTS.md). Here a call is written as soon as it is
made; whoever waits for a reply reads the replies before it, in order. Redis runs the
commands of one connection in the order they arrive, so order holds.

Failures:

- a lost connection, or no reply within ``read_timeout``, fails every call in flight
  with :class:`~hub.errors.LogUnavailable` (Redis may have run some: callers retry
  with the same ``eventId``, which de-duplication makes safe); the next call connects
  again and loads the script first, so a restarted Redis needs no retry;
- ``NOSCRIPT`` on a live connection (someone ran ``SCRIPT FLUSH``): the calls after
  it were sent too and fail the same way. Writing stops; the rest of the replies in
  flight are read, the script is loaded, and every call that got ``NOSCRIPT`` is sent
  again in its order, before any new call. Only if another client loaded the script
  in the instant between two of them could a later call have run first; that is
  logged.

With ``wait`` (``FLUX_REDIS_WAIT_REPLICAS``), each call is followed on the connection by
``WAIT <replicas> <timeout>``: its reply is given only once that many replicas hold the
write, and a call they did not confirm in time fails with :class:`LogUnavailable` (it
was applied on the master: a retry with the same ``eventId`` answers it as a duplicate).

On a Redis Cluster (hub/store/cluster.py) a call whose slot is moving is refused with a
redirection (``ASK``, ``TRYAGAIN``, ``MOVED``): with :attr:`ScriptChannel.redirected`
set, such a call is handed to it unsettled, in reply order, to be sent again
(:meth:`ScriptChannel.resend`, hub/store/moving.py).

Bound: the caller keeps at most a few calls in flight (the ingest: ``INGEST_DEPTH``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from redis import exceptions as redis_errors

from ..errors import LogUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from redis.asyncio.connection import AbstractConnection

__all__ = ["ScriptCall", "ScriptChannel"]

logger = logging.getLogger("hub.store")

_PENDING = object()
#: :meth:`ScriptChannel._read_wait`'s answer when the connection failed.
_LOST = object()

#: Seconds a (re)connection may take, at most: Redis answers one in microseconds
#: when it runs at all.
CONNECT_TIMEOUT = 5.0

#: A Redis Cluster's answers to a call whose slot is moving or has moved (``MOVED``
#: is an ``ASK`` to redis-py): nothing of the call ran.
REDIRECTIONS = (redis_errors.AskError, redis_errors.TryAgainError)


@dataclass(eq=False, slots=True)
class ScriptCall:
    """One call written to the connection; :meth:`ScriptChannel.reply` gives its reply."""

    packed: list[bytes]
    #: A SCRIPT LOAD the channel sent for itself: nobody waits for it.
    internal: bool = False
    #: Followed by a WAIT whose reply is read after the script's.
    waits: bool = False
    #: The channel it was written to (a cluster has one per master); None while a
    #: moving Redis Cluster slot holds it (hub/store/moving.py).
    via: ScriptChannel | None = None
    #: Its keys' Redis Cluster slot (-1 on one Redis).
    slot: int = -1
    #: When it gives up waiting for a moving slot (``time.monotonic()``; cluster only).
    deadline: float = 0.0
    reply: Any = _PENDING
    error: BaseException | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def settle(self, reply: Any = None, error: BaseException | None = None) -> None:
        self.reply, self.error = reply, error
        self.done.set()


class ScriptChannel:
    """One connection dedicated to calls of one Lua script.

    Args:
        connection: a connection of its own (not from a shared pool), unconnected.
        source: the script, loaded at each (re)connection and after ``NOSCRIPT``.
        sha: its SHA1, as ``SCRIPT LOAD`` answers.
        read_timeout: seconds to wait for a reply before giving up on the connection.
        wait: ``(replicas, timeout_ms)``: confirm each call's replication with WAIT.
    """

    def __init__(
        self,
        connection: AbstractConnection,
        source: str,
        sha: str,
        read_timeout: float,
        wait: tuple[int, int] | None = None,
    ) -> None:
        self._connection = connection
        self.wait = wait
        self._wait = connection.pack_command("WAIT", *wait) if wait else []
        self._load = connection.pack_command("SCRIPT", "LOAD", source)
        self.sha = sha
        self.read_timeout = read_timeout
        self._in_flight: deque[ScriptCall] = deque()
        # asyncio's, not anyio's: taking a free anyio lock yields to the event loop, and
        # every call would wait a turn of it (behind a whole fan-out dispatch, maybe).
        self._writing = asyncio.Lock()
        self._reading = asyncio.Lock()
        #: Given, in reply order and unsettled, each call a Redis Cluster node
        #: redirected (:data:`REDIRECTIONS`): it ran nowhere, and is for the taker to
        #: send again. None (one Redis): such a reply fails the call like any error.
        self.redirected: Callable[[ScriptCall, redis_errors.ResponseError], None] | None = None

    async def open(self) -> None:
        """Connect and load the script now, so that the first call pays no set-up.

        Raises:
            LogUnavailable: Redis does not answer.
        """
        async with self._writing:
            await self._write([])
        while self._in_flight:
            await self.reply(self._in_flight[-1])

    async def send(self, keys: list[str], args: list[Any]) -> ScriptCall:
        """Write one ``EVALSHA`` now; :meth:`reply` waits for its answer.

        Raises:
            LogUnavailable: the connection could not be made or written to.
        """
        packed = self._connection.pack_command("EVALSHA", self.sha, len(keys), *keys, *args)
        call = ScriptCall(packed + self._wait, waits=bool(self._wait), via=self)
        async with self._writing:
            await self._write([call])
        return call

    def prepare(self, keys: list[str], args: list[Any]) -> ScriptCall:
        """One ``EVALSHA`` packed but not written (:meth:`resend` writes it)."""
        packed = self._connection.pack_command("EVALSHA", self.sha, len(keys), *keys, *args)
        return ScriptCall(packed + self._wait, waits=bool(self._wait))

    async def resend(self, calls: list[ScriptCall]) -> None:
        """Write calls that were not answered (prepared, or redirected) now, in order;
        :meth:`reply` or :meth:`hear` then reads their replies. A write that fails
        settles them with the error."""
        for call in calls:
            call.via = self
        try:
            async with self._writing:
                await self._write(calls)
        except LogUnavailable as exc:
            for call in calls:
                call.settle(error=exc)

    async def hear(self, call: ScriptCall) -> None:
        """Read replies until ``call``'s is read, or it left this channel (redirected)."""
        while not call.done.is_set() and call.via is self:
            async with self._reading:
                if not call.done.is_set() and call.via is self:
                    await self._read_one()

    def newest(self) -> ScriptCall | None:
        """The call written last whose reply is not read yet."""
        return self._in_flight[-1] if self._in_flight else None

    async def reply(self, call: ScriptCall) -> list[bytes]:
        """The reply of a call :meth:`send` returned, reading those before it.

        Raises:
            LogUnavailable: the connection failed, or Redis refused the call.
        """
        while not call.done.is_set():
            async with self._reading:
                if not call.done.is_set():
                    await self._read_one()
        if call.error is not None:
            raise call.error
        return list(call.reply)

    async def aclose(self, reason: str = "the hub is shutting down") -> None:
        self._fail_all(LogUnavailable(reason))
        await self._connection.disconnect()

    # ------------------------------------------------------------------ internals

    async def _write(self, calls: list[ScriptCall]) -> None:
        """Write calls (the writing lock held). A connection that is new, or was closed
        while idle (Redis restarted, a timeout, ``CLIENT KILL``), is made again and
        loads the script first; a write that fails is tried once more on a new one
        (nothing of it ran: Redis drops a partial command with its connection)."""
        connection = self._connection
        if connection.is_connected and not self._in_flight:
            try:
                closed = await connection.can_read()
            except (redis_errors.ConnectionError, OSError):
                closed = True
            if closed:
                await connection.disconnect()
        for attempt in (1, 2):
            fresh = not connection.is_connected
            batch = [ScriptCall(self._load, True), *calls] if fresh else calls
            try:
                if fresh:
                    await self._connect()
                await connection.send_packed_command(
                    [part for call in batch for part in call.packed], check_health=False
                )
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
                error = _lost(exc)
                # Those in flight may or may not have run: their replies are lost.
                self._fail_all(error)
                await connection.disconnect()
                # A new connection that failed at once says Redis is down or stalled:
                # trying again now would only make the publishers wait twice as long.
                if attempt == 2 or fresh:
                    raise error from exc
                continue
            self._in_flight.extend(batch)
            return

    async def _connect(self) -> None:
        """Connect within ``min(CONNECT_TIMEOUT, read_timeout)``.

        A stalled Redis (SIGSTOP, a full listen backlog) answers no connection; left to
        itself, redis-py would wait its connect timeout for each of its retries, then
        read the ``CLIENT SETNAME`` reply with no timeout at all (this connection has no
        socket timeout), holding every publish queued behind this call meanwhile.
        """
        bound = min(CONNECT_TIMEOUT, self.read_timeout)
        try:
            async with asyncio.timeout(bound):
                await self._connection.connect()  # type: ignore[no-untyped-call]  # unannotated
        except TimeoutError:
            await self._connection.disconnect(nowait=True)
            raise redis_errors.TimeoutError(f"no connection within {bound:g} s") from None

    async def _read_one(self) -> None:
        """Read the oldest reply (the reading lock held) and settle its call."""
        call = self._in_flight[0]
        try:
            reply = await self._connection.read_response(timeout=self.read_timeout)
        except redis_errors.NoScriptError:
            await self._recover_from_noscript()
            return
        except REDIRECTIONS as exc:
            if self.redirected is None:
                reply = LogUnavailable(f"Redis refused the reduce script: {exc}")
            else:
                await self._redirect(call, exc)
                return
        except redis_errors.ResponseError as exc:
            reply = LogUnavailable(f"Redis refused the reduce script: {exc}")
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
            if self._in_flight and self._in_flight[0] is call:
                self._fail_all(_lost(exc))
            return
        if reply is None:  # read_response's way of saying the timeout passed
            if self._in_flight and self._in_flight[0] is call:
                await self._connection.disconnect(nowait=True)
                self._fail_all(self._silent())
            return
        error = await self._read_wait(call)
        if error is _LOST:
            return
        if isinstance(reply, LogUnavailable):
            self._settle_oldest(call, error=reply)
        elif isinstance(error, LogUnavailable):
            self._settle_oldest(call, error=error)
        else:
            self._settle_oldest(call, reply)

    async def _redirect(self, call: ScriptCall, exc: redis_errors.ResponseError) -> None:
        """Hand the oldest call, redirected, to :attr:`redirected` (after its WAIT's
        reply, if any: that is read whatever the script's)."""
        if await self._read_wait(call) is _LOST:
            return
        if self._in_flight and self._in_flight[0] is call and self.redirected is not None:
            self._in_flight.popleft()
            self.redirected(call, exc)  # (it reads ``via``: the channel that refused)
            call.via = None

    async def _read_wait(self, call: ScriptCall) -> object:
        """Read the reply of the WAIT after ``call``, if it has one: None when the
        replicas confirmed it (or no WAIT), a :class:`LogUnavailable` when they did
        not in time, or ``_LOST`` when the connection failed (all calls failed)."""
        if not call.waits:
            return None
        assert self.wait is not None
        try:
            acked = await self._connection.read_response(timeout=self.read_timeout)
        except redis_errors.ResponseError as exc:
            return LogUnavailable(f"Redis refused WAIT: {exc}")
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
            self._fail_all(_lost(exc))
            return _LOST
        if acked is None:
            await self._connection.disconnect(nowait=True)
            self._fail_all(self._silent())
            return _LOST
        replicas, timeout_ms = self.wait
        if int(acked) < replicas:
            return LogUnavailable(
                f"applied, but only {int(acked)} of the {replicas} replicas asked for "
                f"(FLUX_REDIS_WAIT_REPLICAS) confirmed it within {timeout_ms} ms: not "
                f"acknowledged; retrying with the same eventId is safe"
            )
        return None

    def _settle_oldest(
        self, call: ScriptCall, reply: Any = None, error: BaseException | None = None
    ) -> None:
        # A writer whose write failed settles everything in flight and may have sent
        # new calls on a new connection while this read was pending: then ``call`` is
        # no longer the oldest, and what was read belongs to the old connection.
        if self._in_flight and self._in_flight[0] is call:
            self._in_flight.popleft()
            call.settle(reply, error)

    async def _recover_from_noscript(self) -> None:
        """The oldest call got NOSCRIPT: send it, and every later call that gets it
        too, again in order, before anything new is written."""
        async with self._writing:
            first = self._in_flight.popleft()
            retry = [first]
            if await self._read_wait(first) is _LOST:
                first.settle(error=self._silent())
                return
            overtaken = False
            while self._in_flight:
                call = self._in_flight[0]
                try:
                    reply = await self._connection.read_response(timeout=self.read_timeout)
                except redis_errors.NoScriptError:
                    if await self._read_wait(call) is _LOST:
                        self._fail_all(self._silent(), also=retry)
                        return
                    retry.append(self._in_flight.popleft())
                    continue
                except redis_errors.ResponseError as exc:
                    reply = LogUnavailable(f"Redis refused the reduce script: {exc}")
                except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
                    self._fail_all(_lost(exc), also=retry)
                    return
                if reply is None:
                    await self._connection.disconnect(nowait=True)
                    self._fail_all(self._silent(), also=retry)
                    return
                error = await self._read_wait(call)
                if error is _LOST:
                    self._fail_all(self._silent(), also=[call, *retry])
                    return
                self._in_flight.popleft()
                if isinstance(reply, LogUnavailable):
                    call.settle(error=reply)
                    continue
                if isinstance(error, LogUnavailable):
                    call.settle(error=error)
                    continue
                overtaken = overtaken or not call.internal
                call.settle(reply)
            if overtaken:
                logger.error(
                    "the reduce script was flushed and loaded again by another client "
                    "while calls were in flight: some events may have been applied out "
                    "of their submission order"
                )
            logger.warning("the reduce script was missing (SCRIPT FLUSH?): loaded it again")
            waiting = [call for call in retry if not call.internal]
            try:
                await self._write([ScriptCall(self._load, internal=True), *waiting])
            except LogUnavailable as exc:
                for call in waiting:
                    call.settle(error=exc)

    def _silent(self) -> LogUnavailable:
        return LogUnavailable(f"Redis did not answer in {self.read_timeout:g} s")

    def _fail_all(self, error: LogUnavailable, also: Iterable[ScriptCall] = ()) -> None:
        """Settle every call in flight (and ``also``) with ``error``."""
        while self._in_flight:
            self._in_flight.popleft().settle(error=error)
        for call in also:
            call.settle(error=error)


def _lost(exc: BaseException) -> LogUnavailable:
    return LogUnavailable(f"Redis failed while applying events: {exc}")
