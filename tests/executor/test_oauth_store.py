"""The OAuth token files: owner-only, bound to a URL, written whole, tokens scrubbed everywhere."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from executor.downstream.redact import REDACTED, Scrubber
from executor.oauth.store import TokenStore, default_token_dir

pytestmark = pytest.mark.anyio

URL = "https://tracker.example/mcp"
posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


def _token(
    access: str, refresh: str | None = "refresh-token-one", expires_in: int = 60
) -> OAuthToken:
    return OAuthToken(access_token=access, refresh_token=refresh, expires_in=expires_in)


@posix_only
async def test_files_are_for_their_owner_only(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "oauth", "tracker", URL)
    await store.set_tokens(_token("access-token-one"))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    assert [p.name for p in store.path.parent.iterdir()] == [store.path.name]  # no temp file left
    store.path.chmod(0o644)  # loosened by hand: narrowed again when read
    assert store.tokens() is not None
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


async def test_tokens_belong_to_one_url_and_name(tmp_path: Path) -> None:
    store = TokenStore(tmp_path, "tracker", URL)
    await store.set_tokens(_token("access-token-one"))
    await store.set_client_info(
        OAuthClientInformationFull(
            client_id="c1", redirect_uris=None, token_endpoint_auth_method="none"
        )
    )
    # Another URL under the same name (a config edited to point elsewhere) gets nothing.
    assert TokenStore(tmp_path, "tracker", "https://evil.example/mcp").tokens() is None
    assert TokenStore(tmp_path, "other", URL).tokens() is None
    again = TokenStore(tmp_path, "tracker", URL)
    tokens = again.tokens()
    assert tokens is not None and tokens.access_token == "access-token-one"
    info = again.client_info()
    assert info is not None and info.client_id == "c1"
    expires = again.expires_at()
    assert expires is not None
    again.clear_tokens()
    assert again.tokens() is None and again.client_info() is not None
    assert again.remove() and not again.remove()


async def test_a_refresh_without_a_new_refresh_token_keeps_the_old_one(tmp_path: Path) -> None:
    store = TokenStore(tmp_path, "tracker", URL)
    await store.set_tokens(_token("access-token-one", "refresh-token-kept"))
    await store.set_tokens(_token("access-token-two", None))
    tokens = store.tokens()
    assert tokens is not None
    assert (tokens.access_token, tokens.refresh_token) == ("access-token-two", "refresh-token-kept")


async def test_another_process_writing_the_file_is_noticed(tmp_path: Path) -> None:
    store = TokenStore(tmp_path, "tracker", URL)
    assert not store.changed()
    other = TokenStore(tmp_path, "tracker", URL)
    await other.set_tokens(_token("access-token-one"))
    assert store.changed()
    store.tokens()
    assert not store.changed()


async def test_a_damaged_file_is_ignored_not_fatal(tmp_path: Path) -> None:
    store = TokenStore(tmp_path, "tracker", URL)
    store.path.write_text("{not json")
    assert store.tokens() is None
    store.path.write_text(json.dumps({"url": URL, "tokens": {"nope": 1}}))
    assert store.tokens() is None


async def test_tokens_are_scrubbed_by_every_scrubber_once_seen(tmp_path: Path) -> None:
    made_before = Scrubber.for_servers([], extra=["configured-secret-1"])
    store = TokenStore(tmp_path, "tracker", URL)
    await store.set_tokens(_token("fresh-access-token-abc", "fresh-refresh-token-xyz"))
    text = "echo: fresh-access-token-abc and Bearer fresh-refresh-token-xyz, configured-secret-1"
    assert made_before.text(text) == f"echo: {REDACTED} and Bearer {REDACTED}, {REDACTED}"
    made_after = Scrubber(learned=True)
    assert made_after.text("fresh-access-token-abc") == REDACTED
    assert made_after.longest >= len("fresh-refresh-token-xyz")
    # A scrubber for its own secrets only is left alone.
    assert Scrubber().text("fresh-access-token-abc") == "fresh-access-token-abc"


def test_the_directory_is_named_by_the_environment(tmp_path: Path) -> None:
    assert default_token_dir({"TASKORCH_OAUTH_DIR": str(tmp_path)}) == tmp_path
    assert default_token_dir({}).name == "oauth"


OTHER_UID = 65534  # "nobody": the tests run as root, which may give a file away


@posix_only
async def test_a_planted_symlink_at_a_temporary_name_is_not_followed(tmp_path: Path) -> None:
    directory = tmp_path / "oauth"
    directory.mkdir(mode=0o700)
    store = TokenStore(directory, "tracker", URL)
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    # The name the temporary file used to have, predictable from the pid.
    (directory / f".{store.path.name}.{os.getpid()}.tmp").symlink_to(victim)
    await store.set_tokens(_token("access-token-planted"))
    assert victim.read_text() == "untouched"
    assert not store.path.is_symlink()
    tokens = store.tokens()
    assert tokens is not None and tokens.access_token == "access-token-planted"


@posix_only
@pytest.mark.parametrize("unsafe", ["symlink", "group-writable", "other-writable", "not-owned"])
async def test_an_unsafe_token_directory_is_refused_with_what_to_do(
    tmp_path: Path, unsafe: str
) -> None:
    directory = tmp_path / "oauth"
    if unsafe == "symlink":
        real = tmp_path / "real"
        real.mkdir(mode=0o700)
        directory.symlink_to(real)
    else:
        directory.mkdir(mode=0o700)
        if unsafe == "group-writable":
            directory.chmod(0o770)
        elif unsafe == "other-writable":
            directory.chmod(0o703)
        else:
            os.chown(directory, OTHER_UID, -1)
    store = TokenStore(directory, "tracker", URL)
    with pytest.raises(PermissionError) as caught:
        await store.set_tokens(_token("access-token-refused"))
    said = str(caught.value)
    assert str(directory) in said
    assert "TASKORCH_OAUTH_DIR" in said
    assert "access-token-refused" not in said
    assert list(directory.iterdir()) == []


@posix_only
async def test_a_token_file_owned_by_another_user_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = TokenStore(tmp_path / "oauth", "tracker", URL)
    await store.set_tokens(_token("access-token-theirs"))
    os.chown(store.path, OTHER_UID, -1)
    store.path.chmod(0o644)
    assert store.tokens() is None
    assert str(store.path) in caplog.text and "owned by" in caplog.text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o644  # not theirs to change
    assert "access-token-theirs" not in caplog.text


@posix_only
async def test_a_file_that_cannot_be_narrowed_is_still_read_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = TokenStore(tmp_path / "oauth", "tracker", URL)
    await store.set_tokens(_token("access-token-one"))
    store.path.chmod(0o644)

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refuse)
    monkeypatch.setattr(os, "fchmod", refuse)
    assert store.tokens() is not None
    assert "readable by other users" in caplog.text
