"""How a server entry says it uses OAuth: the `auth` object of a streamable HTTP server.

```json
"tracker": {"url": "https://tracker.example/mcp", "auth": {"type": "authorization_code"}},
"reports": {"url": "https://reports.example/mcp",
            "auth": {"type": "client_credentials", "client_id": "taskorch",
                     "client_secret": "${REPORTS_SECRET}", "issuer": "https://login.example"}}
```

`authorization_code` is a person's login, with PKCE: `taskorch auth login NAME`
opens it once; the authorization server is found from the resource's
metadata (or pinned by `issuer`), and the client registers itself there unless
`client_id` is given. Tokens are then refreshed only at the authorization
server of the login.
`client_credentials` is a service's: taskorch fetches and renews its tokens by
itself, and sends the client secret only to the authorization server named by
`issuer`. Keys may be written camelCase too (`clientId`, `callbackPort`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic.alias_generators import to_camel

__all__ = ["AuthorizationCodeAuth", "ClientCredentialsAuth", "OAuthSpec"]


class _Auth(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, validate_by_name=True
    )

    scope: str | None = Field(default=None, min_length=1)
    """Space-separated scopes to ask for (else what the server's metadata says)."""

    def secrets(self) -> list[str]:
        """The secret values in this entry, to scrub from whatever servers send."""
        return []


class AuthorizationCodeAuth(_Auth):
    """A person logs in once in a browser (`taskorch auth login NAME`); tokens then renew."""

    type: Literal["authorization_code"] = "authorization_code"
    """Grant tag."""
    client_id: str | None = Field(default=None, min_length=1)
    """A client registered beforehand; else taskorch registers itself (dynamic registration)."""
    client_secret: SecretStr | None = None
    """That client's secret, if it has one (secret)."""
    issuer: str | None = Field(default=None, pattern=r"^https?://")
    """The authorization server of that client (its issuer URL): the login, and every refresh
    after it, go only there. Unset: the one the login found in the server's metadata."""
    callback_port: int = Field(default=0, ge=0, le=65535)
    """Port on 127.0.0.1 for the browser's redirect (0: any free port; a client registered
    beforehand usually needs the port it was registered with)."""

    def secrets(self) -> list[str]:
        """The client secret, if any."""
        return [self.client_secret.get_secret_value()] if self.client_secret else []


class ClientCredentialsAuth(_Auth):
    """A service authenticates with its own client id and secret; no person involved."""

    type: Literal["client_credentials"] = "client_credentials"
    """Grant tag."""
    client_id: str = Field(min_length=1)
    """The client's id at the authorization server."""
    client_secret: SecretStr
    """Its secret (secret: write `${VAR}` to take it from the environment)."""
    issuer: str = Field(pattern=r"^https?://")
    """The authorization server that issued the client (its issuer URL): the secret is sent
    only there, whatever the MCP server's metadata says."""
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post"] = (
        "client_secret_basic"
    )
    """How the secret is sent to the token endpoint."""

    def secrets(self) -> list[str]:
        """The client secret."""
        return [self.client_secret.get_secret_value()]


OAuthSpec = Annotated[
    AuthorizationCodeAuth | ClientCredentialsAuth,
    Field(discriminator="type"),
]
"""A server's OAuth settings, tagged by `type`."""
