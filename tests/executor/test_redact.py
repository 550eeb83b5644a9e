"""Scrubbing secrets (`Scrubber`) and guarding taskorch's own log (`LogGuard`)."""

from __future__ import annotations

import io
import json
import logging
from urllib.parse import quote

import pytest
from pydantic import SecretStr

from executor.downstream.redact import MIN_SECRET_CHARS, REDACTED, Scrubber
from executor.downstream.specs import HttpServerSpec, StdioServerSpec
from executor.logguard import LineBudget, LogGuard

SECRET = "sk-live-0123456789abcdef"


def test_short_values_are_not_secrets_worth_scrubbing() -> None:
    short = ["1", "true", "debug", "8080", "x" * (MIN_SECRET_CHARS - 1)]
    scrub = Scrubber(short)
    assert not scrub
    text = "exited with code 1 (debug=true, port 8080, xxxxxxx)"
    assert scrub.text(text) == text
    assert Scrubber(["x" * MIN_SECRET_CHARS]).text("axxxxxxxxb") == f"a{REDACTED}b"


def test_every_spelling_of_a_secret_is_scrubbed() -> None:
    odd = 'pa"ss\\wörd/2024'
    scrub = Scrubber([odd])
    for spelling in (odd, json.dumps(odd)[1:-1], json.dumps(odd, ensure_ascii=False)[1:-1]):
        assert scrub.text(f"<{spelling}>") == f"<{REDACTED}>"
    assert scrub.text(f"?key={quote(odd, safe='')}&") == f"?key={REDACTED}&"
    assert odd not in scrub.text(json.dumps({"env": {"PASSWORD": odd}}))


def test_a_header_credential_is_scrubbed_on_its_own_and_the_longest_secret_first() -> None:
    spec = HttpServerSpec(
        url="http://127.0.0.1/mcp", headers={"Authorization": SecretStr(f"Bearer {SECRET}")}
    )
    scrub = Scrubber.for_servers([spec], extra=[SECRET[:10]])
    assert scrub.text(f"echo: Bearer {SECRET}!") == f"echo: {REDACTED}!"
    assert scrub.text(f"token {SECRET} seen") == f"token {REDACTED} seen"
    assert scrub.text(f"prefix {SECRET[:10]}.") == f"prefix {REDACTED}."
    assert scrub.text("Bearer alone") == "Bearer alone"


def test_env_values_and_json_values_keys_included() -> None:
    spec = StdioServerSpec(command="x", env={"API_KEY": SecretStr(SECRET), "DEBUG": SecretStr("1")})
    scrub = Scrubber.for_servers([spec])
    value = {"content": [{"text": f"key={SECRET}", "n": 1}], SECRET: [SECRET, None, 1.5]}
    assert scrub.json(value) == {
        "content": [{"text": f"key={REDACTED}", "n": 1}],
        REDACTED: [REDACTED, None, 1.5],
    }
    assert Scrubber().json(value) is value


def test_a_line_budget_takes_a_burst_then_its_rate() -> None:
    now = [0.0]
    budget = LineBudget(10, 2, clock=lambda: now[0])
    assert budget.take(25) == 10
    assert budget.take(1) == 0
    now[0] = 1.0
    assert budget.take(25) == 2
    now[0] = 100.0
    assert budget.take(25) == 10  # never more than the burst


def _guarded(
    scrub: Scrubber, now: list[float], guard: LogGuard | None = None
) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(guard or LogGuard(scrub, burst=5, per_s=1, clock=lambda: now[0]))
    logger = logging.getLogger(f"test_guard_{id(out)}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return logger, out


def test_the_log_guard_bounds_a_flood_from_one_call_site_and_counts_it() -> None:
    now = [0.0]
    logger, out = _guarded(Scrubber(), now)

    def junk(text: str) -> None:
        logger.warning("junk %s", text)  # one call site, whatever the text

    for n in range(1000):
        junk(str(n))
    logger.warning("another call site")
    now[0] = 1.0
    for n in range(3):
        junk(f"again {n}")
    lines = out.getvalue().splitlines()
    assert lines[:5] == [f"junk {n}" for n in range(5)]
    assert lines[5] == "another call site"
    assert lines[6] == "junk again 0 [995 more like this were dropped: the log was flooded]"
    assert len(lines) == 7


def test_the_log_guard_scrubs_messages_arguments_and_tracebacks() -> None:
    logger, out = _guarded(Scrubber([SECRET]), [0.0])
    logger.warning("the server said %s", f"key={SECRET}")
    try:
        raise RuntimeError(f"failed with {SECRET}")
    except RuntimeError:
        logger.exception("a call failed")
    text = out.getvalue()
    assert SECRET not in text
    assert f"the server said key={REDACTED}" in text
    assert f"RuntimeError: failed with {REDACTED}" in text


def test_the_log_guard_reports_counts_still_untold(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    guard = LogGuard(burst=1, per_s=1, report_every_s=10, clock=lambda: now[0])
    logger, out = _guarded(Scrubber(), now, guard)

    def junk() -> None:
        logger.warning("junk")

    for _ in range(5):
        junk()
    now[0] = 10.0  # a summary is due with the next record dropped
    for _ in range(3):
        junk()  # the first passes with its count; the next one is dropped and reported
    guard.report()  # the last one, at exit
    guard.report()  # nothing new
    assert out.getvalue().splitlines() == [
        "junk",
        "junk [4 more like this were dropped: the log was flooded]",
    ]
    summaries = [r.getMessage() for r in caplog.records if r.name == "executor.logguard"]
    assert len(summaries) == 2
    assert all(m.startswith("the log was flooded: dropped 1 record (") for m in summaries)
