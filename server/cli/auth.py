"""`taskorch auth`: log in to the downstream servers that use OAuth, and see where each stands.

```
taskorch auth login NAME [--timeout 300]    a person's login in a browser (authorization code)
taskorch auth logout NAME                   forget NAME's tokens
taskorch auth status                        every OAuth server: logged in, expired, or not
```

Tokens live in `$TASKORCH_OAUTH_DIR` (else taskorch's user data directory),
one owner-only file per server, never in the plan database; see
`executor.oauth`. Nothing here prints a token or a secret.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from server.cli.common import ConfigOpt, fail, load

if TYPE_CHECKING:
    from executor.downstream.specs import HttpServerSpec
    from server.config import TaskorchConfig

__all__ = ["auth_app"]

auth_app = typer.Typer(
    help="Log in to downstream servers that use OAuth.", no_args_is_help=True, rich_markup_mode=None
)


def _config(path: Path | None) -> TaskorchConfig:
    # Warnings to stderr, with the config's secrets scrubbed, as every command logs.
    return load(path, None)


def _oauth_server(cfg: TaskorchConfig, name: str) -> HttpServerSpec:
    from executor.downstream.specs import HttpServerSpec

    spec = cfg.servers.get(name)
    if spec is None:
        known = ", ".join(sorted(cfg.servers)) or "none"
        raise fail(f"no server named {name!r} in the config (configured: {known})", 2)
    if not isinstance(spec, HttpServerSpec) or spec.auth is None:
        raise fail(
            f"server {name!r} does not use OAuth: give its entry an `auth` object, such as "
            '{"type": "authorization_code"} (see the README)',
            2,
        )
    return spec


@auth_app.command()
def login(
    name: Annotated[
        str, typer.Argument(help="The server, as named in the config.", metavar="NAME")
    ],
    timeout: Annotated[
        float, typer.Option(min=1, help="Seconds to wait for the browser to come back.")
    ] = 300.0,
    config: ConfigOpt = None,
) -> None:
    """Log in to NAME: open the printed URL in a browser; the tokens are stored for later runs."""
    import anyio

    from executor.errors import LoginError
    from executor.oauth import AuthorizationCodeAuth, TokenStore, default_token_dir
    from executor.oauth.login import login as oauth_login

    # The SDK logs its OAuth errors with a traceback; the one line below says what failed.
    logging.getLogger("mcp.client.auth").setLevel(logging.CRITICAL)
    spec = _oauth_server(_config(config), name)
    auth = spec.auth
    if not isinstance(auth, AuthorizationCodeAuth):
        typer.echo(
            f"{name} uses client credentials: taskorch fetches its tokens by itself, "
            "there is nothing to log in to"
        )
        return
    store = TokenStore(default_token_dir(), name, spec.url)

    def show(url: str) -> None:
        typer.echo(f"Open this URL in a browser to log in to {name}:\n\n  {url}\n", nl=True)
        typer.echo("Waiting for the browser to come back...")

    try:
        anyio.run(
            lambda: oauth_login(name, spec.url, auth, store, show_url=show, timeout_s=timeout)
        )
    except LoginError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None
    typer.echo(f"Logged in to {name}; the tokens are in {store.path} (readable by you only).")


@auth_app.command()
def logout(
    name: Annotated[
        str, typer.Argument(help="The server, as named in the config.", metavar="NAME")
    ],
    config: ConfigOpt = None,
) -> None:
    """Forget NAME's tokens (and its client registration)."""
    from executor.oauth import TokenStore, default_token_dir

    spec = _oauth_server(_config(config), name)
    removed = TokenStore(default_token_dir(), name, spec.url).remove()
    typer.echo(f"Logged out of {name}." if removed else f"No tokens were stored for {name}.")


@auth_app.command()
def status(config: ConfigOpt = None) -> None:
    """List the servers that use OAuth and whether taskorch holds a token for each."""
    from executor.downstream.specs import HttpServerSpec
    from executor.oauth import AuthorizationCodeAuth, TokenStore, default_token_dir, login_hint

    cfg = _config(config)
    rows = [
        (name, spec)
        for name, spec in sorted(cfg.servers.items())
        if isinstance(spec, HttpServerSpec) and spec.auth is not None
    ]
    if not rows:
        typer.echo("No configured server uses OAuth.")
        return
    directory = default_token_dir()
    for name, spec in rows:
        assert spec.auth is not None
        store = TokenStore(directory, name, spec.url)
        tokens = store.tokens()
        person = isinstance(spec.auth, AuthorizationCodeAuth)
        if tokens is None:
            state = f"not logged in ({login_hint(name)})" if person else "no token yet"
        else:
            expires = store.expires_at()
            left = None if expires is None else expires - time.time()
            if left is not None and left <= 0:
                renew = "refreshed at next use" if tokens.refresh_token else "renewed at next use"
                state = f"token expired ({renew})"
            elif left is not None:
                state = f"logged in (token valid {left / 60:.0f} more minutes)"
            else:
                state = "logged in"
        grant = "authorization code" if person else "client credentials"
        typer.echo(f"{name}: {state} [{grant}, {spec.url}]")
