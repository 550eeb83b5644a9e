"""A stdio server's log: rotated and budgeted while written, scrubbed of secrets, lines cut."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from executor.downstream import Pool
from executor.downstream.redact import REDACTED, Scrubber
from executor.downstream.transports.stderr import StderrLog
from tests.fixtures.launch import tiny_spec

SECRET = "sk-live-0123456789abcdef"


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


async def _flood(tmp_path: Path, cap: int, lines: int) -> None:
    spec = tiny_spec("noisy", env={"API_KEY": SECRET})
    extra = "another-secret-the-embedder-knows"
    # A rate no test can reach: only the size cap applies.
    async with Pool(
        {"noisy": spec},
        log_dir=tmp_path,
        log_max_bytes=cap,
        log_lines_per_s=1e9,
        secrets=[extra],
    ) as pool:
        assert (await pool.call("noisy", "flood", {"lines": lines, "width": 100})).text() == (
            f"flooded {lines} lines"
        )
        environ = (await pool.call("noisy", "environ", {})).output()
        assert environ["env"]["API_KEY"] == REDACTED  # a result echoing a secret, scrubbed
        echoed = await pool.call("noisy", "echo", {"text": f"you said {extra}"})
        assert echoed.text() == f"you said {REDACTED}"
        assert (await pool.call("noisy", "echo", {"text": "still here"})).text() == "still here"


@pytest.mark.anyio
async def test_the_log_rotates_while_written_and_stays_under_its_cap(tmp_path: Path) -> None:
    cap, lines = 64 * 1024, 5000  # 1 MB of junk on two streams: many rotations
    await _flood(tmp_path, cap, lines)
    log, previous = tmp_path / "noisy.log", tmp_path / "noisy.log.1"
    assert 0 < log.stat().st_size <= cap
    assert 0 < previous.stat().st_size <= cap
    text = _read(previous) + _read(log)
    # The newest lines are kept (the two streams are read apart, so one may end
    # long before the other), and nothing was dropped for the rate.
    junk = re.findall(r"^(?:\[stdout, not JSON-RPC\] )?junk (?:err|out) \d+", text, re.MULTILINE)
    assert junk[-1].endswith(f"{lines - 1:09d}")
    assert "dropped" not in text


def test_a_secret_split_across_chunks_is_still_scrubbed(tmp_path: Path) -> None:
    path = tmp_path / "s.log"
    log = StderrLog(path, scrubber=Scrubber([SECRET]))
    data = f"starting with token={SECRET} now\nbye: {SECRET}".encode()
    for i in range(len(data)):  # a byte at a time: every split point
        log.feed(data[i : i + 1])
    log.close()
    assert log.tail() == (f"starting with token={REDACTED} now", f"bye: {REDACTED}")
    text = _read(path)
    assert SECRET not in text and f"token={REDACTED} now" in text


def test_an_endless_line_is_cut_without_keeping_part_of_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "s.log"
    log = StderrLog(path, scrubber=Scrubber([SECRET]))
    log.feed(("x" * 4090 + SECRET).encode())  # the secret straddles the cut at 4096
    for _ in range(100):
        log.feed(b"y" * 65536)  # 6 MB without a newline: nothing of it is kept
    log.feed(b"yyy\nthe next line\n")
    log.close()
    text = _read(path)
    assert SECRET[:6] not in text
    assert "line cut at 4096 characters" in text
    assert text.endswith("the next line\n")
    assert len(text) < 10_000
    assert log.tail()[-1] == "the next line"
    assert all(len(line) <= 1000 for line in log.tail())


def test_lines_over_the_budget_are_dropped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "s.log"
    log = StderrLog(path, burst=10, lines_per_s=1)
    log.feed(b"".join(b"line %d\n" % n for n in range(10_000)))
    log.add_line("[stdout, not JSON-RPC] junk")
    log.note("pid 1 exited with code 0")
    log.close()
    text = _read(path)
    kept = len(re.findall(r"^line \d+$", text, flags=re.MULTILINE))
    kept += text.count("[stdout, not JSON-RPC] junk")
    [note] = re.findall(r"dropped (\d+) lines .*\(stderr (\d+), stray stdout (\d+)\)", text)
    assert int(note[0]) == int(note[1]) + int(note[2]) == log.dropped_lines
    assert kept + log.dropped_lines == 10_001
    assert kept < 100
    # The ring keeps the last lines whatever the file dropped.
    assert log.tail()[-2:] == ("line 9999", "[stdout, not JSON-RPC] junk")
    assert text.index("dropped") < text.index("pid 1 exited")


def test_a_cap_too_small_for_one_line_is_refused() -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        StderrLog(None, max_bytes=1000)
