"""Planner test setup: the network guard, the scripted model server, example catalogs.

The guard: while a planner test runs, every DNS lookup of a name other than
`localhost` and every connection to an address other than loopback is refused
*and recorded*; a test that tried one fails at teardown, even if the code under
test swallowed the error (a planner maps connection errors to `PlannerError`,
which a test may well expect). So no test can reach a real model provider.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from executor.catalog import Catalog, ToolAnnotations, ToolInfo
from tests.planner.fake_openai import FakeOpenAI

_LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def _is_local_host(host: object) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    if host in _LOCAL_NAMES or host == "":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class NetworkGuard:
    """Records and refuses every attempt to leave the machine."""

    def __init__(self) -> None:
        self.violations: list[str] = []

    def check_address(self, family: int, address: Any) -> None:
        if family == getattr(socket, "AF_UNIX", None):
            return
        host = address[0] if isinstance(address, tuple) and address else address
        if not _is_local_host(host):
            self.violations.append(f"connection to {address!r}")
            raise OSError(f"test guard: connection to {address!r} refused (not loopback)")

    def check_name(self, host: object) -> None:
        if not _is_local_host(host):
            self.violations.append(f"DNS lookup of {host!r}")
            raise OSError(f"test guard: DNS lookup of {host!r} refused (not loopback)")


@pytest.fixture(autouse=True)
def network_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetworkGuard]:
    """Refuse non-loopback traffic during the test and fail the test if any was tried."""
    guard = NetworkGuard()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> None:
        guard.check_address(self.family, address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        guard.check_address(self.family, address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        guard.check_name(host)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield guard
    if guard.violations:
        pytest.fail(
            "the test tried to reach the network (only loopback is allowed): "
            + "; ".join(guard.violations),
            pytrace=False,
        )


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A scripted OpenAI-compatible server on 127.0.0.1; every answer must be used."""
    with FakeOpenAI() as server:
        yield server
    assert not server.unexpected, server.unexpected


def _tool(
    server: str,
    name: str,
    description: str,
    properties: dict[str, Any],
    required: list[str],
    *,
    read_only: bool = True,
) -> ToolInfo:
    return ToolInfo(
        server=server,
        name=name,
        description=description,
        input_schema={
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        },
        annotations=ToolAnnotations(read_only=read_only, destructive=not read_only),
    )


def example_tools() -> list[ToolInfo]:
    """A handful of tools like the example servers'."""
    s = {"type": "string"}
    return [
        _tool(
            "time",
            "get_current_time",
            "Get the current time in a timezone.",
            {"timezone": {**s, "description": "IANA timezone name, e.g. Europe/Paris"}},
            ["timezone"],
        ),
        _tool(
            "time",
            "convert_time",
            "Convert a time between timezones.",
            {"source_timezone": s, "time": {**s, "description": "HH:MM"}, "target_timezone": s},
            ["source_timezone", "time", "target_timezone"],
        ),
        _tool(
            "math",
            "add",
            "Add two integers.",
            {"a": {"type": "integer"}, "b": {"type": "integer"}},
            ["a", "b"],
        ),
        _tool(
            "notes",
            "write_note",
            "Save a note with a title and a body.",
            {"title": s, "body": s},
            ["title", "body"],
            read_only=False,
        ),
        _tool(
            "web",
            "fetch",
            "Fetch a URL and return its text.",
            {"url": s, "max_length": {"type": "integer", "minimum": 1}},
            ["url"],
        ),
    ]


@pytest.fixture
def catalog() -> Catalog:
    """The example catalog."""
    return Catalog(example_tools())
