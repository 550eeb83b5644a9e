"""Where the database is: a file path (SQLite) or a `postgresql://` URL, and opening it.

`locate()` reads the database setting (`--db`, `TASKORCH_DB`, the config's
`database`); `open_store()` opens the store it names. A URL is kept as a
`DatabaseUrl`, which never says its password: not in `str()`, `repr()`, a
config dump or a message.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from executor.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler
    from pydantic_core import CoreSchema

    from executor.store.base import OpenStore

__all__ = ["DatabaseUrl", "is_database_url", "locate", "open_store", "scrub_url", "url_secrets"]

POSTGRES_SCHEMES: Final = ("postgresql", "postgres")
"""URL schemes that name a PostgreSQL database (libpq's two spellings)."""

_SCHEME: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_HIDDEN: Final = "***"
_SECRET_PARAM: Final = re.compile(r"(?i)((?:^|[?&])(?:ssl)?password=)[^&#]*")


def is_database_url(value: str | os.PathLike[str]) -> bool:
    """Whether the setting is a URL (`scheme://...`) rather than a file path."""
    return isinstance(value, str) and _SCHEME.match(value) is not None


def scrub_url(url: str) -> str:
    """The URL with its password (and any `password=` parameter) replaced by `***`.

    It works on the text, not on a parse, so that a URL too malformed to parse
    (an unencoded `#` or `@` in the password) still loses the password: anything
    between the first `:` and the last `@` after the scheme goes.
    """
    scheme = _SCHEME.match(url)
    if scheme is None:
        return _HIDDEN
    head, rest = url[: scheme.end()], url[scheme.end() :]
    at = rest.rfind("@")
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        rest = (f"{user}:{_HIDDEN}" if colon else user) + rest[at:]
    return head + _SECRET_PARAM.sub(lambda m: m.group(1) + _HIDDEN, rest)


def url_secrets(url: str) -> list[str]:
    """The passwords a URL holds, as written: the one before `@`, and `password=` values.

    Read from the text as `scrub_url` reads it, so a URL too malformed to parse still
    gives them up (to be removed from whatever a driver quotes back).
    """
    scheme = _SCHEME.match(url)
    rest = url[scheme.end() :] if scheme else url
    found = [m.group(0)[len(m.group(1)) :] for m in _SECRET_PARAM.finditer(rest)]
    at = rest.rfind("@")
    if at >= 0:
        _, colon, password = rest[:at].partition(":")
        if colon:
            found.append(password)
    return [secret for secret in found if secret]


@dataclass(frozen=True, slots=True)
class DatabaseUrl:
    """A PostgreSQL database named by URL: `postgresql://user@host:port/dbname`.

    It says itself without its password (`str()`, `repr()`, pydantic dumps);
    only `secret()` gives the whole URL, for the driver.
    """

    _url: str = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> DatabaseUrl:
        """Check a `postgresql://` URL's shape.

        Raises:
            ConfigError: Another scheme, a bad port, or a URL that does not parse.
        """
        scheme = _SCHEME.match(text)
        name = scheme.group(1).lower() if scheme else ""
        if name not in POSTGRES_SCHEMES:
            raise ConfigError(
                f"database {scrub_url(text)!r}: unsupported URL scheme {name!r}; give a file "
                "path for SQLite, or a postgresql://user@host:port/dbname URL for PostgreSQL"
            )
        if "#" in text:
            raise ConfigError(
                f"database {scrub_url(text)!r}: a PostgreSQL URL has no '#' part (a '#' in "
                "the password must be written %23)"
            )
        try:
            urlsplit(text).port  # noqa: B018 - parsing the port is the check
        except ValueError:
            # Python's message quotes the text it read as a port: not said, it may be
            # a password.
            raise ConfigError(
                f"database {scrub_url(text)!r} is not a valid URL (its host or port does not "
                "parse); write it as postgresql://user:password@host:port/dbname, with "
                "special characters in the password %-encoded"
            ) from None
        return cls(text)

    def secret(self) -> str:
        """The whole URL, password included: for the driver, never for a message."""
        return self._url

    def __str__(self) -> str:
        return scrub_url(self._url)

    def __repr__(self) -> str:
        return f"DatabaseUrl({str(self)!r})"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        """Validate from a URL string; dump without the password."""
        from pydantic_core import core_schema

        def validate(value: Any) -> DatabaseUrl:
            if isinstance(value, DatabaseUrl):
                return value
            if isinstance(value, str):
                return cls.parse(value)
            raise ValueError("a database URL must be a string")

        return core_schema.no_info_plain_validator_function(
            validate, serialization=core_schema.plain_serializer_function_ser_schema(str)
        )


def locate(
    value: str | os.PathLike[str] | DatabaseUrl, base_dir: Path | None = None
) -> Path | DatabaseUrl:
    """Read a database setting: a `postgresql://` URL, else a file path.

    Args:
        value: The setting (`--db`, `TASKORCH_DB` or the config's `database`).
        base_dir: A relative path is taken relative to this directory (a config
            file's); `None` keeps it as given.

    Raises:
        ConfigError: A URL with another scheme, or one that does not parse.
    """
    if isinstance(value, DatabaseUrl):
        return value
    if is_database_url(value):
        assert isinstance(value, str)
        return DatabaseUrl.parse(value)
    path = Path(value).expanduser()
    return base_dir / path if base_dir is not None and not path.is_absolute() else path


async def open_store(location: str | os.PathLike[str] | DatabaseUrl) -> OpenStore:
    """Open (creating and migrating as needed) the store a database setting names.

    A `postgresql://` URL opens a `PostgresStore` (the `postgres` extra must be
    installed); anything else is an SQLite file.

    Raises:
        ConfigError: A URL that is not PostgreSQL's, or the driver is missing.
        SchemaTooNewError: The database was written by a newer taskorch.
        CorruptDatabaseError: The database is not a taskorch one, or is damaged.
        StoreError: The database cannot be reached, opened or written.
    """
    where = locate(location)
    if isinstance(where, DatabaseUrl):
        try:
            from executor.store.postgres import PostgresStore
        except ImportError as exc:
            if not (exc.name or "").startswith("psycopg"):
                raise
            raise ConfigError(
                f"database {where}: PostgreSQL support is not installed (no module "
                f"{exc.name!r}); install it with `pip install 'taskorch[postgres]'`"
            ) from None
        return await PostgresStore.open(where)
    from executor.store.sqlite import SqliteStore

    return await SqliteStore.open(where)
