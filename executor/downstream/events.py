"""A pool's server events: each session opened, lost or never opened, handed over in order.

The pool's supervisors report them the moment they notice; one task hands them
to `on_server_event` (the orchestrator points it at the store, for the
servers' restarts and time down in `get_stats`).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable
from typing import Protocol

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from executor.downstream.redact import Scrubber
from executor.records import ServerEvent, ServerEventKind

__all__ = ["ServerEventFn", "ServerEvents"]

logger = logging.getLogger(__name__)

_EVENT_WRITE_S = 5.0
"""Longest wait for `on_server_event` to take one event (a slow database, say)."""
_EVENT_REASON_CHARS = 300


class ServerEventFn(Protocol):
    """Receives each change in a server's availability (see `Pool`'s `on_server_event`)."""

    async def __call__(self, event: ServerEvent) -> None:
        """Take one event; an exception is logged and otherwise ignored."""


class ServerEvents:
    """The events of one pool's servers, queued in order and handed to a sink by one task.

    A server already down is not reported down again (failed restarts in a row
    are one stretch of down time), and nothing is reported down once the pool
    closes (that is not the server's doing).
    """

    def __init__(self, servers: Iterable[str], sink: ServerEventFn | None, scrub: Scrubber) -> None:
        """Report the events of `servers` (configured names) to `sink`, if any."""
        self.owner = uuid.uuid4().hex[:16]
        """This pool's id in the events it reports."""
        self._sink = sink
        self._scrub = scrub
        self._down = dict.fromkeys(servers, False)
        """Each server, in configuration order: reported down and not up since."""
        self._closing = False
        self._queue: MemoryObjectSendStream[ServerEvent] | None = None

    def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Start handing events over, in the pool's task group."""
        if self._sink is not None:
            send, receive = anyio.create_memory_object_stream[ServerEvent](math.inf)
            self._queue = send
            tg.start_soon(self._hand_over, receive, self._sink)

    def close(self) -> None:
        """The pool closes: each server still down is reported closed, then the queue ends."""
        self._closing = True
        for server, down in self._down.items():
            if down:
                self.report(server, ServerEventKind.CLOSED)
        if self._queue is not None:
            self._queue.close()  # the hand-over task ends once it has sent the rest

    def report(
        self,
        server: str,
        kind: ServerEventKind,
        *,
        restart: bool = False,
        reason: str | None = None,
    ) -> None:
        """Queue a change in `server`'s availability, at once, in order."""
        if kind is ServerEventKind.DOWN:
            if self._down[server] or self._closing:
                return
            self._down[server] = True
        else:
            self._down[server] = False
        queue = self._queue
        if queue is None:
            return
        if reason is not None:
            # One line, bounded, scrubbed: the reason only, never the server's stderr.
            reason = " ".join(self._scrub.text(reason).split())[:_EVENT_REASON_CHARS]
        event = ServerEvent(
            owner=self.owner, server=server, kind=kind, restart=restart, reason=reason
        )
        try:
            queue.send_nowait(event)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            logger.debug("server event after the pool closed: %s %s", server, kind.value)

    async def _hand_over(
        self, receive: MemoryObjectReceiveStream[ServerEvent], sink: ServerEventFn
    ) -> None:
        """Hand queued events to `sink` in order until the pool closes, then the rest."""
        # Shielded: the pool's own closing ends this task (it closes the queue), so
        # that what it saw last (a server down, `closed`) is still handed over.
        with anyio.CancelScope(shield=True), receive:
            async for event in receive:
                with anyio.move_on_after(_EVENT_WRITE_S) as scope:
                    try:
                        await sink(event)
                    except Exception as exc:
                        logger.warning(
                            "could not record that downstream server %r is %s: %s",
                            event.server,
                            event.kind.value,
                            exc,
                        )
                if scope.cancelled_caught:
                    logger.warning(
                        "recording that downstream server %r is %s took over %g s; gave up",
                        event.server,
                        event.kind.value,
                        _EVENT_WRITE_S,
                    )
