"""Who runs a plan, and this process's hold on its runs: owner ids, `RunOwner`, the keeper.

Each scheduler has a unique owner id (machine, pid, process start time, random
token), and every run it executes is held by a lease in the store: an owner
and an expiry, renewed every `lease_s / 3` while the run goes on here. A run
whose lease is gone (another process took it over) is told so and stops,
writing nothing more. A lease is time by the store's clock (with SQLite, each
process's own: processes sharing a database should have clocks in step to well
within `lease_s`); an event loop blocked longer than `lease_s` may lose its
runs to another process.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import anyio
import psutil

from executor.ids import PlanId
from executor.status import PlanStatus
from executor.store.base import ExpectedPlanStatus, LeaseInfo, RunKey, RunLease, Store

__all__ = ["LeaseKeeper", "RunOwner", "machine_id", "new_owner_id", "run_owner"]

logger = logging.getLogger(__name__)

_STOP_UNRENEWED = 0.8
"""Runs here stop when no renewal went through for this part of a lease."""


@dataclass(frozen=True, slots=True)
class RunOwner:
    """Who runs an `executing` plan version, and whether it still can (see the module docs).

    Attributes:
        plan_id: The plan.
        version: The plan version.
        owner: The owner's id; `None` when nobody holds the run (it was let go).
        host: The owner's machine, when its id says.
        pid: The owner's process id on that machine, when its id says.
        alive: Whether that process still runs; known on this machine only
            (`None` elsewhere: the lease decides).
        lease_until: When the owner's claim lapses unless renewed.
        lapsed: Whether it has lapsed.
        here: Whether the owner is the scheduler asking.
    """

    plan_id: PlanId
    version: int
    owner: str | None
    host: str | None
    pid: int | None
    alive: bool | None
    lease_until: datetime | None
    lapsed: bool
    here: bool

    @property
    def holds(self) -> bool:
        """Whether a live owner holds the run, so that no other process may take it."""
        return self.owner is not None and self.alive is not False and not self.lapsed

    @property
    def gone(self) -> bool:
        """Whether the owner is a process on this machine that has ended."""
        return self.owner is not None and self.alive is False

    def describe(self) -> str:
        """Say who runs the plan, and whether it still does, in a clause."""
        if self.owner is None:
            return "nobody runs it (the process that ran it let it go)"
        if self.here:
            return "this process runs it"
        who = (
            f"process {self.pid} on {self.host}"
            if self.pid is not None
            else f"owner {self.owner!r}"
        )
        until = "" if self.lease_until is None else f"{self.lease_until:%H:%M:%S} UTC"
        if self.alive is False:
            return f"{who} ran it and is no longer running"
        if self.lapsed:
            return f"{who} ran it but has not renewed its lease since {until}"
        if self.alive:
            return f"{who} runs it and is alive (its lease holds until {until})"
        return (
            f"{who} runs it (another machine: it holds the run while it renews its "
            f"lease, now until {until})"
        )


def _process_start(pid: int) -> str:
    """When process `pid` started, as text; tells it from a later process given its pid."""
    return f"{psutil.Process(pid).create_time():.3f}"


@functools.cache
def machine_id() -> str:
    """Where this process runs, as owner ids say it: host name, and boot and pid namespace.

    On Linux the host name is followed by a digest of the boot id and of the
    process's pid namespace. Two containers that share a host name (host
    networking) each number their processes from 1, and cloned machines may share
    one: a pid is looked at only where it means the same process.
    """
    host = socket.gethostname()
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return host
    digest = hashlib.sha256(f"{boot}/{namespace}".encode()).hexdigest()[:8]
    return f"{host}~{digest}"


def new_owner_id() -> str:
    """A lease owner id unique to this scheduler: machine, process, process start, token."""
    pid = os.getpid()
    return f"{machine_id()}|{pid}|{_process_start(pid)}|{uuid.uuid4().hex[:12]}"


def _owner_parts(owner: str) -> tuple[str, int, str] | None:
    """The host, pid and process start of an owner id of ours; `None` for another form."""
    parts = owner.split("|")
    if len(parts) != 4:
        return None
    try:
        return parts[0], int(parts[1]), parts[2]
    except ValueError:
        return None


def _owner_alive(owner: str) -> bool | None:
    """Whether `owner`'s process still runs; `None` when that cannot be told from here.

    Only processes on this machine can be looked at: owners elsewhere (or in a form
    not ours) are judged by their lease alone.
    """
    parts = _owner_parts(owner)
    if parts is None or parts[0] != machine_id():
        return None
    _, pid, started = parts
    if pid == os.getpid():
        return True  # another scheduler in this very process
    try:
        return _process_start(pid) == started  # else the pid now names another process
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return None  # cannot tell (access denied): wait for the lease to expire


def run_owner(info: LeaseInfo, me: str) -> RunOwner:
    """Who holds the lease `info` describes, seen from the scheduler whose owner id is `me`."""
    parts = None if info.owner is None else _owner_parts(info.owner)
    return RunOwner(
        plan_id=info.plan_id,
        version=info.version,
        owner=info.owner,
        host=None if parts is None else parts[0].split("~")[0],
        pid=None if parts is None else parts[1],
        alive=None if info.owner is None else _owner_alive(info.owner),
        lease_until=info.until,
        lapsed=info.lapsed,
        here=info.owner == me,
    )


class Held(Protocol):
    """A run as the keeper sees it: which plan version, and how to stop it once lost."""

    @property
    def plan_id(self) -> PlanId:
        """The plan."""
        ...

    @property
    def version(self) -> int:
        """The plan version."""
        ...

    def lose(self) -> None:
        """Stop at once, writing nothing more: another process holds the run now."""
        ...


class LeaseKeeper:
    """One scheduler's hold on its runs: its lease, the claims it resumes, their release.

    Claims are taken and turned into runs one at a time (under `claim_lock`), so
    that two of them never resume one run.

    Attributes:
        lease: This scheduler's claim on the runs it executes (`lease.owner` is unique).
        claim_lock: Held while a claim is taken and turned into a run.
    """

    def __init__(self, store: Store, lease_s: float) -> None:
        self._store = store
        self.lease = RunLease(new_owner_id(), lease_s)
        self.claim_lock = anyio.Lock()
        self._claims: set[tuple[str, int]] = set()
        """Runs claimed and being resumed: held, but not running yet."""
        self._unreleased: set[tuple[str, int]] = set()
        """Runs that stopped here whose lease could not be released yet."""
        self._renewed_at = 0.0
        """When the last renewal that went through was asked for (`anyio.current_time`)."""

    def owner(self, info: LeaseInfo) -> RunOwner:
        """Who holds the lease `info` describes, seen from here."""
        return run_owner(info, self.lease.owner)

    def expect_held(self, plan_id: str, version: int) -> ExpectedPlanStatus:
        """The condition on a write of a run here: still executing, and still ours."""
        return ExpectedPlanStatus(plan_id, version, PlanStatus.EXECUTING, lease=self.lease)

    @contextmanager
    def claimed(self, keys: Collection[tuple[str, int]]) -> Iterator[None]:
        """Count `keys` as held while they are being turned into runs (they are renewed)."""
        self._claims.update(keys)
        try:
            yield
        finally:
            self._claims.difference_update(keys)

    async def claim(
        self, *, gone_owners: Collection[str] = (), runs: Collection[tuple[str, int]] | None = None
    ) -> list[RunKey]:
        """Claim the executing plan versions nobody holds (see `Store.claim_runs`)."""
        return await self._store.claim_runs(self.lease, gone_owners=gone_owners, runs=runs)

    async def release(self, plan_id: str, version: int) -> None:
        """Let go of one run, so that any process may take it; retried later on failure."""
        try:
            await self._store.release_leases(self.lease.owner, [(plan_id, version)])
        except Exception as error:
            # Not renewed any more, it lapses anyway; meanwhile try again.
            self._unreleased.add((plan_id, version))
            logger.warning("could not release the lease on plan %s: %s", plan_id, error)

    async def release_all(self) -> None:
        """Let go of every run this scheduler holds (it is closing)."""
        try:
            await self._store.release_leases(self.lease.owner)
        except Exception as error:
            logger.warning("could not release this process's run leases: %s", error)

    async def gone_owners(self) -> list[str]:
        """Owners of fresh leases that are processes on this machine which have ended."""
        owners = {
            lease.owner
            for lease in await self._store.list_leases()
            if lease.owner is not None and not lease.lapsed
        }
        return sorted(o for o in owners if _owner_alive(o) is False)

    async def keep(self, runs: Callable[[], Collection[Held]]) -> None:
        """Renew the leases of the runs here every third of their length; stop lost runs.

        Only runs that are going on here are renewed: one that stopped (on a store
        failure, say) lapses even if releasing it failed, and is released later.
        When no renewal has gone through for most of a lease (the database is out
        of reach), every run here is stopped, its calls cancelled, before the lease
        can lapse and another process take the run over.

        Args:
            runs: The runs going on here, asked at each renewal.
        """
        self._renewed_at = anyio.current_time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._stop_unrenewed, runs)
            await self._renew(runs)

    async def _renew(self, runs: Callable[[], Collection[Held]]) -> None:
        while True:
            await anyio.sleep(self.lease.lease_s / 3)
            if self._unreleased:
                stopped = set(self._unreleased)
                self._unreleased -= stopped
                for plan_id, version in stopped:
                    await self.release(plan_id, version)
            # Only runs registered before the renewal can be judged by it: a run's
            # claim is committed before the run is registered.
            judged = list(runs())
            keys = {(r.plan_id, r.version) for r in judged} | self._claims
            asked_at = anyio.current_time()
            if not keys:
                self._renewed_at = asked_at  # nothing held, nothing to lose
                continue
            try:
                held = await self._store.renew_leases(self.lease, keys)
            except Exception:
                logger.exception("could not renew this process's run leases; will retry")
                continue
            # The store renewed after it was asked: the lease lasts from then at least.
            self._renewed_at = asked_at
            for run in judged:
                if (run.plan_id, run.version) not in held:
                    run.lose()

    async def _stop_unrenewed(self, runs: Callable[[], Collection[Held]]) -> None:
        """Stop the runs here once renewals have failed for most of a lease."""
        limit = self.lease.lease_s * _STOP_UNRENEWED
        while True:
            await anyio.sleep(self.lease.lease_s / 6)
            unrenewed = anyio.current_time() - self._renewed_at
            if unrenewed <= limit:
                continue
            stopped = list(runs())
            if stopped:
                logger.warning(
                    "no lease renewal went through for %.1f s (of a %.1f s lease): stopping "
                    "the %d run(s) here before another process may take them over",
                    unrenewed,
                    self.lease.lease_s,
                    len(stopped),
                )
            for run in stopped:
                run.lose()
