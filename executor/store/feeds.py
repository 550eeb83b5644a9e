"""An `EventFeed` for stores that cannot be notified: it reads the event log every so often."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio

from executor.records import Event

__all__ = ["PolledFeed", "polled_feed"]


class PolledFeed:
    """A plan's stored events, read every `poll_s` (see `executor.store.base.EventFeed`)."""

    def __init__(
        self, read: Callable[[int], Awaitable[list[Event]]], after_seq: int, poll_s: float
    ) -> None:
        """Follow the events `read(after_seq)` returns, from `after_seq` on."""
        self._read = read
        self._after = after_seq
        self._poll_s = poll_s

    async def next(self, *, timeout_s: float) -> list[Event]:
        """The events stored since the last call, waiting up to `timeout_s` for one."""
        deadline = anyio.current_time() + timeout_s
        while True:
            events = await self._read(self._after)
            if events:
                self._after = events[-1].seq
                return events
            left = deadline - anyio.current_time()
            if left <= 0:
                return []
            await anyio.sleep(min(self._poll_s, left))


@asynccontextmanager
async def polled_feed(
    read: Callable[[int], Awaitable[list[Event]]], after_seq: int, poll_s: float
) -> AsyncIterator[PolledFeed]:
    """A `PolledFeed` for the length of the block."""
    yield PolledFeed(read, after_seq, poll_s)
