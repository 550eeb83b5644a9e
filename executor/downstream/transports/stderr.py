"""`StderrLog`: where a stdio server's stderr goes, bounded and scrubbed of secrets."""

from __future__ import annotations

import codecs
import contextlib
import logging
import math
import os
import time
from collections import deque
from pathlib import Path

from executor.downstream.redact import Scrubber
from executor.logguard import LineBudget

__all__ = ["DEFAULT_LOG_BURST", "DEFAULT_LOG_LINES_PER_S", "DEFAULT_LOG_MAX_BYTES", "StderrLog"]

logger = logging.getLogger(__name__)

DEFAULT_LOG_MAX_BYTES = 5 * 1024 * 1024
"""Size at which a server's log file is rotated (it keeps one previous file)."""
DEFAULT_LOG_LINES_PER_S = 200.0
"""Lines a second a server's log file takes once its burst is spent."""
DEFAULT_LOG_BURST = 2000
"""Lines a server's log file takes at once."""
_LOG_MIN_BYTES = 64 * 1024
_LOG_LINE_CHARS = 4096
_TAIL_LINE_CHARS = 1000
_FLOOD_WARNING_EVERY_S = 60.0
_DROP_REPORT_EVERY_S = 1.0


class StderrLog:
    """Where a stdio server's stderr goes: a ring of its last lines and a log file.

    The ring outlives restarts, so a server that keeps failing can be reported
    with its last words. Both hold text only after the `scrubber` has replaced
    the configured secrets in it, and both are bounded whatever the server
    writes:

    - lines are cut (at 4096 characters in the file, 1000 in the ring);
    - the file takes at most `burst` lines at once, then `lines_per_s` a second;
      lines beyond are dropped and counted, and the file says how many were
      (a `--- taskorch: dropped N lines ... ---` line) when it takes lines again
      (once a second at most), when the server exits, and when the log is
      closed; taskorch's own log warns once a minute at most while a server floods;
    - the file is rotated while it is written: past `max_bytes` it becomes
      `<name>.log.1` (replacing the previous one) and a new file starts, so a
      server's logs never take more than twice `max_bytes`.

    Writes are synchronous: a local append is cheaper than a thread hop, and the
    budget keeps them few.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        max_lines: int = 40,
        max_bytes: int = DEFAULT_LOG_MAX_BYTES,
        lines_per_s: float = DEFAULT_LOG_LINES_PER_S,
        burst: int = DEFAULT_LOG_BURST,
        scrubber: Scrubber | None = None,
    ) -> None:
        """Create the log.

        Args:
            path: The log file (appended to; created with mode 0600), or `None`.
            max_lines: How many recent lines the ring keeps.
            max_bytes: Size at which the file is rotated (at least 64 KiB).
            lines_per_s: Lines a second the file takes once `burst` is spent.
            burst: Lines the file takes at once.
            scrubber: Replaces secrets in every line before it is kept.

        Raises:
            ValueError: A limit is out of range.
        """
        if max_bytes < _LOG_MIN_BYTES:
            raise ValueError(f"max_bytes must be at least {_LOG_MIN_BYTES}, got {max_bytes}")
        self.path = path
        self.dropped_lines = 0
        """Lines not written to the file because the server wrote too fast, in all."""
        self._lines: deque[str] = deque(maxlen=max_lines)
        self._max_bytes = max_bytes
        self._budget = LineBudget(burst, lines_per_s)
        self._scrub = scrubber or Scrubber()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._cutting = False
        """Inside an overlong line that was cut: skip up to its end."""
        self._dropped = {"stderr": 0, "stray stdout": 0}
        """Lines dropped since the file last said so, by source."""
        self._warned_at = -math.inf
        self._reported_at = -math.inf
        self._fd: int | None = None

    # ----------------------------------------------------------------- input

    def note(self, text: str) -> None:
        """Write one line of our own (a start or exit marker) to the file only."""
        self._write([*self._drop_report(force=True), f"--- taskorch: {text} ---"])

    def feed(self, data: bytes) -> None:
        """Take a chunk of the server's stderr."""
        text = self._decoder.decode(data)
        if self._cutting:
            end = text.find("\n")
            if end < 0:
                return
            text = text[end + 1 :]
            self._cutting = False
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        # Past this length no secret can straddle the cut: scrub it, then cut it.
        if len(self._partial) > _LOG_LINE_CHARS + self._scrub.longest:
            lines.append(self._partial)
            self._partial = ""
            self._cutting = True
        if lines:
            self._take(lines, "stderr")

    def add_line(self, line: str) -> None:
        """Add a line that did not come from stderr (stray stdout output) to both sinks."""
        self._take([line], "stray stdout")

    def flush(self) -> None:
        """Keep an unterminated last line (the stream ended without a newline)."""
        last = self._partial + self._decoder.decode(b"", final=True)
        self._partial = ""
        self._cutting = False
        if last:
            self._take([last], "stderr")

    def tail(self, lines: int | None = None) -> tuple[str, ...]:
        """The last lines, oldest first."""
        kept = tuple(self._lines)
        return kept if lines is None else kept[-lines:]

    def close(self) -> None:
        """Close the file, saying first how many lines were dropped; the ring stays readable."""
        self.flush()
        self._write(self._drop_report(force=True))
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _take(self, lines: list[str], source: str) -> None:
        ring = self._lines.maxlen or 0
        for line in lines[-ring:] if ring else ():
            line = line.rstrip("\r")
            if line.strip():
                self._lines.append(self._scrub.text(line)[:_TAIL_LINE_CHARS])
        if self.path is None:
            return
        allowed = self._budget.take(len(lines))
        if allowed:
            # The count of lines dropped before these, then these.
            kept = [_cut(self._scrub.text(line.rstrip("\r"))) for line in lines[:allowed]]
            self._write([*self._drop_report(), *kept])
        if allowed < len(lines):
            self._dropped[source] += len(lines) - allowed
            self.dropped_lines += len(lines) - allowed
            self._warn_flood()

    def _drop_report(self, *, force: bool = False) -> list[str]:
        """The line saying how many lines were dropped since the last one (once a second)."""
        total = sum(self._dropped.values())
        now = time.monotonic()
        if not total or (not force and now - self._reported_at < _DROP_REPORT_EVERY_S):
            return []
        self._reported_at = now
        counts = ", ".join(f"{source} {n}" for source, n in self._dropped.items())
        self._dropped = dict.fromkeys(self._dropped, 0)
        return [
            f"--- taskorch: dropped {total} line{'' if total == 1 else 's'} over the limit of "
            f"{self._budget.per_s:g} lines/s ({counts}) ---"
        ]

    def _warn_flood(self) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _FLOOD_WARNING_EVERY_S:
            self._warned_at = now
            logger.warning(
                "server log %s: the server writes more than %g lines/s; dropping lines "
                "(%d so far; the log says how many)",
                self.path,
                self._budget.per_s,
                self.dropped_lines,
            )

    # ----------------------------------------------------------------- file

    def _file(self) -> int | None:
        if self.path is None:
            return None
        if self._fd is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            except OSError as exc:
                logger.warning(
                    "cannot open the server log %s (%s); stderr goes to memory only", self.path, exc
                )
                self.path = None
                return None
        return self._fd

    def _write(self, lines: list[str]) -> None:
        """Append `lines`, in pieces small beside the cap, rotating when one would pass it."""
        piece = bytearray()
        for line in lines:
            data = (line + "\n").encode("utf-8", errors="replace")
            if piece and len(piece) + len(data) > self._max_bytes // 4:
                self._append(bytes(piece))
                piece.clear()
            piece += data
        if piece:
            self._append(bytes(piece))

    def _append(self, data: bytes) -> None:
        try:
            fd = self._file()
            if fd is None:
                return
            size = self._size(fd)
            if size and size + len(data) > self._max_bytes:
                assert self.path is not None
                os.close(fd)
                self._fd = None
                self.path.replace(self.path.with_name(self.path.name + ".1"))
            fd = self._file()
            if fd is not None:
                os.write(fd, data)
        except OSError as exc:
            logger.debug("cannot write the server log %s: %s", self.path, exc)

    def _size(self, fd: int) -> int:
        """The size of the file at `path`, following it if another process rotated it."""
        assert self.path is not None
        ours = os.fstat(fd)
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            named = None
        if named is None or (named.st_ino, named.st_dev) != (ours.st_ino, ours.st_dev):
            # Another taskorch sharing the log directory rotated it (or it was removed).
            os.close(fd)
            self._fd = None
            fd_again = self._file()
            return os.fstat(fd_again).st_size if fd_again is not None else 0
        return ours.st_size


def _cut(line: str) -> str:
    if len(line) <= _LOG_LINE_CHARS:
        return line
    return f"{line[:_LOG_LINE_CHARS]} [... line cut at {_LOG_LINE_CHARS} characters]"
