"""The SQL of the PostgreSQL results store (`runtime.pg_outbox`), kept apart so the store
reads as behaviour. Times are the database's clock (``NOW``), so workers agree on what is
due whatever their own clocks say."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from runtime.outbox import ListFilter, OutboxEntry, SinkStatus

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

    SyncConn = psycopg.Connection[TupleRow]

SCHEMA_VERSION = 1
SCHEMA_LOCK = 0x6469616C706C616E  # an advisory lock key of our own ("dialplan")
NOW = "extract(epoch FROM now())"

SCHEMA = """
CREATE TABLE IF NOT EXISTS dialplan_results_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dialplan_records (
    session_id TEXT PRIMARY KEY,
    bot_id TEXT NOT NULL,
    ended_at DOUBLE PRECISION,
    disconnected_by TEXT,
    held BOOLEAN NOT NULL,
    held_by TEXT,
    holder_pid INTEGER,
    body TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS dialplan_records_ended ON dialplan_records (ended_at);
CREATE INDEX IF NOT EXISTS dialplan_records_held ON dialplan_records (held_by) WHERE held;
CREATE TABLE IF NOT EXISTS dialplan_deliveries (
    session_id TEXT NOT NULL REFERENCES dialplan_records (session_id) ON DELETE CASCADE,
    sink TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    claimed_by TEXT,
    last_error TEXT,
    delivered_at DOUBLE PRECISION,
    version INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (session_id, sink)
);
CREATE INDEX IF NOT EXISTS dialplan_deliveries_due
    ON dialplan_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS dialplan_deliveries_claimed
    ON dialplan_deliveries (claimed_by) WHERE claimed_by IS NOT NULL;
"""
SET_SCHEMA_VERSION = "INSERT INTO dialplan_results_schema (version) VALUES (%s)"
# (re-)queue a delivery: pending, due now, unclaimed; the version makes the outcome of an
# attempt still in flight for the old content not count
REQUEUE = """
ON CONFLICT (session_id, sink) DO UPDATE SET
    state = 'pending', attempts = 0, next_attempt_at = excluded.next_attempt_at,
    claimed_by = NULL, last_error = NULL, delivered_at = NULL, version = d.version + 1
"""
# one statement, so one round trip and atomic: the record, then a delivery per sink
PUT_RECORD = f"""
WITH record AS (
    INSERT INTO dialplan_records AS r (session_id, bot_id, ended_at, disconnected_by, held,
        held_by, holder_pid, body, updated_at)
    VALUES (%(session_id)s, %(bot_id)s, %(ended_at)s, %(disconnected_by)s, %(held)s,
        %(held_by)s, %(holder_pid)s, %(body)s, {NOW})
    ON CONFLICT (session_id) DO UPDATE SET
        bot_id = excluded.bot_id, ended_at = excluded.ended_at,
        disconnected_by = excluded.disconnected_by, held = excluded.held,
        held_by = excluded.held_by, holder_pid = excluded.holder_pid, body = excluded.body,
        updated_at = excluded.updated_at
    RETURNING session_id
)
INSERT INTO dialplan_deliveries AS d (session_id, sink, state, attempts, next_attempt_at)
SELECT record.session_id, sink, 'pending', 0, {NOW}
FROM record, unnest(%(sinks)s::text[]) AS sink
{REQUEUE}"""
REPLAY = f"""
INSERT INTO dialplan_deliveries AS d (session_id, sink, state, attempts, next_attempt_at)
SELECT r.session_id, s.sink, 'pending', 0, {NOW}
FROM dialplan_records r CROSS JOIN LATERAL (
    SELECT sink FROM dialplan_deliveries WHERE session_id = r.session_id
    UNION SELECT unnest(%(sinks)s::text[])
) AS s (sink)
WHERE r.session_id = ANY(%(session_ids)s)
{REQUEUE}"""
RETRY = f"""
UPDATE dialplan_deliveries SET state = 'pending', attempts = 0, next_attempt_at = {NOW},
    claimed_by = NULL, last_error = NULL, version = version + 1
WHERE session_id = %s AND state IN ('pending', 'dead')
"""
# Locking: what re-queues a session's deliveries (put, retry, replay) locks its record row
# first, so those take turns per session; what takes several rows otherwise (adopting held
# records, renewing and making claims) skips locked rows instead of waiting. No deadlocks.
#
# a worker's held records, and those of workers whose session has ended, become its own
ADOPT_HELD = """
WITH adopted AS (
    SELECT session_id FROM dialplan_records r
    WHERE r.held AND (r.held_by = %(worker)s
        OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = r.holder_pid))
    FOR UPDATE SKIP LOCKED
)
UPDATE dialplan_records r SET held_by = %(worker)s, holder_pid = %(pid)s
FROM adopted WHERE r.session_id = adopted.session_id
RETURNING r.body, r.updated_at
"""
DELIVERY_COLUMNS = "d.session_id, d.sink, d.attempts, d.version, d.next_attempt_at"
RENEW_CLAIMS = f"""
WITH mine AS (
    SELECT session_id, sink FROM dialplan_deliveries
    WHERE claimed_by = %(worker)s AND state = 'pending' AND sink = ANY(%(sinks)s)
    FOR UPDATE SKIP LOCKED
)
UPDATE dialplan_deliveries d SET next_attempt_at = {NOW} + %(lease)s
FROM mine m JOIN dialplan_records r ON r.session_id = m.session_id
WHERE d.session_id = m.session_id AND d.sink = m.sink AND NOT r.held
RETURNING {DELIVERY_COLUMNS}, r.body
"""
# rows another worker is claiming right now are its, not ours to wait for
CLAIM_DUE = f"""
WITH claimable AS (
    SELECT d.session_id, d.sink
    FROM dialplan_deliveries d JOIN dialplan_records r ON r.session_id = d.session_id
    WHERE d.state = 'pending' AND d.next_attempt_at <= {NOW} AND NOT r.held
        AND d.sink = ANY(%(sinks)s)
    ORDER BY d.next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE dialplan_deliveries d
SET claimed_by = %(worker)s, next_attempt_at = {NOW} + %(lease)s
FROM claimable c JOIN dialplan_records r ON r.session_id = c.session_id
WHERE d.session_id = c.session_id AND d.sink = c.sink
RETURNING {DELIVERY_COLUMNS}, r.body
"""
SCHEDULED = f"""
SELECT {DELIVERY_COLUMNS}
FROM dialplan_deliveries d JOIN dialplan_records r ON r.session_id = d.session_id
WHERE d.state = 'pending' AND d.next_attempt_at > {NOW} AND NOT r.held
    AND d.sink = ANY(%(sinks)s) AND d.claimed_by IS DISTINCT FROM %(worker)s
ORDER BY d.next_attempt_at
LIMIT %(limit)s
"""
SET_OUTCOME = f"""
UPDATE dialplan_deliveries SET state = %(state)s, attempts = %(attempt)s,
    last_error = %(error)s, next_attempt_at = {NOW} + %(delay)s, claimed_by = NULL,
    delivered_at = CASE WHEN %(state)s = 'delivered' THEN {NOW} END
WHERE session_id = %(session_id)s AND sink = %(sink)s AND version = %(version)s
"""


def select_entries(
    conn: SyncConn, state: ListFilter | None, limit: int | None, session_id: str | None = None
) -> list[OutboxEntry]:
    where: list[str] = []
    params: list[Any] = []
    if session_id is not None:
        where.append("session_id = %s")
        params.append(session_id)
    if state == "held":
        where.append("held")
    elif state is not None:
        where.append(
            "EXISTS (SELECT 1 FROM dialplan_deliveries d "
            "WHERE d.session_id = dialplan_records.session_id AND d.state = %s)"
        )
        params.append(state)
    sql = "SELECT session_id, bot_id, ended_at, disconnected_by, held FROM dialplan_records"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY ended_at DESC, session_id"
    if limit is not None:
        sql += " LIMIT %s"
        params.append(limit)
    records = conn.execute(sql, params).fetchall()
    statuses: dict[str, list[SinkStatus]] = {}
    for session, *status in conn.execute(
        "SELECT session_id, sink, state, attempts, next_attempt_at, last_error, delivered_at "
        "FROM dialplan_deliveries WHERE session_id = ANY(%s) ORDER BY sink",
        ([row[0] for row in records],),
    ):
        statuses.setdefault(session, []).append(SinkStatus(*status))
    return [
        OutboxEntry(
            session_id=session,
            bot_id=bot_id,
            ended_at=_datetime(ended_at),
            disconnected_by=disconnected_by,
            held=held,
            deliveries=tuple(statuses.get(session, ())),
        )
        for session, bot_id, ended_at, disconnected_by, held in records
    ]


def _datetime(timestamp: float | None) -> dt.datetime | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc)
