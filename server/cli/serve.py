"""`taskorch serve`: taskorch as an MCP server over stdio or streamable HTTP, started fast.

A host starts the server often, so its arguments are read without typer when
they are plain (`serve_fast_options`); anything unusual is left to typer,
which reports it as usual. Start-up pauses the cyclic garbage collector.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from executor.errors import UserError
from server.cli.common import (
    LOG_LEVELS,
    TOKEN_ENV_VAR,
    ConfigOpt,
    DbOpt,
    LogOpt,
    fail,
    open_orchestrator,
    pause_gc,
    run,
)
from server.mcp.http_guard import DEFAULT_HTTP_PORT

if TYPE_CHECKING:
    from server.config import HttpLimits

__all__ = ["serve", "serve_fast_options"]


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
) -> None:
    """Serve taskorch as an MCP server: stdio (default) or streamable HTTP."""
    resume_gc = pause_gc()
    try:
        bearer = token if token is not None else os.environ.get(TOKEN_ENV_VAR) or None
        if http:
            from server.mcp.http_guard import check_bind

            try:
                check_bind(host, bearer, allow_no_token=insecure_no_token)
            except UserError as exc:
                raise fail(str(exc), 2) from None
        orch = open_orchestrator(config, db, log_level=log_level, token=bearer)
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


_SERVE_VALUE_OPTIONS = {
    "--config": "config",
    "--db": "db",
    "--host": "host",
    "--port": "port",
    "--token": "token",
    "--allow-host": "allow_host",
    "--log-level": "log_level",
    "--max-connections": "max_connections",
    "--request-timeout": "request_timeout",
    "--keep-alive": "keep_alive",
}
_SERVE_FLAGS = {"--http": "http", "--insecure-no-token": "insecure_no_token"}
_SERVE_INT_OPTIONS = ("port", "max_connections", "keep_alive")


def serve_fast_options(args: Sequence[str]) -> dict[str, Any] | None:
    """The keyword arguments of `serve` for plain, valid `serve` arguments, else `None`.

    Only the unambiguous forms are read (`--opt VALUE`, `--opt=VALUE`, `--http`,
    each option at most once but `--allow-host`); anything else (`--help`, an
    unknown or repeated option, a port that is not a number, a directory as the
    config) gives `None`, and typer parses it and reports the problem as usual.
    """
    options: dict[str, Any] = {}
    allow_host: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        flag = _SERVE_FLAGS.get(arg)
        if flag is not None and flag not in options:
            options[flag] = True
            continue
        name, eq, value = arg.partition("=")
        key = _SERVE_VALUE_OPTIONS.get(name)
        if key is None or (key in options and key != "allow_host"):
            return None
        if not eq:
            if i == len(args):
                return None
            value = args[i]
            i += 1
        if not value or value.startswith("-"):
            return None
        if key == "allow_host":
            allow_host.append(value)
            continue
        parsed = _fast_value(key, value)
        if parsed is None:
            return None
        options[key] = parsed
    if allow_host:
        options["allow_host"] = allow_host
    return options


def _fast_value(key: str, value: str) -> Any:
    """`value` as `serve`'s parameter `key` takes it, or `None` when typer should judge it."""
    if key in _SERVE_INT_OPTIONS:
        return int(value) if value.isdigit() else None
    if key == "request_timeout":
        try:
            return float(value)
        except ValueError:
            return None
    if key in ("config", "db"):
        path = Path(value)
        return None if key == "config" and path.is_dir() else path
    if key == "log_level" and value.upper() not in LOG_LEVELS:
        return None
    return value
