"""What PostgreSQL's failures become: taskorch errors that name the database, never its password."""

from __future__ import annotations

import psycopg
from psycopg import errors

from executor.errors import StoreError
from executor.store.location import DatabaseUrl, url_secrets

__all__ = ["scrubbed", "store_error"]


def scrubbed(text: str, url: DatabaseUrl) -> str:
    """`text` without the URL's passwords, should a driver message have quoted one.

    Both the one before `@` and any `password=` / `sslpassword=` parameter, as written
    and decoded. (One or two characters are left: removing them would garble the text.)
    """
    from urllib.parse import unquote

    for secret in url_secrets(url.secret()):
        for form in sorted({secret, unquote(secret)}, key=len, reverse=True):
            if len(form) >= 3:
                text = text.replace(form, "***")
    return text


def store_error(url: DatabaseUrl, exc: psycopg.Error) -> StoreError:
    """A driver error as a `StoreError` that names the database and says what to do."""
    message = str(exc).strip() or type(exc).__name__
    if isinstance(exc, errors.InsufficientPrivilege):
        hint = "grant the database user the rights taskorch needs (it creates its tables)"
    elif isinstance(exc, psycopg.OperationalError):
        hint = "check that the server runs, and the URL (host, port, user, password)"
    elif isinstance(exc, errors.DeadlockDetected | errors.SerializationFailure):
        hint = "a conflict with another writer; try again"
    else:
        hint = "see the server's message"
    return StoreError(scrubbed(f"database {url}: {message} ({hint})", url))
