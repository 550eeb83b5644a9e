"""`Scrubber`: configured secrets taken out of what servers send, where it enters taskorch.

A server may print or echo the secrets it was given (its `env` values, the
headers sent to it); each value of `MIN_SECRET_CHARS` or more is replaced as
written, JSON-escaped and URL-encoded, and a `<scheme> <credential>` header
value also has its credential replaced on its own.

Secrets learned while running (OAuth access and refresh tokens, which change
at every refresh) are given to `Scrubber.learn()`: from then on they are
scrubbed by every scrubber of the process made with `learned=True`, as
`for_servers` makes them (the logs' and the pool's alike).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from executor.downstream.specs import ServerSpec

__all__ = ["MIN_SECRET_CHARS", "REDACTED", "Scrubber"]

MIN_SECRET_CHARS = 8
"""Values shorter than this are not scrubbed: too likely in ordinary text (`1`, `debug`)."""
REDACTED = "[redacted]"
"""What a secret is replaced with."""


def _spellings(value: str) -> Iterator[str]:
    """The ways `value` can show up in text: as is, JSON-escaped, URL-encoded."""
    yield value
    yield json.dumps(value)[1:-1]
    yield json.dumps(value, ensure_ascii=False)[1:-1]
    yield quote(value, safe="")


def _parts(secret: str) -> Iterator[str]:
    value = secret.strip()
    yield value
    words = value.split()
    if len(words) == 2:  # `Bearer <token>`, `Basic <credentials>`: the credential alone
        yield words[1]


def _needles_of(secrets: Iterable[str]) -> set[str]:
    return {
        spelling
        for secret in secrets
        for part in _parts(secret)
        if len(part) >= MIN_SECRET_CHARS
        for spelling in _spellings(part)
    }


class _Learned:
    """The secrets learned while running (see `Scrubber.learn`), shared by every scrubber."""

    needles: frozenset[str] = frozenset()
    generation = 0


class Scrubber:
    """Replaces every configured secret in a text (or a JSON value) with `[redacted]`.

    An empty scrubber (no secret long enough) returns its input unchanged, at no cost.
    """

    __slots__ = ("_generation", "_learned", "_longest", "_needles", "_own")

    def __init__(self, secrets: Iterable[str] = (), *, learned: bool = False) -> None:
        """Scrub `secrets` (each value of fewer than `MIN_SECRET_CHARS` characters is ignored).

        With `learned`, also every secret given to `Scrubber.learn`, before or after.
        """
        self._own = frozenset(_needles_of(secrets))
        self._learned = learned
        self._generation = -1
        self._needles: tuple[str, ...] = ()
        self._longest = 0
        self._refresh()

    @property
    def longest(self) -> int:
        """Length of the longest spelling scrubbed (0 when there is none)."""
        self._refresh()
        return self._longest

    @staticmethod
    def learn(*secrets: str) -> None:
        """Scrub `secrets` too, in every scrubber of this process made with `learned`.

        For secrets that appear while running, such as OAuth tokens; values shorter
        than `MIN_SECRET_CHARS` are ignored, as in the constructor.
        """
        new = _needles_of(secrets) - _Learned.needles
        if new:
            _Learned.needles = _Learned.needles | new
            _Learned.generation += 1

    def _refresh(self) -> None:
        """Take in the secrets learned since this scrubber last looked."""
        if self._generation == _Learned.generation:
            return
        self._generation = _Learned.generation
        # Longest first, so that a secret containing another is replaced whole.
        needles = self._own | _Learned.needles if self._learned else self._own
        self._needles = tuple(sorted(needles, key=lambda s: (-len(s), s)))
        self._longest = len(self._needles[0]) if self._needles else 0

    @classmethod
    def for_servers(cls, specs: Iterable[ServerSpec], extra: Iterable[str] = ()) -> Scrubber:
        """A scrubber for the servers' secrets, `extra` ones, and those learned while running.

        The servers' secrets are what each spec's `secrets()` gives (`env`,
        `headers`, `auth`); see `learn` for the others.
        """
        secrets = [*extra, *(secret for spec in specs for secret in spec.secrets())]
        return cls(secrets, learned=True)

    def __bool__(self) -> bool:
        """Whether there is anything to scrub."""
        self._refresh()
        return bool(self._needles)

    def text(self, text: str) -> str:
        """`text` with every secret replaced."""
        self._refresh()
        for needle in self._needles:
            if needle in text:
                text = text.replace(needle, REDACTED)
        return text

    def json(self, value: Any) -> Any:
        """A JSON value with every secret replaced in its strings (keys included)."""
        if not self:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                (self.text(k) if isinstance(k, str) else k): self.json(v) for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.json(v) for v in value]
        return value
