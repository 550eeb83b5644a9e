"""Live events of a run: a `Subscription` per follower, and the run's fan-out to them.

A slow subscriber never slows the run: past its buffer, further events are
dropped and counted (`Subscription.dropped`); the store's event log has them
all, except `step_progress`, which is live only.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from types import TracebackType

import anyio

from executor.records import Event

__all__ = ["Subscribers", "Subscription"]


class Subscription:
    """Live events of one plan's run, as an async iterator.

    Iteration ends after the run ends (its `plan_finished` event is the last)
    or when the subscription is closed. Use it as a context manager, or call
    `close()`, to stop receiving early.

    Attributes:
        plan_id: The plan followed.
        dropped: Events not delivered because the buffer was full.
    """

    def __init__(self, plan_id: str, limit: int) -> None:
        self.plan_id = plan_id
        self.dropped = 0
        self._limit = limit
        self._items: deque[Event] = deque()
        self._closed = False
        self._wakeup: anyio.Event | None = None

    @classmethod
    def ended(cls, plan_id: str) -> Subscription:
        """A subscription to a run that is not going on: iterating it yields nothing."""
        sub = cls(plan_id, 1)
        sub.close()
        return sub

    @property
    def closed(self) -> bool:
        """Whether no further events will arrive."""
        return self._closed

    def _push(self, event: Event) -> None:
        if self._closed:
            return
        if len(self._items) >= self._limit:
            self.dropped += 1
            return
        self._items.append(event)
        if self._wakeup is not None:
            self._wakeup.set()

    def close(self) -> None:
        """Stop the subscription; events already received can still be read."""
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while not self._items:
            if self._closed:
                raise StopAsyncIteration
            # A fresh event per wait: set() from _push wakes exactly this waiter.
            self._wakeup = anyio.Event()
            await self._wakeup.wait()
        return self._items.popleft()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Subscribers:
    """The subscriptions of one run: each event goes to every one still open."""

    def __init__(self, plan_id: str, limit: int) -> None:
        self._plan_id = plan_id
        self._limit = limit
        self._subs: list[Subscription] = []

    def __bool__(self) -> bool:
        """Whether anyone follows the run."""
        return bool(self._subs)

    def add(self) -> Subscription:
        """A new subscription, receiving every event published from now on."""
        sub = Subscription(self._plan_id, self._limit)
        self._subs.append(sub)
        return sub

    def publish(self, events: Iterable[Event]) -> None:
        """Hand `events`, in order, to every open subscription."""
        if not self._subs:
            return
        self._subs = [s for s in self._subs if not s.closed]
        for ev in events:
            for sub in self._subs:
                sub._push(ev)

    def close(self) -> None:
        """End every subscription: the run is over."""
        for sub in self._subs:
            sub.close()
        self._subs.clear()
