"""What every command shares: its options, logging to stderr, errors as exit codes, the service.

Exit codes: 0 done, 1 the work failed (a plan that did not complete, a
server down), 2 the command was wrong (an option, a file, the config), 130
interrupted. Imports stay inside functions: `--help` loads none of this.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from executor._utils import leaf_exceptions
from executor.errors import TaskorchError, UserError
from server.cli.logformat import LOG_LEVELS
from server.cli.printing import console

if TYPE_CHECKING:
    from executor.downstream import Scrubber
    from server.config import TaskorchConfig
    from server.service import TaskOrchestrator

__all__ = [
    "LOG_FORMAT_ENV_VAR",
    "LOG_LEVELS",
    "TOKEN_ENV_VAR",
    "ConfigOpt",
    "DbOpt",
    "LogFormatOpt",
    "LogOpt",
    "console",
    "fail",
    "load",
    "open_orchestrator",
    "pause_gc",
    "run",
    "setup_logging",
]

TOKEN_ENV_VAR = "TASKORCH_TOKEN"
"""Environment variable holding the bearer token of `serve --http` when `--token` is not given."""
LOG_FORMAT_ENV_VAR = "TASKORCH_LOG_FORMAT"
"""Environment variable choosing the log format when `--log-format` is not given."""

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Config file (else $TASKORCH_CONFIG, else the default location).",
        dir_okay=False,
    ),
]
DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="SQLite file or postgresql:// URL (else $TASKORCH_DB, else the config's, else "
        "the default).",
    ),
]
LogOpt = Annotated[
    str | None,
    typer.Option("--log-level", help="DEBUG, INFO, WARNING (default) or ERROR; logs go to stderr."),
]
LogFormatOpt = Annotated[
    str | None,
    typer.Option(
        "--log-format",
        help="text (default) or json: one JSON object per line (else $TASKORCH_LOG_FORMAT).",
    ),
]

_T = TypeVar("_T")


def setup_logging(
    level: str | None,
    config_level: str | None = None,
    *,
    secrets: Scrubber | None = None,
    log_format: str | None = None,
) -> None:
    """Log to stderr (stdout belongs to the protocol on stdio), scrubbed and bounded.

    `log_format` is `--log-format` (else `$TASKORCH_LOG_FORMAT`, else text).
    """
    from executor.logguard import LogGuard
    from server.cli.logformat import LOG_FORMATS, make_formatter

    chosen = (level or config_level or "WARNING").upper()
    if chosen not in LOG_LEVELS:
        raise typer.BadParameter(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    fmt = (log_format or os.environ.get(LOG_FORMAT_ENV_VAR) or "text").strip().lower()
    if fmt not in LOG_FORMATS:
        given = log_format or f"${LOG_FORMAT_ENV_VAR}={os.environ.get(LOG_FORMAT_ENV_VAR)}"
        raise typer.BadParameter(f"unknown log format {given!r}: use text or json")
    logging.basicConfig(level=chosen, stream=sys.stderr, force=True)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(make_formatter(fmt))
    # What servers send reaches the log through many libraries: scrub and bound it all here.
    guard = LogGuard(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(guard)
    atexit.register(guard.report)  # before logging's own exit hook, registered earlier


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `error: message` to stderr; raise the result to exit with `code`."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def run(fn: Callable[[], Awaitable[_T]]) -> _T:
    """Run `fn` on an event loop; taskorch's errors become messages and exit codes."""
    import anyio

    try:
        return anyio.run(fn)
    except BaseExceptionGroup as group:
        # One real error inside task groups: report it like a bare one.
        leaves = leaf_exceptions(group)
        inner = leaves[0] if len(leaves) == 1 else None
        if isinstance(inner, UserError):
            raise fail(str(inner), 2) from None
        if isinstance(inner, TaskorchError):
            raise fail(str(inner)) from None
        if isinstance(inner, typer.Exit):
            raise inner from None
        raise
    except UserError as exc:
        raise fail(str(exc), 2) from None
    except TaskorchError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None


def load(
    config: Path | None,
    log_level: str | None,
    *extra_secrets: str | None,
    log_format: str | None = None,
) -> TaskorchConfig:
    """Read the config (a wrong one exits 2) and set up logging with its secrets scrubbed."""
    from executor.downstream.redact import Scrubber
    from server.config import load_config

    try:
        cfg = load_config(config)
    except TaskorchError as exc:
        raise fail(str(exc), 2) from None
    secrets = Scrubber.for_servers(cfg.servers.values(), extra=[e for e in extra_secrets if e])
    setup_logging(log_level, cfg.log_level, secrets=secrets, log_format=log_format)
    return cfg


def open_orchestrator(
    config: Path | None,
    db: str | None,
    *,
    log_level: str | None = None,
    connect: bool = True,
    engine: bool = True,
    resume: bool = True,
    token: str | None = None,
    log_format: str | None = None,
    traced: bool = False,
) -> TaskOrchestrator:
    """The service for a command (not open yet).

    Args:
        config: `--config`.
        db: `--db`: a file path (SQLite) or a postgresql:// URL.
        log_level: `--log-level`.
        connect: Connect to the config's servers; `False` for commands that only
            read or decide, which then load neither the SDK's client nor the pool.
        engine: Start the run engine; `False` for commands that neither run, cancel
            nor follow runs.
        resume: Resume runs a crash interrupted, in the background.
        token: The HTTP bearer token, scrubbed from logs and servers' words.
        log_format: `--log-format`.
        traced: Export spans as the `OTEL_*` variables say (`executor.tracing`),
            flushed before the process exits.
    """
    from server.config import resolve_db_path
    from server.service import TaskOrchestrator

    cfg = load(config, log_level, token, log_format=log_format)
    try:
        db_path = resolve_db_path(db, cfg)
    except TaskorchError as exc:
        raise fail(str(exc), 2) from None
    if traced:
        from executor.tracing import export_before_sigterm, setup_tracing

        # Registered after logging's own exit hook, so it runs first: spans still
        # buffered are exported (and any export error logged) before the process ends.
        shutdown = setup_tracing()
        atexit.register(shutdown)
        export_before_sigterm(shutdown)
    return TaskOrchestrator(
        cfg,
        db_path=db_path,
        connect=connect,
        engine=engine,
        resume=resume,
        secrets=(token,) if token else (),
    )


def pause_gc() -> Callable[[], None]:
    """Stop the cyclic garbage collector until the returned function is called.

    Start-up allocates a few hundred thousand objects (the SDK's and taskorch's
    pydantic models, the tools' JSON schemas) and frees almost none of them, so
    collecting during it is wasted time. Resuming freezes what start-up made
    (`gc.freeze`), so later collections do not walk those objects again during
    the first requests; the cyclic leftovers of start-up are kept for good, once.
    Calling the function twice is harmless.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    resumed = False

    def resume() -> None:
        nonlocal resumed
        if resumed:
            return
        resumed = True
        if was_enabled:
            gc.freeze()
            gc.enable()

    return resume
