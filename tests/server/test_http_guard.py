"""Where `serve --http` may listen, and its limits' bounds."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from executor.errors import UserError
from server.cli import app
from server.config import HttpLimits
from server.mcp.http_guard import check_bind, is_loopback


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)
    assert check_bind(host, None) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.20", "fe80::1%eth0", "box.lan"])
def test_anything_else_needs_a_token_or_an_explicit_override(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(UserError, match="without a bearer token") as refused:
        check_bind(host, None)
    assert "TASKORCH_TOKEN" in str(refused.value)
    assert check_bind(host, "a-token") is None
    warning = check_bind(host, None, allow_no_token=True)
    assert warning is not None and "anyone who can reach the port" in warning


def test_limits_have_sane_defaults_and_bounds() -> None:
    limits = HttpLimits()
    assert limits.max_connections >= 16 and 1 <= limits.request_timeout_s <= 60
    for bad in ({"max_connections": 0}, {"request_timeout_s": 0}, {"keep_alive_s": 0}):
        with pytest.raises(ValidationError):
            HttpLimits.model_validate(bad)


def test_serve_help_states_the_defaults_of_the_limits() -> None:
    limits = HttpLimits()
    text = " ".join(CliRunner().invoke(app, ["serve", "--help"], terminal_width=200).output.split())
    assert f"(default {limits.max_connections})" in text
    assert f"(default {limits.request_timeout_s:g})" in text
    assert f"(default {limits.keep_alive_s})" in text
    assert "Prefer $TASKORCH_TOKEN" in text
