"""`plans`, `show` and `watch` of a settled plan, answered straight from an SQLite database.

A person waits for these, so they skip what the rest of the command line
needs: no typer, no pydantic model, no event loop, no service. The command
line is read here (`quick_arguments`, for the plain forms of these three
commands' options), the database is found as `load_config` and
`resolve_db_path` would find it (`server.config.paths.database_at_a_glance`),
read with the standard library (`executor.store.glance`), and printed by the
same `server.cli.printing` functions as the full commands.

Everything else goes the usual way (`answer` returns `None` before printing
anything): `--help`, `--json`, `--graph`, `--timeline`, an option written
another way, a config only its full reading can judge, a PostgreSQL URL, a
database that must be created or migrated, an unknown plan or version, a plan
`watch` would have to follow. That way also says what is wrong.

A config is read here only for where the database is: its server entries,
agents and limits are not checked by these reads (`taskorch config check` and
every command that uses them check them).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from executor.status import PlanStatus
from executor.store.glance import Glance, NotAtAGlance, open_glance
from server.cli.logformat import LOG_LEVELS
from server.cli.printing import console, print_plan, print_plans, run_bars, styled_status
from server.config.paths import database_at_a_glance

__all__ = ["QUICK_COMMANDS", "answer", "quick_arguments"]

_COMMON: Final = {"--config": "config", "--db": "db", "--log-level": "log_level"}
_OPTIONS: Final[dict[str, dict[str, str]]] = {
    "plans": {"--status": "status", "--session": "session", "--limit": "limit", **_COMMON},
    "show": {"--version": "version", **_COMMON},
    "watch": {"--interval": "interval", **_COMMON},
}
_DEFAULTS: Final[dict[str, dict[str, Any]]] = {
    "plans": {"status": None, "session": None, "limit": 30},
    "show": {"version": None},
    "watch": {"interval": 0.25},
}
_REPEATABLE: Final = frozenset({"status"})
_COUNTS: Final = frozenset({"limit", "version"})
_NUMBER: Final = re.compile(r"^\d+(\.\d+)?$")
_DIGITS: Final = re.compile(r"^\d{1,18}$")  # what an SQLite integer holds

QUICK_COMMANDS: Final = frozenset(_OPTIONS)
"""The commands `answer` may answer."""


def quick_arguments(command: str, args: Sequence[str]) -> dict[str, Any] | None:
    """The command's keyword arguments (as its typer declaration names them), or `None`.

    Only plain lines are read: each option once (`--status` may repeat), as
    `--opt VALUE` or `--opt=VALUE`, a whole number where one is wanted, and the
    plan id of `show` and `watch`. Anything else is `None`.
    """
    options = _OPTIONS[command]
    found: dict[str, Any] = {"config": None, "db": None, "log_level": None, **_DEFAULTS[command]}
    given: set[str] = set()
    plan_ids: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-"):
            plan_ids.append(arg)
            continue
        decl, eq, text = arg.partition("=")
        name = options.get(decl)
        if name is None or (name in given and name not in _REPEATABLE):
            return None
        if not eq:
            if i >= len(args) or args[i].startswith("-"):
                return None
            text = args[i]
            i += 1
        given.add(name)
        value = _value(name, text)
        if value is None:
            return None
        if name in _REPEATABLE:
            found[name] = [*(found[name] or ()), value]
        else:
            found[name] = value
    if command == "plans":
        return found if not plan_ids else None
    if len(plan_ids) != 1:
        return None
    return {"plan_id": plan_ids[0], **found}


def _value(name: str, text: str) -> Any:
    if name in _COUNTS:
        return int(text) if _DIGITS.match(text) else None
    if name == "interval":
        return float(text) if _NUMBER.match(text) else None
    return text if text else None


def answer(args: Sequence[str]) -> int | None:
    """Answer `taskorch ARGS` here and return its exit code, or `None` to run it as usual."""
    if not args or args[0] not in QUICK_COMMANDS:
        return None
    found = quick_arguments(args[0], args[1:])
    if found is None:
        return None
    level = found["log_level"]
    if level is not None and level.upper() not in LOG_LEVELS:
        return None
    where = database_at_a_glance(found["db"], found["config"])
    if not isinstance(where, Path):
        return None  # a PostgreSQL URL, or a config to read whole
    read = _READS[args[0]]
    try:
        with open_glance(where) as glance:
            shown = read(glance, found)
    except NotAtAGlance:
        return None
    if shown is None:
        return None
    shown()  # printed once the database is closed: nothing is printed twice
    return 0


def _plans(glance: Glance, found: dict[str, Any]) -> Callable[[], None] | None:
    known = {s.value for s in PlanStatus}
    statuses = found["status"]
    if statuses is not None and not set(statuses) <= known:
        return None
    if found["limit"] < 1:
        return None
    listed = glance.plans(
        statuses=None if statuses is None else [PlanStatus(s) for s in statuses],
        session_id=found["session"],
        limit=found["limit"],
    )
    return lambda: print_plans(listed, console())


def _show(glance: Glance, found: dict[str, Any]) -> Callable[[], None] | None:
    page = glance.plan(found["plan_id"], found["version"])
    if page is None:
        return None
    return lambda: print_plan(page, console(), outputs=True)


def _watch(glance: Glance, found: dict[str, Any]) -> Callable[[], None] | None:
    plan_id = found["plan_id"]
    page = glance.plan(plan_id)
    if page is None or not page.status.is_settled:
        return None  # a run to follow, or a plan to wait for: `watch` polls
    events = glance.step_kinds(page.plan_id)
    counts = Counter(step.status.value for step in page.steps)

    def show() -> None:
        out = console()
        with run_bars(out, plan_id, len(page.steps)) as bars:
            for step_id, kind in events:
                bars.stand(page.status.value, counts)
                if step_id:
                    bars.step(step_id, kind)
        out.print(f"plan {plan_id}: {styled_status(page.status.value)}")

    return show


_READS: Final[dict[str, Callable[[Glance, dict[str, Any]], Callable[[], None] | None]]] = {
    "plans": _plans,
    "show": _show,
    "watch": _watch,
}
