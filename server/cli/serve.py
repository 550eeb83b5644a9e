"""`taskorch serve`: taskorch as an MCP server over stdio or streamable HTTP.

A host starts the server often: start-up pauses the cyclic garbage collector
(`common.pause_gc`), and plain arguments skip typer's parser (`cli.fast`).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Annotated

import typer

from executor.errors import UserError
from server.cli.common import (
    TOKEN_ENV_VAR,
    ConfigOpt,
    DbOpt,
    LogFormatOpt,
    LogOpt,
    fail,
    open_orchestrator,
    pause_gc,
    run,
)
from server.mcp.http_guard import DEFAULT_HTTP_PORT

if TYPE_CHECKING:
    from server.config import HttpLimits

__all__ = ["serve"]


def serve(
    config: ConfigOpt = None,
    db: DbOpt = None,
    http: Annotated[bool, typer.Option("--http", help="Serve streamable HTTP at /mcp.")] = False,
    host: Annotated[str, typer.Option(help="Address to bind with --http.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port with --http.")] = DEFAULT_HTTP_PORT,
    token: Annotated[
        str | None,
        typer.Option(
            help="Bearer token every HTTP request must carry. Prefer $TASKORCH_TOKEN: "
            "`ps` shows command lines to every user of the machine."
        ),
    ] = None,
    allow_host: Annotated[
        list[str] | None,
        typer.Option("--allow-host", help="Another Host header value to accept (repeatable)."),
    ] = None,
    insecure_no_token: Annotated[
        bool,
        typer.Option(
            "--insecure-no-token",
            help="Serve HTTP beyond loopback without a token: anyone who reaches the port "
            "can run tools.",
        ),
    ] = False,
    max_connections: Annotated[
        int | None,
        typer.Option(
            help="HTTP connections open at once (default 100); past it the oldest one "
            "not being answered is closed."
        ),
    ] = None,
    request_timeout: Annotated[
        float | None,
        typer.Option(help="Seconds an HTTP client has to send a whole request (default 10)."),
    ] = None,
    keep_alive: Annotated[
        int | None,
        typer.Option(help="Seconds an idle HTTP connection is kept open (default 5)."),
    ] = None,
    log_level: LogOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Serve taskorch over MCP: stdio (default) or streamable HTTP."""
    resume_gc = pause_gc()
    try:
        bearer = token if token is not None else os.environ.get(TOKEN_ENV_VAR) or None
        if http:
            from server.mcp.http_guard import check_bind

            try:
                check_bind(host, bearer, allow_no_token=insecure_no_token)
            except UserError as exc:
                raise fail(str(exc), 2) from None
        orch = open_orchestrator(
            config, db, log_level=log_level, token=bearer, log_format=log_format, traced=True
        )
        limits = _http_limits(orch.config.limits.http, max_connections, request_timeout, keep_alive)

        async def go() -> None:
            from server.mcp import build_server, serve_http, serve_stdio

            async with orch:
                server = build_server(orch)
                resume_gc()
                if http:
                    logging.getLogger(__name__).warning(
                        "taskorch serving streamable HTTP at http://%s:%d/mcp%s",
                        host,
                        port,
                        " (bearer token required)" if bearer else "",
                    )
                    await serve_http(
                        server,
                        host=host,
                        port=port,
                        token=bearer,
                        allowed_hosts=allow_host or (),
                        limits=limits,
                        allow_no_token=insecure_no_token,
                    )
                else:
                    await serve_stdio(server)

        run(go)
    finally:
        resume_gc()


_HTTP_LIMIT_OPTIONS = {
    "max_connections": "--max-connections",
    "request_timeout_s": "--request-timeout",
    "keep_alive_s": "--keep-alive",
}


def _http_limits(
    base: HttpLimits,
    max_connections: int | None,
    request_timeout: float | None,
    keep_alive: int | None,
) -> HttpLimits:
    """The config's `limits.http`, with the options given on the command line over them."""
    from pydantic import ValidationError

    given = {
        "max_connections": max_connections,
        "request_timeout_s": request_timeout,
        "keep_alive_s": keep_alive,
    }
    chosen = {k: v for k, v in given.items() if v is not None}
    try:
        return type(base).model_validate({**base.model_dump(), **chosen})
    except ValidationError as exc:
        error = exc.errors()[0]
        option = _HTTP_LIMIT_OPTIONS.get(str(error["loc"][0]), str(error["loc"][0]))
        raise typer.BadParameter(f"{option}: {error['msg']}") from None
