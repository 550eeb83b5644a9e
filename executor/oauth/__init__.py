"""OAuth to downstream HTTP servers: settings, token files, a person's login, tokens at run time.

- `config`: the `auth` object of a server entry (`AuthorizationCodeAuth`,
  `ClientCredentialsAuth`).
- `store`: tokens on disk, one owner-only file per server (`TokenStore`).
- `login`: `taskorch auth login NAME`, authorization code with PKCE (`login.login`,
  imported from its module: the name is the module's).
- `transport`: the HTTP transport that sends, refreshes and fetches tokens
  while plans run (`oauth_transport`).

Only `config` is light; the rest load the SDK's OAuth client when first used.
"""

from __future__ import annotations

import typing

from executor._utils import export_lazily as _export_lazily

if typing.TYPE_CHECKING or not _export_lazily(globals()):
    from executor.oauth.config import AuthorizationCodeAuth as AuthorizationCodeAuth
    from executor.oauth.config import ClientCredentialsAuth as ClientCredentialsAuth
    from executor.oauth.config import OAuthSpec as OAuthSpec
    from executor.oauth.store import TOKEN_DIR_ENV_VAR as TOKEN_DIR_ENV_VAR
    from executor.oauth.store import TokenStore as TokenStore
    from executor.oauth.store import default_token_dir as default_token_dir
    from executor.oauth.transport import login_hint as login_hint
    from executor.oauth.transport import oauth_transport as oauth_transport
