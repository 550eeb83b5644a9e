"""OAuth tokens on disk: one file per server, readable by its owner only, outside the plan database.

The directory is `$TASKORCH_OAUTH_DIR`, else `oauth/` in taskorch's user data
directory. Each server's file is named after the server and a hash of its URL,
so a token is never sent to another URL that took the same name. Files are
written whole (a temporary file, then a rename) with mode 0600, in a directory
made with mode 0700; a file found readable by others is narrowed back to 0600
with a warning. A token directory that is a symlink, belongs to another user
or is writable by others is refused, and a token file that belongs to another
user is ignored with a warning. (On Windows the modes and owners are not
checked: the files rely on the user profile's own permissions.)

`TokenStore` is the SDK's `TokenStorage` for one server. Every token it reads
or writes is given to `Scrubber.learn`, so no token reaches logs or answers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import platformdirs
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import ValidationError

from executor.downstream.redact import Scrubber

__all__ = ["TOKEN_DIR_ENV_VAR", "TokenStore", "default_token_dir"]

logger = logging.getLogger(__name__)

TOKEN_DIR_ENV_VAR = "TASKORCH_OAUTH_DIR"
"""Environment variable naming the directory of the token files."""
_FORMAT = 1
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def default_token_dir(env: Mapping[str, str] | None = None) -> Path:
    """`$TASKORCH_OAUTH_DIR`, else `oauth/` in taskorch's user data directory."""
    environ = os.environ if env is None else env
    named = environ.get(TOKEN_DIR_ENV_VAR)
    if named:
        return Path(named).expanduser()
    return Path(platformdirs.user_data_dir("taskorch")) / "oauth"


def _file_name(server: str, url: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", server)[:64]
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return f"{safe}-{digest}.json"


def _check_directory(directory: Path) -> None:
    """Refuse a token directory that someone else could write into or swap (POSIX only).

    Raises:
        PermissionError: `directory` is a symlink, is not owned by the current
            user, or is writable by its group or by others; the message says
            what to do.
    """
    if os.name != "posix":
        return
    info = directory.lstat()
    if stat.S_ISLNK(info.st_mode):
        why = "is a symlink"
    elif not stat.S_ISDIR(info.st_mode):
        why = "is not a directory"
    elif info.st_uid != os.geteuid():
        why = f"is owned by another user (uid {info.st_uid})"
    elif stat.S_IMODE(info.st_mode) & 0o022:
        why = f"is writable by other users (mode {stat.S_IMODE(info.st_mode):o})"
    else:
        return
    raise PermissionError(
        f"the OAuth token directory {directory} {why}, so tokens are not written there: "
        f"make it a directory of your own with `chmod 700 {directory}`, or set "
        f"{TOKEN_DIR_ENV_VAR} to another directory"
    )


class TokenStore:
    """One server's tokens and client registration, in its own file (see the module docstring)."""

    def __init__(self, directory: Path, server: str, url: str) -> None:
        """The store of `server` at `url` under `directory` (nothing is read or made yet)."""
        self.server = server
        self.url = url
        self.path = directory / _file_name(server, url)
        """The file."""
        self._seen: tuple[int, int] | None = None

    # --- the file -------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        try:
            fd = os.open(self.path, os.O_RDONLY | _NOFOLLOW)
        except FileNotFoundError:
            self._seen = None
            return {}
        except OSError as exc:  # a symlink (refused by O_NOFOLLOW), or unreadable
            self._seen = None
            logger.warning(
                "%s cannot be read (%s); ignoring it (log in again)", self.path, exc.strerror
            )
            return {}
        with os.fdopen(fd, "r", encoding="utf-8") as file:
            info = os.fstat(fd)
            if os.name == "posix" and info.st_uid != os.geteuid():
                self._seen = None
                logger.warning(
                    "%s is owned by another user (uid %d); ignoring it: delete it, then log in "
                    "again",
                    self.path,
                    info.st_uid,
                )
                return {}
            if os.name == "posix" and stat.S_IMODE(info.st_mode) & 0o077:
                logger.warning(
                    "%s was readable by other users; making it readable by its owner only",
                    self.path,
                )
                try:
                    os.fchmod(fd, 0o600)
                except OSError as exc:
                    logger.warning(
                        "%s could not be made private (%s): run `chmod 600 %s`",
                        self.path,
                        exc.strerror,
                        self.path,
                    )
            text = file.read()
        self._seen = (info.st_mtime_ns, info.st_size)
        try:
            data = json.loads(text)
        except ValueError:
            logger.warning("%s is not valid JSON; ignoring it (log in again)", self.path)
            return {}
        if not isinstance(data, dict) or data.get("url") != self.url:
            return {}
        return data

    def _write(self, data: dict[str, Any]) -> None:
        directory = self.path.parent
        if not directory.exists() and not directory.is_symlink():
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_directory(directory)
        data = {"format": _FORMAT, "server": self.server, "url": self.url, **data}
        # A fresh, unpredictable name, created exclusively with mode 0600.
        fd, name = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        info = self.path.stat()
        self._seen = (info.st_mtime_ns, info.st_size)

    def changed(self) -> bool:
        """Whether the file changed since this store last read or wrote it (another process)."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return self._seen is not None
        return (info.st_mtime_ns, info.st_size) != self._seen

    # --- what it holds --------------------------------------------------------------------

    def tokens(self) -> OAuthToken | None:
        """The stored tokens, if any (learned by the scrubber)."""
        raw = self._read().get("tokens")
        if raw is None:
            return None
        try:
            tokens = OAuthToken.model_validate(raw)
        except ValidationError:
            logger.warning("%s holds tokens taskorch cannot read; log in again", self.path)
            return None
        Scrubber.learn(tokens.access_token, tokens.refresh_token or "")
        return tokens

    def expires_at(self) -> float | None:
        """When the stored access token expires (seconds since the epoch), if known."""
        value = self._read().get("expires_at")
        return float(value) if isinstance(value, int | float) else None

    def client_info(self) -> OAuthClientInformationFull | None:
        """The stored client registration, if any."""
        raw = self._read().get("client_info")
        if raw is None:
            return None
        try:
            info = OAuthClientInformationFull.model_validate(raw)
        except ValidationError:
            return None
        if info.client_secret:
            Scrubber.learn(info.client_secret)
        return info

    def clear_tokens(self) -> None:
        """Forget the tokens, keeping the client registration."""
        data = self._read()
        if "tokens" in data or "expires_at" in data:
            self._write({k: v for k, v in data.items() if k not in ("tokens", "expires_at")})

    def forget_client(self) -> None:
        """Forget the client registration (the next login registers again)."""
        data = self._read()
        if "client_info" in data:
            self._write({k: v for k, v in data.items() if k != "client_info"})

    def remove(self) -> bool:
        """Delete the file; whether there was one."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        self._seen = None
        return True

    # --- the SDK's TokenStorage -----------------------------------------------------------

    async def get_tokens(self) -> OAuthToken | None:
        """The stored tokens."""
        return self.tokens()

    async def set_tokens(self, tokens: OAuthToken) -> None:
        """Store new tokens; a refresh that names no new refresh token keeps the old one."""
        data = self._read()
        old = data.get("tokens")
        if tokens.refresh_token is None and isinstance(old, dict) and old.get("refresh_token"):
            tokens = tokens.model_copy(update={"refresh_token": old["refresh_token"]})
        Scrubber.learn(tokens.access_token, tokens.refresh_token or "")
        expires_at = time.time() + tokens.expires_in if tokens.expires_in is not None else None
        data.update(tokens=tokens.model_dump(mode="json", exclude_none=True), expires_at=expires_at)
        self._write(data)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        """The stored client registration."""
        return self.client_info()

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        """Store a client registration."""
        if client_info.client_secret:
            Scrubber.learn(client_info.client_secret)
        data = self._read()
        data["client_info"] = client_info.model_dump(mode="json", exclude_none=True)
        self._write(data)
