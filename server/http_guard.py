"""The rules `serve --http` holds under abuse: its limits, and where it may listen.

`HttpLimits` are enforced by `server.http_protocol` (a request deadline, a
connection cap) and uvicorn (keep-alive, `limit_concurrency`). `check_bind()`
allows listening beyond loopback only with a bearer token, unless the operator
forces it (and is warned). Nothing here imports uvicorn: the CLI reads these
rules before it decides to serve HTTP at all.
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field

from executor.errors import UserError

__all__ = ["HttpLimits", "check_bind", "is_loopback"]


class HttpLimits(BaseModel):
    """The limits of the HTTP server; the defaults suit one host and a few clients."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_connections: int = Field(default=100, ge=1, le=100_000)
    """Open connections at once; past it the oldest one not being answered is closed."""
    request_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    """Seconds a client has to send a whole request (headers and body), from its first byte."""
    keep_alive_s: int = Field(default=5, ge=1, le=3600)
    """Seconds an idle connection is kept open between requests."""


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or `localhost`) can only be reached from this machine."""
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(name.split("%")[0]).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def check_bind(host: str, token: str | None, *, allow_no_token: bool = False) -> str | None:
    """Refuse to listen beyond loopback without a bearer token.

    Returns:
        A warning to log when such a bind is forced with `allow_no_token`, else `None`.

    Raises:
        UserError: `host` is not loopback, there is no token, and nothing forces it.
    """
    if token or is_loopback(host):
        return None
    if not allow_no_token:
        raise UserError(
            f"refusing to serve HTTP on {host} without a bearer token: anyone who can reach "
            "the port could run tools. Set TASKORCH_TOKEN (or --token), bind 127.0.0.1, or "
            "pass --insecure-no-token to accept the risk"
        )
    return (
        f"serving HTTP on {host} without a bearer token (--insecure-no-token): anyone who "
        "can reach the port can plan and run tools"
    )
