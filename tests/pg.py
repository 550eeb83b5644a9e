"""A throwaway PostgreSQL server for the tests and the benchmarks.

`initdb` into a temporary directory, then `pg_ctl start` on a free port of
127.0.0.1 (no Unix socket), with a password for the superuser; `stop()` ends
it and deletes the directory. PostgreSQL refuses to run as root: as root the
server runs as the `postgres` user that Debian's package creates. Nothing here
depends on a server started by hand. `make test` installs the package when the
machine has none (as root; else it says what to install).
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Final

__all__ = ["INSTALL_HINT", "PgServer", "find_bindir", "running_server"]

INSTALL_HINT: Final = (
    "PostgreSQL is not installed: install Debian's `postgresql` package "
    "(`apt-get install postgresql`, which `make test` does when run as root), or set "
    "TASKORCH_PG_BINDIR to the directory holding initdb and pg_ctl"
)

_SERVICE_USER: Final = "postgres"
"""The account the server runs as when this process is root."""


def find_bindir() -> Path | None:
    """The directory holding `initdb` and `pg_ctl`: $TASKORCH_PG_BINDIR, Debian's, or PATH's."""
    named = os.environ.get("TASKORCH_PG_BINDIR")
    candidates: list[Path] = [Path(named)] if named else []
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = sorted(
            (p for p in debian.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
        )
        candidates += [v / "bin" for v in reversed(versions)]
    found = shutil.which("initdb")
    if found:
        candidates.append(Path(found).resolve().parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PgServer:
    """One PostgreSQL cluster in a temporary directory (see the module docs).

    Attributes:
        port: The TCP port on 127.0.0.1.
        user: The superuser's name.
        password: The superuser's password.
    """

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        """Prepare; `start()` creates and starts the cluster.

        Args:
            bindir: Where `initdb` and `pg_ctl` are.
            durable: Keep PostgreSQL's crash-safety settings (for benchmarks); else
                fsync is off, which suits a cluster thrown away after the tests.
        """
        self._bindir = bindir
        self._durable = durable
        self._as_service_user = os.geteuid() == 0
        self._root = Path(tempfile.mkdtemp(prefix="taskorch-pg-"))
        self._data = self._root / "data"
        self.user = "taskorch"
        self.password = secrets.token_urlsafe(12)
        self.port = 0
        self._started = False

    def url(self, dbname: str = "postgres", *, password: bool = True) -> str:
        """The URL of database `dbname` on this server (with the password unless told not)."""
        auth = f"{self.user}:{self.password}" if password else self.user
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *argv: str, timeout: float = 120) -> None:
        """Run one of the server's programs, as the service user when this is root."""
        command = [str(self._bindir / argv[0]), *argv[1:]]
        if self._as_service_user:
            command = ["su", _SERVICE_USER, "-s", "/bin/sh", "-c", shlex.join(command)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            said = done.stderr.strip() or done.stdout.strip()
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {said}")

    def start(self) -> None:
        """Create the cluster and start it on a free port (a few tries, in case of a race)."""
        self._root.chmod(0o755)
        pwfile = self._root / "pw"
        pwfile.write_text(self.password + "\n", encoding="utf-8")
        if self._as_service_user:
            shutil.chown(self._root, user=_SERVICE_USER)
            shutil.chown(pwfile, user=_SERVICE_USER)
        self._run(
            "initdb",
            "-D",
            str(self._data),
            "-U",
            self.user,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        pwfile.unlink()
        settings = [
            "listen_addresses = '127.0.0.1'",
            "unix_socket_directories = ''",
            "max_connections = 200",
            "log_min_messages = warning",
        ]
        if not self._durable:
            settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        with (self._data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n".join(settings) + "\n")
        last: Exception | None = None
        for _ in range(3):
            self.port = _free_port()
            try:
                self._run(
                    "pg_ctl",
                    "start",
                    "-w",
                    "-t",
                    "60",
                    "-D",
                    str(self._data),
                    "-l",
                    str(self._root / "server.log"),
                    "-o",
                    f"-p {self.port}",
                )
            except RuntimeError as exc:
                last = exc
                continue
            self._started = True
            return
        log = self._root / "server.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {last}\n{tail}")

    def stop(self) -> None:
        """Stop the server (at once) and delete its directory."""
        if self._started:
            with suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "stop", "-D", str(self._data), "-m", "immediate", "-w")
            self._started = False
        shutil.rmtree(self._root, ignore_errors=True)

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        """Run one statement outside a transaction (CREATE DATABASE, say), as the superuser."""
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            conn.execute(sql.encode())

    def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending the sessions still connected to it."""
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def running_server(*, durable: bool = False) -> Iterator[PgServer]:
    """A started `PgServer`, stopped and deleted on exit.

    Raises:
        RuntimeError: PostgreSQL is not installed (the message says what to install),
            or it would not start.
    """
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError(INSTALL_HINT)
    server = PgServer(bindir, durable=durable)
    try:
        server.start()
        yield server
    finally:
        server.stop()
