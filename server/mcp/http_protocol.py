"""uvicorn's h11 protocol, made to hold under slowloris: a request deadline and a connection cap.

uvicorn bounds the pause between requests but not the time a client takes to
send one, so a connection trickling a byte a second is held for good. Here a
request's headers and body must arrive within `request_timeout_s` of its first
byte (a deadline, not an idle timeout; responses are not limited), and past
`max_connections` each new connection closes the oldest one not being
answered; when all are being answered, uvicorn's `limit_concurrency` answers 503.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from server.config import HttpLimits

__all__ = ["GuardedH11Protocol", "protocol_for"]


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request deadline and a connection cap (see the module).

    Use `protocol_for()`: the limits, and the connections they count, belong to one server.
    """

    limits: ClassVar[HttpLimits] = HttpLimits()
    """The limits enforced."""
    idle: ClassVar[OrderedDict[GuardedH11Protocol, None]] = OrderedDict()
    """Connections not being answered, oldest first: the ones to close past the cap."""
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the request deadline; past the cap, close the oldest idle connection."""
        super().connection_made(transport)
        self._arm()
        self._settle()
        # One out per one in: a closed connection counts until it is gone.
        if len(self.connections) > self.limits.max_connections:
            oldest = next((c for c in self.idle if c is not self), None)
            if oldest is not None:
                oldest._close("over max_connections")
            # else every other one is being answered: uvicorn answers this one 503

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection."""
        self._disarm()
        self.idle.pop(self, None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Start the deadline at a request's first byte; stop it once the request is in."""
        if self._deadline is None:
            self._arm()  # the first byte of a request after a keep-alive pause
        super().data_received(data)
        self._settle()

    def on_response_complete(self) -> None:
        """The connection is idle again (or already reading a pipelined request)."""
        super().on_response_complete()
        self._settle()

    def _settle(self) -> None:
        """Note whether the connection is being answered, after anything that may change it."""
        if self.transport.is_closing():
            self._disarm()
            self.idle.pop(self, None)
        elif self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            self.idle[self] = None  # still sending its request, or idle: may be closed
            if self.conn.their_state is h11.SEND_BODY and self._deadline is None:
                self._arm()
        else:
            self._disarm()  # the whole request arrived: the deadline is met
            self.idle.pop(self, None)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(
            self.limits.request_timeout_s, self._close, "request_timeout_s passed"
        )

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _close(self, reason: str) -> None:
        self._disarm()
        self.idle.pop(self, None)
        if not self.transport.is_closing():
            self.logger.debug("closing a connection from %s: %s", self.client, reason)
            self.transport.close()


def protocol_for(limits: HttpLimits) -> type[GuardedH11Protocol]:
    """A protocol class for one server: its own limits and its own count of connections."""

    class Limited(GuardedH11Protocol):
        pass

    Limited.limits = limits
    Limited.idle = OrderedDict()
    return Limited
