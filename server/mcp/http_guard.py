"""Where `serve --http` may listen: beyond loopback only with a bearer token.

`check_bind()` refuses otherwise, unless the operator forces it (and is
warned). Nothing here imports uvicorn or the SDK: the CLI checks this before
it decides to serve HTTP at all.
"""

from __future__ import annotations

import ipaddress

from executor.errors import UserError

__all__ = ["DEFAULT_HTTP_PORT", "check_bind", "is_loopback"]

DEFAULT_HTTP_PORT = 8765
"""The port `taskorch serve --http` listens on unless told otherwise."""


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
