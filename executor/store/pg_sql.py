"""The SQL the PostgreSQL store runs (the SQLite store's in PostgreSQL's words), and its parameters.

Positional statements take the rows `executor.store.codecs` builds, in the
same column order as `executor.store.sql`'s, as one array per column (one
statement per table, whatever the number of rows). Times are bound as the ISO
text the codecs write; PostgreSQL reads them into `timestamptz`. Lease times
are the database's own clock (`now()`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Final

from executor.status import PLAN_TRANSITIONS, PlanStatus
from executor.store.base import ExpectedPlanStatus, PlanStatusChange
from executor.store.codecs import ts

__all__ = [
    "CANCEL_REQUESTS",
    "CHANGE_STATUS",
    "CHECK_STATUS",
    "CLAIM",
    "DELETE_RESULT",
    "FOLD_DURATION",
    "INSERT_EVENT",
    "INSERT_HOST_TASK",
    "INSERT_PARTS",
    "INSERT_PLAN",
    "INSERT_RESULT",
    "INSERT_STEP",
    "LATEST_VERSION",
    "LEASES",
    "LOCK_AND_NOTIFY",
    "NOTIFY_MANY",
    "PLAN_SELECT",
    "RELEASE",
    "RENEW",
    "RENEW_ONE",
    "REQUEST_CANCEL",
    "REQUIRED_CHANGE",
    "REQUIRE_FAILED",
    "SERVER_KEY",
    "UPSERT_ATTEMPT",
    "UPSERT_STATE",
    "change_params",
    "columns",
    "expect_statement",
    "queryable",
    "required",
    "runs_params",
]

INSERT_PLAN: Final = """
INSERT INTO plans (plan_id, version, query, strategy, agent, session_id, deadline_s, status,
                   approved_hash, plan_hash, considered_tools, content, created_at, updated_at)
VALUES (%(plan_id)s, %(version)s, %(query)s, %(strategy)s, %(agent)s, %(session_id)s,
        %(deadline_s)s, %(status)s, %(approved_hash)s, %(plan_hash)s, %(considered_tools)s,
        %(content)s, %(created_at)s, %(updated_at)s)
ON CONFLICT (plan_id, version) DO NOTHING
RETURNING 1
"""

# A batch's rows go as one array per column (`columns()`): one statement per table,
# whatever the number of rows. Times are ISO text, read into timestamptz here.
INSERT_STEP: Final = """
INSERT INTO steps (plan_id, version, step_id, position, server, tool, content)
SELECT * FROM unnest(%b::text[], %b::int[], %b::text[], %b::int[], %b::text[], %b::text[],
                     %b::text[])
"""

# ON CONFLICT may change a row once per statement: the store keeps the last state of a
# step (and of an attempt) in a batch.
UPSERT_STATE: Final = """
INSERT INTO step_states (plan_id, version, step_id, status, attempts, output, result, error,
                         started_at, finished_at, updated_at, summary, skip_reason)
SELECT p, v, s, st, n, o, r, e, sa::timestamptz, fa::timestamptz, ua::timestamptz, su, sk
FROM unnest(%b::text[], %b::int[], %b::text[], %b::text[], %b::int[], %b::text[], %b::text[],
            %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[])
     AS t (p, v, s, st, n, o, r, e, sa, fa, ua, su, sk)
ON CONFLICT (plan_id, version, step_id) DO UPDATE SET
    status = excluded.status, attempts = excluded.attempts, output = excluded.output,
    result = excluded.result, error = excluded.error, started_at = excluded.started_at,
    finished_at = excluded.finished_at, updated_at = excluded.updated_at,
    summary = excluded.summary, skip_reason = excluded.skip_reason
"""

# An attempt's downstream task id, once recorded, stays: a later write of the attempt
# (its end) that does not carry it keeps it, as in SQLite.
UPSERT_ATTEMPT: Final = """
INSERT INTO attempts AS a (plan_id, version, step_id, attempt, status, started_at, finished_at,
                           error, call_s, task_id)
SELECT p, v, s, n, st, sa::timestamptz, fa::timestamptz, e, c, tk
FROM unnest(%b::text[], %b::int[], %b::text[], %b::int[], %b::text[], %b::text[], %b::text[],
            %b::text[], %b::float8[], %b::text[]) AS t (p, v, s, n, st, sa, fa, e, c, tk)
ON CONFLICT (plan_id, version, step_id, attempt) DO UPDATE SET
    status = excluded.status, started_at = excluded.started_at,
    finished_at = excluded.finished_at, error = excluded.error, call_s = excluded.call_s,
    task_id = COALESCE(excluded.task_id, a.task_id)
"""

# Identities are given in the order the rows come, which is the batch's: the seqs back,
# sorted, are the events' in order.
INSERT_EVENT: Final = """
INSERT INTO events (plan_id, kind, step_id, at, data)
SELECT p, k, s, a::timestamptz, d
FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[]) WITH ORDINALITY
     AS t (p, k, s, a, d, i)
ORDER BY i
RETURNING seq
"""

# One plan's events are written under a lock of that plan, taken just before they get
# their seqs: two transactions adding events to one plan then commit in seq order, so a
# reader paging by seq never passes over an event committed later with a smaller seq.
# The locks are taken in one order, so two writers never wait for each other in a ring.
# The plans' followers are notified in the same statement (delivered at the commit).
LOCK_AND_NOTIFY: Final = """
SELECT (SELECT count(pg_advisory_xact_lock(1414221650, k))
        FROM (SELECT DISTINCT hashtext(p) AS k FROM unnest(%b::text[]) AS p ORDER BY k) AS keys),
       (SELECT count(pg_notify(%s, payload)) FROM unnest(%b::text[]) AS payload)
"""

NOTIFY_MANY: Final = "SELECT count(pg_notify(%s, payload)) FROM unnest(%b::text[]) AS payload"

# Welford's update: in DO UPDATE, `t.` is the row before this duration.
FOLD_DURATION: Final = """
INSERT INTO tool_stats AS t (server, tool, count, mean_s, m2, last_s, updated_at)
VALUES (%(server)s, %(tool)s, 1, %(seconds)s, 0.0, %(seconds)s, %(now)s)
ON CONFLICT (server, tool) DO UPDATE SET
    count = t.count + 1,
    mean_s = t.mean_s + (excluded.last_s - t.mean_s) / (t.count + 1),
    m2 = t.m2 + (excluded.last_s - t.mean_s)
              * (excluded.last_s - (t.mean_s + (excluded.last_s - t.mean_s) / (t.count + 1))),
    last_s = excluded.last_s,
    updated_at = excluded.updated_at
"""

# A status change, only from a status that may change to the new one (`from`); no row
# back means the plan is missing or its status forbids it. As in SQLite: a new start
# clears the previous end, leaving `executing` releases the lease, any change ends a
# cancel request.
CHANGE_STATUS: Final = """
UPDATE plans SET
    status = %(status)s,
    approved_hash = COALESCE(%(approved_hash)s::text, approved_hash),
    started_at = COALESCE(%(started_at)s::timestamptz, started_at),
    finished_at = CASE WHEN %(started_at)s::timestamptz IS NOT NULL
                       THEN %(finished_at)s::timestamptz
                       ELSE COALESCE(%(finished_at)s::timestamptz, finished_at) END,
    lease_owner = CASE WHEN %(status)s = 'executing'
                       THEN COALESCE(%(lease_owner)s::text, lease_owner) END,
    lease_until = CASE WHEN %(status)s = 'executing'
                       THEN COALESCE(now() + make_interval(secs => %(lease_s)s::float8),
                                     lease_until) END,
    cancel_requested_at = NULL,
    updated_at = %(now)s
WHERE plan_id = %(plan_id)s AND version = %(version)s AND status = ANY(%(from)s::text[])
RETURNING status
"""

# A batch's condition: the plan still has this status (locked until the commit, so it
# cannot change under the batch).
CHECK_STATUS: Final = """
SELECT 1 FROM plans
WHERE plan_id = %(plan_id)s AND version = %(version)s AND status = %(status)s
FOR UPDATE
"""

# A batch's condition with a lease: still ours and still in this status; renews it.
RENEW_ONE: Final = """
UPDATE plans SET lease_until = now() + make_interval(secs => %(lease_s)s::float8)
WHERE plan_id = %(plan_id)s AND version = %(version)s AND status = %(status)s
  AND lease_owner = %(owner)s
RETURNING 1
"""


# A host task names a stored plan version (the foreign key refuses any other).
INSERT_HOST_TASK: Final = """
INSERT INTO host_tasks (task_id, owner, plan_id, version, created_at)
VALUES (%s, %s, %s, %s, %s)
"""

# Made once for the whole database: the first replica's random secret is inserted, every
# later one (or one racing it) keeps it and reads it back. Two statements: a CTE's
# insert is not seen by its own statement's select.
SERVER_KEY: Final = (
    "INSERT INTO server_keys (name, secret, created_at) VALUES (%s, %s, now())"
    " ON CONFLICT (name) DO NOTHING",
    "SELECT secret FROM server_keys WHERE name = %s",
)


def columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as one list per column, for the `unnest` of a statement here."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


def required(statement: str, what: str) -> str:
    """`statement`, failing (SQLSTATE TK001, naming `what`) when it returns no row."""
    return (
        f"WITH done AS ({statement.strip()}) "
        f"SELECT taskorch_require(EXISTS (SELECT 1 FROM done), '{what}')"
    )


REQUIRE_FAILED: Final = "TK001"
"""The SQLSTATE of a condition of `required` that does not hold."""

# Runs are given as two arrays (plan ids, versions), or NULL for every one.
_CHOSEN: Final = """
(%(plan_ids)s::text[] IS NULL
 OR (plan_id, version) IN (SELECT * FROM unnest(%(plan_ids)s::text[], %(versions)s::int[])))
"""

# FOR UPDATE SKIP LOCKED: a run another transaction is claiming or renewing right now is
# passed over, not waited for; a row changed since the snapshot is checked again.
CLAIM: Final = f"""
WITH free AS (
    SELECT plan_id, version FROM plans
    WHERE status = 'executing'
      AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until <= now()
           OR lease_owner = ANY(%(gone)s::text[]))
      AND {_CHOSEN}
    FOR UPDATE SKIP LOCKED
)
UPDATE plans AS p
SET lease_owner = %(owner)s, lease_until = now() + make_interval(secs => %(lease_s)s::float8)
FROM free WHERE p.plan_id = free.plan_id AND p.version = free.version
RETURNING p.plan_id, p.version
"""

RENEW: Final = f"""
UPDATE plans SET lease_until = now() + make_interval(secs => %(lease_s)s::float8)
WHERE status = 'executing' AND lease_owner = %(owner)s AND {_CHOSEN}
RETURNING plan_id, version
"""

RELEASE: Final = f"""
UPDATE plans SET lease_owner = NULL, lease_until = NULL
WHERE lease_owner = %(owner)s AND {_CHOSEN}
"""

LEASES: Final = """
SELECT plan_id, version, lease_owner, lease_until, cancel_requested_at,
       (lease_until IS NULL OR lease_until <= now()) AS lapsed
FROM plans WHERE status = 'executing' {where}
ORDER BY created_at, id
"""

# The request and its notification in one statement: the owner is told at the commit.
REQUEST_CANCEL: Final = """
WITH asked AS (
    UPDATE plans SET cancel_requested_at = COALESCE(cancel_requested_at, now())
    WHERE plan_id = %(plan_id)s AND version = %(version)s AND status = 'executing'
    RETURNING plan_id, version
)
SELECT pg_notify(%(channel)s, json_build_object('p', plan_id, 'v', version)::text) FROM asked
"""

CANCEL_REQUESTS: Final = f"""
SELECT plan_id, version FROM plans
WHERE status = 'executing' AND cancel_requested_at IS NOT NULL AND {_CHOSEN}
"""

DELETE_RESULT: Final = """
DELETE FROM step_results
WHERE (plan_id, version, step_id) IN (SELECT * FROM unnest(%b::text[], %b::int[], %b::text[]))
"""

INSERT_RESULT: Final = """
INSERT INTO step_results (plan_id, version, step_id, skeleton, parts) VALUES (%s, %s, %s, %s, %s)
"""

INSERT_PARTS: Final = """
INSERT INTO result_parts (plan_id, version, step_id, part, data)
SELECT %s, %s, %s, i - 1, d FROM unnest(%b::bytea[]) WITH ORDINALITY AS t (d, i)
"""

LATEST_VERSION: Final = (
    "p.version = (SELECT max(v.version) FROM plans AS v WHERE v.plan_id = p.plan_id)"
)

PLAN_SELECT: Final = """
WITH chosen AS (
    SELECT p.id, p.plan_id, p.version, p.status, p.approved_hash, p.content, p.created_at
    FROM plans AS p
    WHERE {where}
    ORDER BY p.created_at DESC, p.id DESC
    LIMIT %(limit)s
)
SELECT c.plan_id, c.version, c.status, c.approved_hash, c.content, s.content AS step_content
FROM chosen AS c
LEFT JOIN steps AS s ON s.plan_id = c.plan_id AND s.version = c.version
ORDER BY c.created_at DESC, c.id DESC, s.position
"""


# --- parameters ---


def runs_params(runs: Collection[tuple[str, int]] | None) -> dict[str, Any]:
    """The `plan_ids` / `versions` arrays of `pg_sql`'s run filter (NULL: every run)."""
    if runs is None:
        return {"plan_ids": None, "versions": None}
    keys = sorted({(str(p), int(v)) for p, v in runs})
    return {"plan_ids": [p for p, _ in keys], "versions": [v for _, v in keys]}


def queryable(text: str) -> str:
    """Free text as PostgreSQL can hold it (no NUL, no lone surrogate).

    Only for the columns kept to be queried: the plan's `content` keeps the original.
    """
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def change_params(
    change: PlanStatusChange, now: str, *, approved_hash: str | None = None
) -> dict[str, Any]:
    """Parameters of `CHANGE_STATUS`: the change, from any status allowed to make it."""
    status = PlanStatus(change.status)
    lease = change.lease
    return {
        "plan_id": change.plan_id,
        "version": change.version,
        "status": status.value,
        "from": sorted(s.value for s, targets in PLAN_TRANSITIONS.items() if status in targets),
        "approved_hash": approved_hash,
        "started_at": ts(change.started_at),
        "finished_at": ts(change.finished_at),
        "lease_owner": None if lease is None else lease.owner,
        "lease_s": None if lease is None else lease.lease_s,
        "now": now,
    }


def expect_statement(expect: ExpectedPlanStatus) -> tuple[bytes, dict[str, Any]]:
    """A batch's condition, as a statement that fails when it does not hold."""
    params: dict[str, Any] = {
        "plan_id": expect.plan_id,
        "version": expect.version,
        "status": PlanStatus(expect.status).value,
    }
    if expect.lease is None:
        return _REQUIRED_STATUS, params
    params.update(owner=expect.lease.owner, lease_s=expect.lease.lease_s)
    return _REQUIRED_LEASE, params


_REQUIRED_STATUS: Final = required(CHECK_STATUS, "expect").encode()
_REQUIRED_LEASE: Final = required(RENEW_ONE, "expect").encode()
REQUIRED_CHANGE: Final = required(CHANGE_STATUS, "change").encode()
