"""PostgreSQL notifications for one store: one LISTEN connection, fanned out to watches.

A `Watch` is registered before its owner reads the database, so a
notification sent after that read is never missed. Whoever waits reads the
connection for everyone (one reader at a time) and hands each notification to
every watch it matches. When the connection is lost, every watch is woken
(what was sent meanwhile is lost, so its owner must look again) and the next
wait connects anew. Notifications are hints: a watch's owner always reads the
database after a wake, and looks again on a timeout anyway.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing, asynccontextmanager, suppress
from typing import Any, Final

import anyio
import psycopg
from pydantic import ValidationError

from executor.records import Event
from executor.store import codecs

__all__ = ["Listener", "Watch", "live_events", "live_payloads"]

logger = logging.getLogger(__name__)

_RECONNECT_S: Final = 1.0
"""How long a wait pauses after the LISTEN connection could not be made."""
_KEPT: Final = 1000
"""Payloads a watch keeps unread; older ones are dropped (they are hints)."""

_NOTIFY_BYTES: Final = 7900
"""Most bytes of one notification's payload (PostgreSQL allows 8000)."""

Match = Callable[[dict[str, Any]], bool]


class Watch:
    """Notifications of one channel that match, for one waiter (see the module docs)."""

    def __init__(self, listener: Listener, channel: str, match: Match) -> None:
        self.channel = channel
        self.match = match
        self.payloads: deque[dict[str, Any]] = deque(maxlen=_KEPT)
        """Payloads received and not yet taken (`take`)."""
        self._listener = listener
        self._woken = anyio.Event()

    def _wake(self, payload: dict[str, Any] | None) -> None:
        if payload is not None:
            self.payloads.append(payload)
        self._woken.set()

    def take(self) -> list[dict[str, Any]]:
        """The payloads received since the last call."""
        taken = list(self.payloads)
        self.payloads.clear()
        return taken

    async def wait(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for a match (or a lost connection); whether one came."""
        if not self._woken.is_set():
            with anyio.move_on_after(timeout_s):
                async with anyio.create_task_group() as tg:

                    async def woken() -> None:
                        await self._woken.wait()
                        tg.cancel_scope.cancel()

                    async def read() -> None:
                        await self._listener.read_until(self)
                        tg.cancel_scope.cancel()

                    tg.start_soon(woken)
                    tg.start_soon(read)
        came = self._woken.is_set()
        if came:
            self._woken = anyio.Event()
        return came

    def woken(self) -> bool:
        """Whether a match (or a lost connection) came since the last `wait`."""
        return self._woken.is_set()


class Listener:
    """The store's LISTEN connection and the watches it serves."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection[Any]]],
        channels: Sequence[str],
        failure: Callable[[psycopg.Error | OSError], Exception],
    ) -> None:
        """Connect on first use.

        Args:
            connect: Opens a new autocommit connection.
            channels: Every channel to LISTEN on.
            failure: What a failure of the connection becomes, as logged: it must not
                say the database's password.
        """
        self._connect = connect
        self._failure = failure
        self._channels = tuple(channels)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._watches: set[Watch] = set()
        self._reading = anyio.Lock()
        self._connecting = anyio.Lock()
        self._closed = anyio.Event()

    @property
    def connected(self) -> bool:
        """Whether the LISTEN connection is up (notifications arrive as sent)."""
        return self._conn is not None and not self._conn.closed

    @asynccontextmanager
    async def watch(self, channel: str, match: Match) -> AsyncIterator[Watch]:
        """Receive the notifications of `channel` that `match` accepts while the block runs."""
        if channel not in self._channels:
            raise ValueError(f"not listening on {channel!r}")
        watch = Watch(self, channel, match)
        self._watches.add(watch)
        try:
            # Listening before the owner reads the database: nothing sent after is missed.
            await self._connection()
            yield watch
        finally:
            self._watches.discard(watch)

    async def read_until(self, watch: Watch) -> None:
        """Read notifications for every watch until `watch` is woken (one reader at a time)."""
        async with self._reading:
            if watch.woken():
                return
            conn = await self._connection()
            if conn is None:
                # No notifications for now: the waiters look again on their own.
                await anyio.sleep(_RECONNECT_S)
                return
            try:
                while not watch.woken():
                    # One packet's notifications at a time, all of them: leaving the
                    # generator mid-packet would drop the rest. Closed on leaving, not
                    # when collected: it holds the connection's lock until closed.
                    async with aclosing(conn.notifies(stop_after=1)) as notes:
                        async for note in notes:
                            self._dispatch(note.channel, note.payload)
            except psycopg.Error as error:
                logger.warning(
                    "lost the database's notification connection (%s)", self._failure(error)
                )
                await self._drop(conn)

    async def _connection(self) -> psycopg.AsyncConnection[Any] | None:
        """The LISTEN connection, made (one at a time) when there is none.

        `None` when it cannot be made now: waits then read the database more often.
        """
        async with self._connecting:
            if self._closed.is_set():
                return None
            if self._conn is not None and not self._conn.closed:
                return self._conn
            try:
                conn = await self._connect()
                for channel in self._channels:
                    await conn.execute(f'LISTEN "{channel}"'.encode())  # names of our making
            except (psycopg.Error, OSError) as error:
                logger.warning(
                    "cannot listen for the database's notifications (%s)", self._failure(error)
                )
                return None
            if self._closed.is_set():
                # Closed while connecting: `close` could not see this connection.
                await self._close(conn)
                return None
            self._conn = conn
        # Whatever was sent before this connection listened is lost: look again.
        self._wake_all()
        return conn

    async def _drop(self, conn: psycopg.AsyncConnection[Any] | None) -> None:
        """Close `conn` (the one that failed), and forget it if it is still the current one."""
        if conn is self._conn:
            self._conn = None
        if conn is not None:
            await self._close(conn)
        self._wake_all()

    @staticmethod
    async def _close(conn: psycopg.AsyncConnection[Any]) -> None:
        with anyio.CancelScope(shield=True), suppress(psycopg.Error):
            await conn.close()

    def _wake_all(self) -> None:
        for watch in list(self._watches):
            watch._wake(None)

    def _dispatch(self, channel: str, payload: str) -> None:
        try:
            data = json.loads(payload)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        for watch in list(self._watches):
            if watch.channel == channel and watch.match(data):
                watch._wake(data)

    async def close(self) -> None:
        """Stop listening; waits in progress end as if the connection were lost."""
        self._closed.set()
        await self._drop(self._conn)


def live_payloads(events: Sequence[Event]) -> list[str]:
    """Notification payloads carrying `events`, each within PostgreSQL's size limit."""
    payloads: list[str] = []
    by_plan: dict[str, list[str]] = {}
    for event in events:
        encoded = codecs.dumps(event.model_dump(mode="json"))
        if len(encoded.encode()) > _NOTIFY_BYTES - 100:
            # A long progress message is cut; the counts are what a follower needs.
            data = {k: v for k, v in event.data.items() if k != "message"}
            encoded = codecs.dumps(event.model_copy(update={"data": data}).model_dump(mode="json"))
            if len(encoded.encode()) > _NOTIFY_BYTES - 100:
                continue
        by_plan.setdefault(event.plan_id, []).append(encoded)
    for plan_id, encoded_events in by_plan.items():
        head = codecs.dumps({"p": plan_id})[:-1] + ',"e":['
        chunk: list[str] = []
        size = len(head.encode())
        for encoded in encoded_events:
            if chunk and size + len(encoded.encode()) + 2 > _NOTIFY_BYTES:
                payloads.append(head + ",".join(chunk) + "]}")
                chunk, size = [], len(head.encode())
            chunk.append(encoded)
            size += len(encoded.encode()) + 1
        if chunk:
            payloads.append(head + ",".join(chunk) + "]}")
    return payloads


def live_events(payloads: list[dict[str, Any]]) -> list[Event]:
    """The live events notifications carried (a stored event's notice carries none)."""
    found: list[Event] = []
    for payload in payloads:
        for item in payload.get("e") or ():
            with suppress(ValidationError):
                found.append(Event.model_validate(item))
    return found
