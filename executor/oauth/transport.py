"""OAuth on a server's HTTP connection while plans run: stored tokens, renewed by themselves.

`oauth_transport()` wraps the HTTP transport of one server's connection. It
drives the SDK's OAuth provider (`mcp.client.auth`): the stored access token
goes on every request; an expired one is refreshed first, and a 401 is
answered by refreshing (or, for client credentials, by fetching a new token)
and sending the request again. It never starts a person's login: when only a
login would help (no tokens, a refresh token refused or revoked), the request
gets a 401 that says so and names the command to run, which the pool reports
as an `authentication` failure of the step. Every failure of the flow itself
becomes such a 401 too, so the connection is never torn down by it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NoReturn

import httpx2
from mcp.client.auth import OAuthClientProvider, OAuthFlowError, OAuthTokenError
from mcp.client.auth.exceptions import OAuthRegistrationError
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.auth.utils import issuers_match
from mcp.shared.auth import OAuthClientMetadata
from pydantic import ValidationError

from executor.oauth.config import AuthorizationCodeAuth, ClientCredentialsAuth, OAuthSpec
from executor.oauth.store import TokenStore, default_token_dir

__all__ = ["LoginRequired", "login_hint", "oauth_http_transport", "oauth_transport"]

logger = logging.getLogger(__name__)


def login_hint(server: str) -> str:
    """What to run to log in to `server`."""
    return f"run `taskorch auth login {server}`"


class LoginRequired(Exception):
    """Only a person's login would get a token now."""


class _NoTracebackForLogins(logging.Filter):
    """Drops the SDK's traceback for a flow that stopped because a login is needed.

    That is an expected state, said once and clearly in the step's error; a
    traceback for every call until someone logs in would bury the logs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, LoginRequired)


logging.getLogger("mcp.client.auth.oauth2").addFilter(_NoTracebackForLogins())


class _StoredLoginProvider(OAuthClientProvider):
    """The SDK's authorization-code provider, limited to the tokens a login stored."""

    def __init__(self, server: str, url: str, auth: AuthorizationCodeAuth, store: TokenStore):
        metadata = OAuthClientMetadata(
            redirect_uris=None,
            grant_types=["authorization_code", "refresh_token"],
            scope=auth.scope,
        )
        super().__init__(server_url=url, client_metadata=metadata, storage=store)
        self._server = server
        self._store = store

    def _not_logged_in(self, why: str) -> NoReturn:
        raise LoginRequired(f"{why}: {login_hint(self._server)}")

    async def _initialize(self) -> None:
        await super()._initialize()
        # The SDK keeps expiry in memory only: restore it, so an expired token is
        # refreshed before it is sent rather than after a 401. But only once this
        # process has found the authorization server (on a 401, checked against the
        # issuer the login recorded): before that the SDK would send the refresh
        # token and client secret to the resource's own origin.
        found = self.context.oauth_metadata
        info = self.context.client_info
        known = found is not None and (
            info is None or info.issuer is None or issuers_match(info.issuer, str(found.issuer))
        )
        self.context.token_expiry_time = self._store.expires_at() if known else None
        if self.context.current_tokens is None or self.context.client_info is None:
            self._initialized = False  # look at the file again next time
            self._not_logged_in(f"not logged in to {self._server!r}")

    async def _perform_authorization(self) -> httpx2.Request:
        # Reached on a 401 despite the token: it was revoked, or expired early.
        # A refresh token may still work (the token response is handled like a
        # login's); otherwise only a login helps.
        if self.context.can_refresh_token():
            return await self._refresh_token()
        self._not_logged_in(f"the login to {self._server!r} expired or was revoked")


def _provider(server: str, url: str, auth: OAuthSpec, store: TokenStore) -> OAuthClientProvider:
    if isinstance(auth, ClientCredentialsAuth):
        return ClientCredentialsOAuthProvider(
            server_url=url,
            storage=store,
            client_id=auth.client_id,
            client_secret=auth.client_secret.get_secret_value(),
            token_endpoint_auth_method=auth.token_endpoint_auth_method,
            scope=auth.scope,
            issuer=auth.issuer,
        )
    return _StoredLoginProvider(server, url, auth, store)


class _OAuthTransport(httpx2.AsyncBaseTransport):
    """Runs each request through the SDK's OAuth flow; a failed flow becomes a 401 that says why."""

    def __init__(
        self,
        inner: httpx2.AsyncBaseTransport,
        provider: OAuthClientProvider,
        store: TokenStore,
        server: str,
        auth: OAuthSpec,
    ) -> None:
        self._inner = inner
        self._provider = provider
        self._store = store
        self._server = server
        self._auth = auth

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request` with a token, getting or renewing one as needed."""
        if self._store.changed():
            # Another process logged in or refreshed: start again from the file.
            self._provider._initialized = False
        await request.aread()  # the flow may send it twice
        flow = self._provider.async_auth_flow(request)
        try:
            outgoing = await flow.__anext__()
            while True:
                if self._registers(outgoing):
                    raise LoginRequired(
                        f"not logged in to {self._server!r}: {login_hint(self._server)}"
                    )
                response = await self._inner.handle_async_request(outgoing)
                try:
                    outgoing = await flow.asend(response)
                except StopAsyncIteration:
                    return response
                except BaseException:
                    await response.aclose()  # the flow stopped on it: free the connection
                    raise
                await response.aclose()
        except LoginRequired as exc:
            return self._refusal(request, "login_required", str(exc))
        except (OAuthFlowError, OAuthTokenError, OAuthRegistrationError, ValidationError) as exc:
            return self._refusal(request, "invalid_token", self._failure(exc))
        finally:
            await flow.aclose()

    def _registers(self, outgoing: httpx2.Request) -> bool:
        """Whether the flow is about to register a client: only a person's login may do that.

        The SDK registers afresh when the stored registration is for another
        authorization server than the one the resource now names.
        """
        return (
            isinstance(self._provider, _StoredLoginProvider)
            and outgoing.method == "POST"
            and self._provider.context.client_info is None
        )

    def _failure(self, exc: Exception) -> str:
        words = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        if isinstance(self._auth, ClientCredentialsAuth):
            return (
                f"no token for {self._server!r} with its client credentials ({words}); "
                "check auth.client_id, auth.client_secret and auth.issuer in the config"
            )
        return (
            f"the login to {self._server!r} could not be renewed ({words}): "
            f"{login_hint(self._server)}"
        )

    @staticmethod
    def _refusal(request: httpx2.Request, error: str, message: str) -> httpx2.Response:
        logger.debug("OAuth for %s: %s", request.url.host, message)
        return httpx2.Response(
            401,
            json={"error": error, "error_description": message},
            request=request,
        )

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._inner.aclose()


def oauth_transport(
    inner: httpx2.AsyncBaseTransport,
    *,
    server: str,
    url: str,
    auth: OAuthSpec,
    store: TokenStore,
) -> httpx2.AsyncBaseTransport:
    """`inner` with OAuth for the server `server` at `url` (see the module docstring).

    Args:
        inner: The transport requests go out on (the token requests too).
        server: The server's configured name, for messages.
        url: Its MCP endpoint (the OAuth resource).
        auth: Its `auth` settings.
        store: Where its tokens are.
    """
    return _OAuthTransport(inner, _provider(server, url, auth, store), store, server, auth)


def oauth_http_transport(
    server: str, url: str, auth: OAuthSpec, directory: Path | None = None
) -> httpx2.AsyncBaseTransport:
    """A plain HTTP transport with OAuth for `server`, its tokens under `directory`.

    `directory` defaults to `default_token_dir()`.
    """
    store = TokenStore(directory or default_token_dir(), server, url)
    return oauth_transport(
        httpx2.AsyncHTTPTransport(), server=server, url=url, auth=auth, store=store
    )
