"""A person's login (`executor.oauth.login`) against the test OAuth servers, in process.

The test plays the browser and, before it, a hostile local process: the
authorization server of tests/fixtures/oauth_server.py approves at once and
redirects to the login's callback listener on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import httpx2
import pytest
from pydantic import SecretStr

from executor.errors import LoginError
from executor.oauth.config import AuthorizationCodeAuth
from executor.oauth.login import login
from executor.oauth.store import TokenStore
from executor.oauth.transport import oauth_transport
from tests.e2e.test_oauth import oauth_servers

pytestmark = pytest.mark.anyio

HOSTILE = "<script>alert(1)</script>"


def _callback_of(authorization_url: str) -> tuple[str, str]:
    """The callback URL and the `state` an authorization URL carries."""
    query = parse_qs(urlsplit(authorization_url).query)
    return query["redirect_uri"][0], query["state"][0]


async def test_a_callback_with_another_state_is_refused_and_the_login_goes_on(
    tmp_path: Path,
) -> None:
    answers: list[httpx.Response] = []

    async def browser(authorization_url: str) -> None:
        callback, _ = _callback_of(authorization_url)
        async with httpx.AsyncClient(timeout=30) as client:
            # Another local process or web page tries to end (or hijack) the login.
            for query in (
                {"error": "access_denied", "error_description": HOSTILE, "state": "forged"},
                {"error": "access_denied", "error_description": HOSTILE},
                {"code": "stolen-code", "state": "forged"},
            ):
                answers.append(await client.get(f"{callback}?{urlencode(query)}"))
            # Then the person's browser, through the authorization server.
            answers.append(await client.get(authorization_url, follow_redirects=True))

    with oauth_servers() as (resource, _issuer):
        store = TokenStore(tmp_path / "oauth", "tracker", resource)
        await login("tracker", resource, AuthorizationCodeAuth(), store, show_url=browser)
    assert [a.status_code for a in answers] == [404, 404, 404, 200]
    assert all(HOSTILE not in a.text for a in answers)
    assert "logged in to tracker" in answers[-1].text
    assert store.tokens() is not None


async def test_a_refusal_is_shown_escaped(tmp_path: Path) -> None:
    answers: list[httpx.Response] = []

    async def browser(authorization_url: str) -> None:
        callback, state = _callback_of(authorization_url)
        query = {"error": "access_denied", "error_description": HOSTILE, "state": state}
        async with httpx.AsyncClient(timeout=30) as client:
            answers.append(await client.get(f"{callback}?{urlencode(query)}"))

    with oauth_servers() as (resource, _issuer):
        store = TokenStore(tmp_path / "oauth", "tracker", resource)
        with pytest.raises(LoginError, match="refused"):
            await login("tracker", resource, AuthorizationCodeAuth(), store, show_url=browser)
    assert answers[0].status_code == 200
    assert HOSTILE not in answers[0].text
    assert "&lt;script&gt;" in answers[0].text
    assert store.tokens() is None


HOSTILE_ISSUER = "http://hostile.invalid"
PING = {"jsonrpc": "2.0", "id": 1, "method": "ping"}


class _HostileMetadata(httpx2.AsyncBaseTransport):
    """The network, except that the resource's metadata now names another authorization server.

    That server answers its metadata and records every other request it gets.
    """

    def __init__(self, resource: str) -> None:
        self._real = httpx2.AsyncHTTPTransport()
        self._resource = resource
        self.hostile: list[bytes] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = str(request.url)
        if request.url.path.startswith("/.well-known/oauth-protected-resource"):
            body = {"resource": self._resource, "authorization_servers": [HOSTILE_ISSUER]}
            return httpx2.Response(200, json=body, request=request)
        if url.startswith(HOSTILE_ISSUER):
            if "/.well-known/" in url:
                metadata = {
                    "issuer": HOSTILE_ISSUER,
                    "authorization_endpoint": f"{HOSTILE_ISSUER}/authorize",
                    "token_endpoint": f"{HOSTILE_ISSUER}/token",
                    "registration_endpoint": f"{HOSTILE_ISSUER}/register",
                    "response_types_supported": ["code"],
                }
                return httpx2.Response(200, json=metadata, request=request)
            self.hostile.append(url.encode() + b" " + await request.aread())
            return httpx2.Response(400, json={"error": "invalid_grant"}, request=request)
        return await self._real.handle_async_request(request)

    async def aclose(self) -> None:
        await self._real.aclose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _control(issuer: str, what: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        (await client.post(f"{issuer}/control/{what}")).raise_for_status()


async def _follow(authorization_url: str) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        page = await client.get(authorization_url, follow_redirects=True)
    assert "logged in to tracker" in page.text


async def test_a_configured_client_secret_goes_only_to_the_issuer_of_the_login(
    tmp_path: Path,
) -> None:
    port = _free_port()
    with oauth_servers() as (resource, issuer):
        # A client registered beforehand, with a secret, for a fixed callback port.
        async with httpx.AsyncClient(timeout=10) as plain:
            answer = await plain.post(
                f"{issuer}/register",
                json={
                    "redirect_uris": [f"http://127.0.0.1:{port}/callback"],
                    "grant_types": ["authorization_code", "refresh_token"],
                    "response_types": ["code"],
                    "token_endpoint_auth_method": "client_secret_post",
                },
            )
        registered = answer.json()
        secret = registered["client_secret"]
        auth = AuthorizationCodeAuth(
            client_id=registered["client_id"],
            client_secret=SecretStr(secret),
            callback_port=port,
        )
        store = TokenStore(tmp_path / "oauth", "tracker", resource)
        await login("tracker", resource, auth, store, show_url=_follow)
        tokens = store.tokens()
        assert tokens is not None and tokens.refresh_token
        await _control(issuer, "expire")

        network = _HostileMetadata(resource)
        transport = oauth_transport(network, server="tracker", url=resource, auth=auth, store=store)
        async with httpx2.AsyncClient(transport=transport, timeout=30) as client:
            response = await client.post(
                resource, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}
            )
    sent = b"\n".join(network.hostile)
    assert secret.encode() not in sent
    assert tokens.refresh_token.encode() not in sent
    assert response.status_code == 401
    assert "taskorch auth login tracker" in response.json()["error_description"]


class _Recording(httpx2.AsyncBaseTransport):
    """The network, recording what each request sent."""

    def __init__(self) -> None:
        self._real = httpx2.AsyncHTTPTransport()
        self.sent: list[tuple[str, bytes]] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        self.sent.append((str(request.url), body + str(request.headers).encode()))
        return await self._real.handle_async_request(request)

    async def aclose(self) -> None:
        await self._real.aclose()


async def test_an_expired_token_is_not_refreshed_at_the_resource_itself(tmp_path: Path) -> None:
    with oauth_servers() as (resource, issuer):
        store = TokenStore(tmp_path / "oauth", "tracker", resource)
        auth = AuthorizationCodeAuth()
        await login("tracker", resource, auth, store, show_url=_follow)
        tokens = store.tokens()
        assert tokens is not None and tokens.refresh_token
        await _control(issuer, "expire")
        record = json.loads(store.path.read_text())
        record["expires_at"] = 1.0  # expired: a process that starts now refreshes it
        store.path.write_text(json.dumps(record))

        network = _Recording()
        transport = oauth_transport(network, server="tracker", url=resource, auth=auth, store=store)
        async with httpx2.AsyncClient(transport=transport, timeout=30) as client:
            await client.post(resource, json=PING)
        async with httpx.AsyncClient(timeout=10) as plain:
            grants = (await plain.get(f"{issuer}/control/stats")).json()["grants"]
    origin = resource.removesuffix("/mcp")
    to_resource = [body for url, body in network.sent if url.startswith(origin)]
    assert all(tokens.refresh_token.encode() not in body for body in to_resource)
    assert grants.get("refresh_token") == 1  # refreshed at the authorization server instead


async def test_a_login_elsewhere_than_the_configured_issuer_fails_and_keeps_no_token(
    tmp_path: Path,
) -> None:
    with oauth_servers() as (resource, _issuer):
        auth = AuthorizationCodeAuth(
            client_id="preregistered",
            client_secret=SecretStr("preregistered-secret"),
            issuer="https://login.example",
        )
        store = TokenStore(tmp_path / "oauth", "tracker", resource)
        with pytest.raises(LoginError, match=r"auth\.issuer") as caught:
            await login("tracker", resource, auth, store, show_url=_follow)
    assert "preregistered-secret" not in str(caught.value)
    assert store.tokens() is None
