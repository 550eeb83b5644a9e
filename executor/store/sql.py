"""The SQL the SQLite store runs most: plans, step states, attempts, events, statistics."""

from __future__ import annotations

from typing import Final

__all__ = [
    "FOLD_DURATION",
    "INSERT_EVENT",
    "INSERT_PLAN",
    "INSERT_STEP",
    "LATEST_VERSION",
    "PLAN_SELECT",
    "RENEW_ONE",
    "UPDATE_STATUS",
    "UPSERT_ATTEMPT",
    "UPSERT_STATE",
]

INSERT_PLAN: Final = """
INSERT INTO plans (plan_id, version, query, strategy, agent, session_id, deadline_s, status,
                   approved_hash, plan_hash, considered_tools, content, created_at, updated_at)
VALUES (:plan_id, :version, :query, :strategy, :agent, :session_id, :deadline_s, :status,
        :approved_hash, :plan_hash, :considered_tools, :content, :created_at, :updated_at)
ON CONFLICT (plan_id, version) DO NOTHING
"""

INSERT_STEP: Final = """
INSERT INTO steps (plan_id, version, step_id, position, server, tool, content)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""

UPSERT_STATE: Final = """
INSERT INTO step_states (plan_id, version, step_id, status, attempts, output, result, error,
                         started_at, finished_at, updated_at, summary, skip_reason)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (plan_id, version, step_id) DO UPDATE SET
    status = excluded.status, attempts = excluded.attempts, output = excluded.output,
    result = excluded.result, error = excluded.error, started_at = excluded.started_at,
    finished_at = excluded.finished_at, updated_at = excluded.updated_at,
    summary = excluded.summary, skip_reason = excluded.skip_reason
"""

UPSERT_ATTEMPT: Final = """
INSERT INTO attempts (plan_id, version, step_id, attempt, status, started_at, finished_at, error,
                      call_s, task_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (plan_id, version, step_id, attempt) DO UPDATE SET
    status = excluded.status, started_at = excluded.started_at,
    finished_at = excluded.finished_at, error = excluded.error, call_s = excluded.call_s,
    task_id = COALESCE(excluded.task_id, task_id)
"""

INSERT_EVENT: Final = "INSERT INTO events (plan_id, kind, step_id, at, data) VALUES (?, ?, ?, ?, ?)"

# Welford's update in one statement: in DO UPDATE every bare column is the row's old
# value, so `mean_s` and `count` below are the values before this duration. executemany
# applies rows one by one, so several durations of one tool in a batch fold correctly.
FOLD_DURATION: Final = """
INSERT INTO tool_stats (server, tool, count, mean_s, m2, last_s, updated_at)
VALUES (?1, ?2, 1, ?3, 0.0, ?3, ?4)
ON CONFLICT (server, tool) DO UPDATE SET
    count = count + 1,
    mean_s = mean_s + (excluded.last_s - mean_s) / (count + 1),
    m2 = m2 + (excluded.last_s - mean_s)
              * (excluded.last_s - (mean_s + (excluded.last_s - mean_s) / (count + 1))),
    last_s = excluded.last_s,
    updated_at = excluded.updated_at
"""

# A new run start (started_at given) clears the previous run's end. Only an executing
# plan version has a lease: leaving `executing` releases it; entering it with an owner
# claims it. A cancel request is about the run in progress: any change ends it.
UPDATE_STATUS: Final = """
UPDATE plans SET
    status = :status,
    approved_hash = COALESCE(:approved_hash, approved_hash),
    started_at = COALESCE(:started_at, started_at),
    finished_at = CASE WHEN :started_at IS NOT NULL THEN :finished_at
                       ELSE COALESCE(:finished_at, finished_at) END,
    lease_owner = CASE WHEN :status = 'executing' THEN COALESCE(:lease_owner, lease_owner) END,
    lease_until = CASE WHEN :status = 'executing' THEN COALESCE(:lease_until, lease_until) END,
    cancel_requested_at = NULL,
    updated_at = :now
WHERE plan_id = :plan_id AND version = :version
"""

# Renews the lease only while the run is still ours and still executing.
RENEW_ONE: Final = """
UPDATE plans SET lease_until = :until
WHERE plan_id = :plan_id AND version = :version AND status = :status AND lease_owner = :owner
"""

LATEST_VERSION: Final = (
    "p.version = (SELECT MAX(v.version) FROM plans AS v WHERE v.plan_id = p.plan_id)"
)

PLAN_SELECT: Final = """
WITH chosen AS (
    SELECT p.rowid AS rid, p.plan_id, p.version, p.status, p.approved_hash, p.content,
           p.created_at
    FROM plans AS p
    WHERE {where}
    ORDER BY p.created_at DESC, p.rowid DESC
    LIMIT :limit
)
SELECT c.plan_id, c.version, c.status, c.approved_hash, c.content, s.content AS step_content
FROM chosen AS c
LEFT JOIN steps AS s ON s.plan_id = c.plan_id AND s.version = c.version
ORDER BY c.created_at DESC, c.rid DESC, s.position
"""
