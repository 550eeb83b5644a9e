"""Serving over streamable HTTP: the app at `/mcp`, its guards, and uvicorn.

DNS-rebinding protection accepts only the bound address, loopback names and
`--allow-host` values; an optional bearer token is checked in constant time;
`check_bind` refuses to listen beyond loopback without one; the connection
limits are `HttpLimits` (`limits.http` in the config), enforced by
`server.mcp.http_protocol` and uvicorn.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Sequence
from typing import Any

from mcp.server import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from executor import UserError
from server.config import HttpLimits
from server.mcp.http_guard import DEFAULT_HTTP_PORT, check_bind

__all__ = ["DEFAULT_HTTP_PORT", "BearerTokenMiddleware", "build_http_app", "serve_http"]

logger = logging.getLogger(__name__)


class BearerTokenMiddleware:
    """Refuse every HTTP request that lacks `Authorization: Bearer <token>` (401)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        """Wrap `app`; `token` must be non-empty."""
        if not token:
            raise UserError(
                "the bearer token is empty: set a non-empty TASKORCH_TOKEN (or --token), "
                "or unset it"
            )
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the token of an HTTP request, then pass it on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization", "")
        scheme, _, credential = header.partition(" ")
        # Compare in constant time so the token cannot be guessed byte by byte.
        if scheme.lower() == "bearer" and hmac.compare_digest(
            credential.strip().encode(), self._token
        ):
            await self.app(scope, receive, send)
            return
        error = "invalid_token" if header else "invalid_request"
        response = JSONResponse(
            {
                "error": error,
                "error_description": "send 'Authorization: Bearer <token>' with the token "
                "taskorch was started with (TASKORCH_TOKEN, or --token)",
            },
            status_code=401,
            headers={"WWW-Authenticate": f'Bearer realm="taskorch", error="{error}"'},
        )
        await response(scope, receive, send)


_LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def build_http_app(
    server: MCPServer[Any],
    *,
    host: str = "127.0.0.1",
    token: str | None = None,
    allowed_hosts: Sequence[str] = (),
) -> ASGIApp:
    """The streamable HTTP app (at `/mcp`), with DNS-rebinding protection and optional auth.

    Args:
        server: The MCP server.
        host: The address bound; requests must name it (or a loopback name) in `Host`.
        token: When set, every request must carry it as a bearer token.
        allowed_hosts: More `Host` values to accept (`name` or `name:port`).
    """
    names = dict.fromkeys([*_LOCAL_HOSTS, f"[{host}]" if ":" in host else host, *allowed_hosts])
    hosts = [h for name in names for h in (name, f"{name}:*")]
    origins = [o for name in names for o in (f"http://{name}", f"http://{name}:*")]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins
    )
    app: ASGIApp = server.streamable_http_app(
        streamable_http_path="/mcp", transport_security=security, host=host
    )
    if token:
        app = BearerTokenMiddleware(app, token)
    return app


async def serve_http(
    server: MCPServer[Any],
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_HTTP_PORT,
    token: str | None = None,
    allowed_hosts: Sequence[str] = (),
    log_level: str = "warning",
    limits: HttpLimits | None = None,
    allow_no_token: bool = False,
) -> None:
    """Serve streamable HTTP at `http://host:port/mcp` until cancelled.

    Args:
        server: The MCP server.
        host: The address to bind.
        port: The port to bind.
        token: When set, every request must carry it as a bearer token.
        allowed_hosts: More `Host` values to accept (`name` or `name:port`).
        log_level: uvicorn's log level.
        limits: Connection cap and timeouts (`HttpLimits()` when `None`).
        allow_no_token: Serve beyond loopback without a token anyway (with a warning).

    Raises:
        UserError: `host` is not loopback and there is no token (see `check_bind`).
    """
    warning = check_bind(host, token, allow_no_token=allow_no_token)
    if warning is not None:
        logger.warning("%s", warning)
    import uvicorn

    from server.mcp.http_protocol import protocol_for

    limits = limits or HttpLimits()
    app = build_http_app(server, host=host, token=token, allowed_hosts=allowed_hosts)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        lifespan="on",
        access_log=False,
        http=protocol_for(limits),
        ws="none",  # nothing here speaks WebSocket: refuse upgrades rather than hold them
        timeout_keep_alive=limits.keep_alive_s,
        # Counted with the connection asking: past the cap, a request is answered 503.
        limit_concurrency=limits.max_connections + 1,
    )
    await uvicorn.Server(config).serve()
