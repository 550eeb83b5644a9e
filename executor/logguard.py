"""Keeping logs bounded and clean when what is logged comes from outside.

`LineBudget` is a token bucket over lines: a server's log file takes at most
`burst` lines at once, then `per_s` a second (see
`executor.downstream.transports.stderr.StderrLog`).
`LogGuard` is a `logging.Filter` for taskorch's own log handler: it scrubs
secrets from every record and stops any one logging call from flooding the log,
counting what it drops and saying how many it dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from executor.downstream.redact import Scrubber

__all__ = ["LineBudget", "LogGuard"]

logger = logging.getLogger(__name__)

_MAX_SITES = 1024
"""Call sites tracked at once by a `LogGuard`; the least recent is forgotten past it."""


class LineBudget:
    """A token bucket: at most `burst` lines at once, refilled at `per_s` lines a second."""

    __slots__ = ("_burst", "_clock", "_last", "_tokens", "per_s")

    def __init__(
        self, burst: float, per_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Start full.

        Raises:
            ValueError: `burst` is below 1 or `per_s` is not positive.
        """
        if not burst >= 1 or not per_s > 0:
            raise ValueError(f"a line budget needs burst >= 1 and per_s > 0, got {burst}, {per_s}")
        self._burst = float(burst)
        self.per_s = float(per_s)
        """Lines let through per second once the burst is spent."""
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def take(self, lines: int) -> int:
        """How many of `lines` may pass now (the first ones); the budget is spent by as many."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self.per_s)
        self._last = now
        allowed = min(lines, int(self._tokens))
        self._tokens -= allowed
        return allowed


class LogGuard(logging.Filter):
    """Scrubs secrets from every record and rate-limits each logging call site.

    Attach it to a handler (`handler.addFilter(guard)`): a filter on a handler
    sees the records of every logger, the libraries' included. A call site (the
    file and line that logs) may log `burst` records at once, then `per_s` a
    second; the records beyond are dropped and counted. The count is told in
    the next record let through from that site, in a summary logged at most
    every `report_every_s` while records are being dropped, and by `report()`
    (the CLI calls it at exit).
    """

    def __init__(
        self,
        scrubber: Scrubber | None = None,
        *,
        burst: float = 20,
        per_s: float = 2.0,
        report_every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Scrub with `scrubber` (nothing when `None`) and allow `burst`, then `per_s`, per site."""
        super().__init__()
        self._scrub = scrubber or Scrubber()
        self._burst = burst
        self._per_s = per_s
        self._report_every_s = report_every_s
        self._clock = clock
        self._sites: OrderedDict[tuple[str, int], tuple[LineBudget, int]] = OrderedDict()
        self._reported_at = clock()
        self._reporting = False
        self._lock = threading.Lock()  # handlers call filters outside their own lock
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        """Let `record` through, scrubbed, unless its call site is over its budget."""
        if self._reporting:
            return True  # our own summary
        with self._lock:
            dropped = self._admit((record.pathname, record.lineno))
            summary = self._summary() if dropped is None and self._due() else None
        if summary is not None:
            self._log_summary(summary)
        if dropped is None:
            return False
        message = record.getMessage()
        if dropped:
            message += f" [{dropped} more like this were dropped: the log was flooded]"
        record.msg, record.args = self._scrub.text(message), None
        if self._scrub:
            if record.exc_info and not record.exc_text:
                record.exc_text = self._formatter.formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = self._scrub.text(record.exc_text)
            if record.stack_info:
                record.stack_info = self._scrub.text(record.stack_info)
        return True

    def report(self) -> None:
        """Log how many records were dropped since the last report, if any were."""
        with self._lock:
            summary = self._summary()
        if summary is not None:
            self._log_summary(summary)

    def _admit(self, site: tuple[str, int]) -> int | None:
        """Records dropped from `site` before this one, or `None` when this one is dropped."""
        budget, dropped = self._sites.pop(site, (None, 0))
        if budget is None:
            budget = LineBudget(self._burst, self._per_s, clock=self._clock)
        admitted = budget.take(1) > 0
        self._sites[site] = (budget, 0 if admitted else dropped + 1)
        if len(self._sites) > _MAX_SITES:
            self._sites.popitem(last=False)
        return dropped if admitted else None

    def _due(self) -> bool:
        return self._clock() - self._reported_at >= self._report_every_s

    def _summary(self) -> str | None:
        self._reported_at = self._clock()
        counts = [(n, site) for site, (_, n) in self._sites.items() if n]
        if not counts:
            return None
        for _, site in counts:
            self._sites[site] = (self._sites[site][0], 0)
        counts.sort(reverse=True)
        where = ", ".join(f"{n} from {path}:{line}" for n, (path, line) in counts[:5])
        more = f" and {len(counts) - 5} more call sites" if len(counts) > 5 else ""
        total = sum(n for n, _ in counts)
        return (
            f"the log was flooded: dropped {total} record{'' if total == 1 else 's'} "
            f"(over {self._burst:g} at once, "
            f"then {self._per_s:g} a second, from any one call site): {where}{more}"
        )

    def _log_summary(self, summary: str) -> None:
        self._reporting = True
        try:
            logger.warning("%s", summary)
        finally:
            self._reporting = False
