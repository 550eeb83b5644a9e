"""OAuth to downstream HTTP servers: settings, token files, a person's login, tokens at run time.

- `config`: the `auth` object of a server entry (`AuthorizationCodeAuth`,
  `ClientCredentialsAuth`).
- `store`: tokens on disk, one owner-only file per server (`TokenStore`).
- `login`: `taskorch auth login NAME`, authorization code with PKCE (`login`).
- `transport`: the HTTP transport that sends, refreshes and fetches tokens
  while plans run (`oauth_transport`).

Only `config` is light; the rest load the SDK's OAuth client when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from executor._utils import lazy_exports

if TYPE_CHECKING:
    from executor.oauth.config import AuthorizationCodeAuth, ClientCredentialsAuth, OAuthSpec
    from executor.oauth.login import login
    from executor.oauth.store import TOKEN_DIR_ENV_VAR, TokenStore, default_token_dir
    from executor.oauth.transport import login_hint, oauth_transport

__all__ = [
    "TOKEN_DIR_ENV_VAR",
    "AuthorizationCodeAuth",
    "ClientCredentialsAuth",
    "OAuthSpec",
    "TokenStore",
    "default_token_dir",
    "login",
    "login_hint",
    "oauth_transport",
]

_HOMES = {
    "AuthorizationCodeAuth": "executor.oauth.config",
    "ClientCredentialsAuth": "executor.oauth.config",
    "OAuthSpec": "executor.oauth.config",
    "login": "executor.oauth.login",
    "TOKEN_DIR_ENV_VAR": "executor.oauth.store",
    "TokenStore": "executor.oauth.store",
    "default_token_dir": "executor.oauth.store",
    "login_hint": "executor.oauth.transport",
    "oauth_transport": "executor.oauth.transport",
}

__getattr__, __dir__ = lazy_exports(__name__, _HOMES, globals())
