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
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Protocol, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from executor.errors import ConfigError
from executor.store.base import Store

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler
    from pydantic_core import CoreSchema

__all__ = ["DatabaseUrl", "OpenStore", "is_database_url", "locate", "open_store", "scrub_url"]

POSTGRES_SCHEMES: Final = ("postgresql", "postgres")
"""URL schemes that name a PostgreSQL database (libpq's two spellings)."""

_SCHEME: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_HIDDEN: Final = "***"
_SECRET_PARAMS: Final = frozenset({"password", "sslpassword"})


def is_database_url(value: str | os.PathLike[str]) -> bool:
    """Whether the setting is a URL (`scheme://...`) rather than a file path."""
    return isinstance(value, str) and _SCHEME.match(value) is not None


def scrub_url(url: str) -> str:
    """The URL with its password (and any `password=` parameter) replaced by `***`."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, colon, _ = userinfo.partition(":")
            netloc = f"{user}:{_HIDDEN}@{hostport}" if colon else f"{user}@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode(
                [(k, _HIDDEN if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*"
            )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        # Not even a URL: say nothing of it that could hold a secret.
        scheme = _SCHEME.match(url)
        return f"{scheme.group(1)}://{_HIDDEN}" if scheme else _HIDDEN


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
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - parsing the port is the check
        except ValueError as exc:
            raise ConfigError(
                f"database {scrub_url(text)!r} is not a valid URL ({exc}); write it as "
                "postgresql://user@host:port/dbname"
            ) from None
        if parts.fragment:
            raise ConfigError(
                f"database {scrub_url(text)!r}: a PostgreSQL URL has no '#' part (a '#' in "
                "the password must be written %23)"
            )
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


class OpenStore(Store, Protocol):
    """An open store, closed on leaving `async with`."""

    async def __aenter__(self) -> Self:
        """Return the store itself."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store."""
        ...


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
