"""A person's OAuth login to one server: authorization code with PKCE, in a browser.

`login()` asks the server (a request without a token gets a 401 that points
to its protected-resource metadata), discovers the authorization server from
that metadata, registers taskorch there when no `client_id` is configured,
shows the authorization URL, and receives the browser's redirect on
127.0.0.1. The SDK's provider (`mcp.client.auth.OAuthClientProvider`) does the
OAuth; this module gives it the callback listener and the store, and checks
the new token on the server before saying it worked.
"""

from __future__ import annotations

import html
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.abc
import httpx2
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata
from mcp_types.version import LATEST_HANDSHAKE_VERSION
from pydantic import AnyUrl

from executor._utils import leaf_exceptions
from executor.errors import LoginError
from executor.oauth.config import AuthorizationCodeAuth
from executor.oauth.store import TokenStore

__all__ = ["login"]

_MAX_REQUEST_BYTES = 16 * 1024
_PAGE = (
    "<!doctype html><meta charset=utf-8><title>taskorch</title>"
    "<p>{text}</p><p>You can close this tab.</p>"
)


@dataclass
class _Callback:
    """What the browser's redirect brought, once it came."""

    port: int = 0
    state: str | None = None
    """The `state` of the authorization URL shown: a redirect without it is not the browser's."""
    result: AuthorizationCodeResult | None = None
    error: str | None = None
    done: anyio.Event = field(default_factory=anyio.Event)


async def _answer(stream: anyio.abc.ByteStream, status: str, text: str) -> None:
    body = _PAGE.format(text=html.escape(text)).encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    await stream.send(head.encode() + body)


async def _handle(stream: anyio.abc.SocketStream, callback: _Callback, server: str) -> None:
    """Answer one request to the listener; the redirect to `/callback` ends the wait.

    Only a redirect that carries the `state` of the authorization URL counts:
    anything else (another local process, a web page the browser has open)
    gets a 404 and the wait goes on.
    """
    async with stream:
        data = b""
        with anyio.move_on_after(30):
            while b"\r\n\r\n" not in data and len(data) < _MAX_REQUEST_BYTES:
                try:
                    data += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
        line = data.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        target = urlsplit(parts[1]) if len(parts) == 3 and parts[0] == "GET" else None
        if target is None or target.path != "/callback" or callback.done.is_set():
            await _answer(stream, "404 Not Found", "Nothing here.")
            return
        query = {key: values[0] for key, values in parse_qs(target.query).items()}
        state = query.get("state")
        if (
            callback.state is None
            or state is None
            or not secrets.compare_digest(state.encode(), callback.state.encode())
        ):
            await _answer(stream, "404 Not Found", "Nothing here.")
            return
        if "error" in query:
            words = query.get("error_description") or query["error"]
            callback.error = f"the authorization server refused: {words}"
            await _answer(stream, "200 OK", f"Login to {server} refused: {words}")
        else:
            callback.result = AuthorizationCodeResult(
                code=query.get("code", ""), state=query.get("state"), iss=query.get("iss")
            )
            await _answer(stream, "200 OK", f"taskorch is logged in to {server}.")
        callback.done.set()


async def _probe(client: httpx2.AsyncClient, url: str) -> httpx2.Response:
    """A request to the endpoint: its 401 starts the flow, and its retry checks the token."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": LATEST_HANDSHAKE_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "taskorch", "version": "login"},
        },
    }
    headers = {
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": LATEST_HANDSHAKE_VERSION,
    }
    async with client.stream("POST", url, json=body, headers=headers) as response:
        await response.aread()
        session = response.headers.get("mcp-session-id")
    if session:
        # Leave no session behind on the server; failing to is harmless.
        try:
            await client.delete(url, headers={**headers, "mcp-session-id": session})
        except httpx2.HTTPError:
            pass
    return response


async def login(
    server: str,
    url: str,
    auth: AuthorizationCodeAuth,
    store: TokenStore,
    *,
    show_url: Callable[[str], Awaitable[None] | None],
    timeout_s: float = 300.0,
) -> None:
    """Log in to `server` at `url` and store its tokens in `store`.

    Args:
        server: The server's configured name.
        url: Its MCP endpoint.
        auth: Its `auth` settings (authorization code).
        store: Where its tokens go.
        show_url: Called with the URL the person opens in a browser.
        timeout_s: How long to wait for the browser's redirect.

    Raises:
        LoginError: The server or the authorization server refused, the person
            refused, or nothing came back within `timeout_s`.
    """
    callback = _Callback()
    try:
        listener = await anyio.create_tcp_listener(
            local_host="127.0.0.1", local_port=auth.callback_port
        )
    except OSError as exc:
        raise LoginError(
            f"cannot listen on 127.0.0.1:{auth.callback_port} for the browser's redirect: "
            f"{exc.strerror or exc}; choose another auth.callback_port"
        ) from None
    try:
        async with listener, anyio.create_task_group() as tg:
            callback.port = listener.extra(anyio.abc.SocketAttribute.local_port)
            tg.start_soon(listener.serve, lambda s: _handle(s, callback, server))
            try:
                await _login(server, url, auth, store, callback, show_url, timeout_s)
            finally:
                tg.cancel_scope.cancel()
    except ExceptionGroup as group:
        leaves = leaf_exceptions(group)
        if len(leaves) == 1 and isinstance(leaves[0], LoginError):
            raise leaves[0] from None
        raise


async def _login(
    server: str,
    url: str,
    auth: AuthorizationCodeAuth,
    store: TokenStore,
    callback: _Callback,
    show_url: Callable[[str], Awaitable[None] | None],
    timeout_s: float,
) -> None:
    redirect = f"http://127.0.0.1:{callback.port}/callback"
    await _prepare_client(store, auth, redirect)
    store.clear_tokens()  # a login starts afresh: the flow only runs without a usable token

    async def redirect_handler(authorization_url: str) -> None:
        states = parse_qs(urlsplit(authorization_url).query).get("state")
        callback.state = states[0] if states else None
        shown = show_url(authorization_url)
        if shown is not None:
            await shown

    async def callback_handler() -> AuthorizationCodeResult:
        with anyio.move_on_after(timeout_s):
            await callback.done.wait()
        if callback.error is not None:
            raise LoginError(f"login to {server!r} failed: {callback.error}")
        if callback.result is None:
            raise LoginError(
                f"login to {server!r}: the browser did not come back within {timeout_s:g} s; "
                "run the command again and open the URL it prints"
            )
        return callback.result

    metadata = OAuthClientMetadata(
        redirect_uris=[AnyUrl(redirect)],
        client_name="taskorch",
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method="client_secret_post" if auth.client_secret else "none",
        scope=auth.scope,
    )
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=metadata,
        storage=store,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    try:
        async with httpx2.AsyncClient(auth=provider, timeout=30.0) as client:
            response = await _probe(client, url)
    except LoginError:
        raise
    except httpx2.HTTPError as exc:
        raise LoginError(f"login to {server!r}: cannot reach {url}: {exc}") from None
    except Exception as exc:  # the SDK's OAuth errors, and whatever a server's answer broke
        raise LoginError(f"login to {server!r} failed: {type(exc).__name__}: {exc}") from None
    tokens = store.tokens()
    if tokens is None and response.status_code < 400:
        raise LoginError(
            f"{url} did not ask for a login (it answered HTTP {response.status_code} without "
            f"a token): remove `auth` from the entry of {server!r}"
        )
    if tokens is None or response.status_code in (401, 403):
        raise LoginError(
            f"login to {server!r} failed: the server still refuses (HTTP "
            f"{response.status_code}) after the authorization server gave a token"
        )
    await _pin_issuer(server, auth, store, provider)


async def _pin_issuer(
    server: str, auth: AuthorizationCodeAuth, store: TokenStore, provider: OAuthClientProvider
) -> None:
    """Bind the stored client to the authorization server of this login.

    The SDK reuses a client registration (and its secret) with whatever
    authorization server the resource's metadata names, unless the
    registration records its issuer: then it drops the registration and the
    tokens instead, and only a new login helps.

    Raises:
        LoginError: A configured `client_id` was not the one used (the server's
            metadata named another authorization server than `auth.issuer`).
    """
    info = store.client_info()
    found = provider.context.oauth_metadata
    if auth.client_id is not None and (info is None or info.client_id != auth.client_id):
        store.clear_tokens()
        named = f" ({found.issuer})" if found is not None else ""
        raise LoginError(
            f"login to {server!r}: the server's metadata names another authorization "
            f"server{named} than auth.issuer ({auth.issuer}); check auth.issuer in the config"
        )
    if info is not None and info.issuer is None and found is not None:
        await store.set_client_info(info.model_copy(update={"issuer": str(found.issuer)}))


async def _prepare_client(store: TokenStore, auth: AuthorizationCodeAuth, redirect: str) -> None:
    """Set the client registration the flow uses: the configured client, or a fresh one."""
    if auth.client_id is not None:
        secret = auth.client_secret.get_secret_value() if auth.client_secret else None
        info: dict[str, Any] = {
            "client_id": auth.client_id,
            "client_secret": secret,
            "redirect_uris": [redirect],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "client_secret_post" if secret else "none",
            # The SDK sends these credentials to any authorization server when no issuer is
            # recorded; `_pin_issuer` records the login's when none is configured.
            "issuer": auth.issuer,
        }
        await store.set_client_info(OAuthClientInformationFull.model_validate(info))
        return
    known = store.client_info()
    if known is not None and redirect not in [str(u) for u in known.redirect_uris or ()]:
        # Registered for another callback port: register again rather than be refused.
        store.forget_client()
