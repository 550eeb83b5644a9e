"""The installed taskorch distribution's version: what `--version` and `serverInfo` say."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["installed_version"]


def installed_version() -> str:
    """The installed distribution's version, or `0+unknown` when it is not installed."""
    try:
        return version("taskorch")
    except PackageNotFoundError:
        return "0+unknown"
