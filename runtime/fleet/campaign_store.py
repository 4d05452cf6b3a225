"""A campaign's state in SQLite: which rows are done, which wait for a retry, and the
session_id of every attempt, so a stopped or crashed run resumes where it was.

Written like the outbox: one writer thread and connection, WAL, ``synchronous=FULL``,
group commit (``runtime.group_commit``) — when ``await store.begin_attempt(...)`` returns
the row is on disk as in progress, and calls starting together share one fsync.

    campaigns          campaign_id (key), bot_id, csv_path, csv_sha256, phone_column, total
    campaign_rows      (campaign_id, row_number) key: phone, variables (JSON), state,
                       attempts, next_attempt_at, session_id (latest attempt), outcome, reason
    campaign_attempts  session_id (key), campaign_id, row_number, attempt, started_at,
                       ended_at, outcome, sip_status, cause, room

A row goes pending → in_progress → answered | retry | no_answer | failed; invalid rows are
never dialled. ``retry`` waits for ``next_attempt_at``; ``no_answer``: attempts used up.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from runtime.errors import DialplanError
from runtime.group_commit import GroupCommitWriter, Work

RowState = Literal["pending", "in_progress", "retry", "answered", "no_answer", "failed", "invalid"]
DONE_STATES: tuple[RowState, ...] = ("answered", "no_answer", "failed", "invalid")

BUSY_TIMEOUT_MS = 5000  # `dialplan campaign status` may read while a run writes
SCHEMA = """
CREATE TABLE IF NOT EXISTS campaigns (
    campaign_id TEXT PRIMARY KEY, bot_id TEXT NOT NULL, csv_path TEXT NOT NULL,
    csv_sha256 TEXT NOT NULL, phone_column TEXT NOT NULL, total INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS campaigns_by_file ON campaigns (csv_path, bot_id);
CREATE TABLE IF NOT EXISTS campaign_rows (
    campaign_id TEXT NOT NULL REFERENCES campaigns (campaign_id),
    row_number INTEGER NOT NULL, phone TEXT NOT NULL, variables TEXT NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL,
    session_id TEXT, outcome TEXT, reason TEXT, updated_at REAL NOT NULL,
    PRIMARY KEY (campaign_id, row_number)
);
CREATE TABLE IF NOT EXISTS campaign_attempts (
    session_id TEXT PRIMARY KEY, campaign_id TEXT NOT NULL, row_number INTEGER NOT NULL,
    attempt INTEGER NOT NULL, started_at REAL NOT NULL, ended_at REAL, outcome TEXT,
    sip_status INTEGER, cause TEXT, room TEXT
);
CREATE INDEX IF NOT EXISTS campaign_attempts_by_row ON campaign_attempts (campaign_id, row_number);
"""
ROW_COLUMNS = "row_number, phone, variables, state, attempts, next_attempt_at, session_id, "
ROW_COLUMNS += "outcome, reason"
BEGIN_ROW = """UPDATE campaign_rows SET state = 'in_progress', attempts = ?, session_id = ?,
    updated_at = ? WHERE campaign_id = ? AND row_number = ?"""
BEGIN_ATTEMPT = """INSERT INTO campaign_attempts
    (attempt, session_id, started_at, campaign_id, row_number) VALUES (?, ?, ?, ?, ?)"""
FINISH_ROW = """UPDATE campaign_rows SET state = ?, next_attempt_at = ?, outcome = ?,
    reason = ?, updated_at = ? WHERE campaign_id = ? AND row_number = ?"""
FINISH_ATTEMPT = """UPDATE campaign_attempts SET ended_at = ?, outcome = ?, sip_status = ?,
    cause = ?, room = ? WHERE session_id = ?"""
REQUEUE_ROW = """UPDATE campaign_rows SET attempts = attempts - 1, reason = NULL,
    state = CASE WHEN attempts > 1 THEN 'retry' ELSE 'pending' END, next_attempt_at = ?,
    updated_at = ? WHERE campaign_id = ? AND row_number = ?"""
REQUEUE_ATTEMPT = """UPDATE campaign_attempts SET cause = COALESCE(cause, '') || ? WHERE
    session_id = (SELECT session_id FROM campaign_rows WHERE campaign_id = ? AND row_number = ?)"""
INTERRUPTED = "interrupted: the run stopped while this call was in progress; outcome unknown"


class CampaignError(DialplanError):
    """A campaign cannot run: its CSV, its settings or its state file (``CampaignStoreError``)
    cannot be used, or it stopped itself (``CampaignAborted``). Messages name the file."""


class CampaignStoreError(CampaignError):
    """The campaign state file cannot be opened or written."""


@dataclass(frozen=True)
class StoredRow:
    """One CSV row and where the campaign is with it."""

    row_number: int  # 1 is the first row after the header
    phone: str
    variables: dict[str, str]
    state: RowState = "pending"
    attempts: int = 0
    next_attempt_at: float | None = None
    session_id: str | None = None  # the latest attempt's
    outcome: str | None = None  # answered, a DisconnectedBy value, error or interrupted
    reason: str | None = None  # why invalid or failed


@dataclass(frozen=True)
class CampaignDefinition:
    campaign_id: str
    bot_id: str
    csv_path: str
    csv_sha256: str
    phone_column: str
    rows: Sequence[StoredRow]


@dataclass(frozen=True)
class CampaignOpened:
    """``resumed`` an earlier run's state; ``replaces``: the campaign this file and bot had
    before the file changed; ``interrupted``: calls the last run left in progress."""

    resumed: bool
    replaces: str | None
    interrupted: int


@dataclass(frozen=True)
class AttemptResult:
    """How one attempt ended, and the row's state after it."""

    state: RowState
    outcome: str
    cause: str | None = None
    sip_status: int | None = None
    room: str | None = None
    next_attempt_at: float | None = None


@dataclass(frozen=True)
class CampaignCounts:
    """Rows per state, for `dialplan campaign status`."""

    campaign_id: str
    bot_id: str
    csv_path: str
    total: int
    pending: int = 0
    in_progress: int = 0
    retry: int = 0
    answered: int = 0
    no_answer: int = 0
    failed: int = 0
    invalid: int = 0

    @property
    def done(self) -> int:
        return self.answered + self.no_answer + self.failed + self.invalid


class CampaignStore:
    """The state file at ``path``. Async methods are for the runner's event loop; the
    others block (for the CLI)."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise CampaignStoreError(
                f"{self.path}: no campaign state here (`dialplan campaign run` creates it)"
            )
        self._writer = GroupCommitWriter(
            lambda: _connect(self.path),
            name=str(self.path),
            error=CampaignStoreError,
            what="the campaign state",
        )

    # -- the runner's API --------------------------------------------------------------

    async def open_campaign(
        self, definition: CampaignDefinition, *, max_attempts: int, retry_delay: float
    ) -> CampaignOpened:
        """Create the campaign and its rows, or find them from an earlier run and settle
        what that run left unfinished."""
        return await self._writer.call(
            Work(lambda conn: _open(conn, definition, max_attempts, retry_delay), writes=True)
        )

    async def unfinished_rows(self, campaign_id: str) -> list[StoredRow]:
        """Rows still to dial (pending or waiting for a retry), in row order."""
        return await self._writer.call(
            Work(lambda conn: _select_rows(conn, campaign_id, ("pending", "retry")))
        )

    async def begin_attempt(
        self, campaign_id: str, row_number: int, attempt: int, session_id: str
    ) -> None:
        where = (time.time(), campaign_id, row_number)

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(BEGIN_ROW, (attempt, session_id, *where))
            conn.execute(BEGIN_ATTEMPT, (attempt, session_id, *where))

        await self._writer.call(Work(run, writes=True))

    async def finish_attempt(
        self, campaign_id: str, row_number: int, session_id: str, result: AttemptResult
    ) -> None:
        now = time.time()
        reason = result.cause if result.state == "failed" else None
        row = (result.state, result.next_attempt_at, result.outcome, reason, now)
        ended = (now, result.outcome, result.sip_status, result.cause, result.room, session_id)

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(FINISH_ROW, (*row, campaign_id, row_number))
            conn.execute(FINISH_ATTEMPT, ended)

        await self._writer.call(Work(run, writes=True))

    async def requeue(self, campaign_id: str, row_numbers: Sequence[int], note: str) -> None:
        """Make rows due now without counting their last attempt (the dialer was broken,
        not the number); the attempt stays on record, its cause followed by ``note``."""

        def run(conn: sqlite3.Connection) -> None:
            now = time.time()
            for row_number in row_numbers:
                conn.execute(REQUEUE_ATTEMPT, (f" ({note})", campaign_id, row_number))
                conn.execute(REQUEUE_ROW, (now, now, campaign_id, row_number))

        await self._writer.call(Work(run, writes=True))

    async def counts(self, campaign_id: str) -> CampaignCounts:
        found = await self._writer.call(Work(lambda conn: _select_counts(conn, campaign_id)))
        assert found is not None, "counts of a campaign that open_campaign created"
        return found

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # -- blocking API, for `dialplan campaign status` ----------------------------------

    def summary(self, campaign_id: str) -> CampaignCounts | None:
        """Rows per state, or None when the store has no such campaign."""
        return self._writer.call_sync(Work(lambda conn: _select_counts(conn, campaign_id)))

    def rows(self, campaign_id: str, states: Sequence[RowState] = ()) -> list[StoredRow]:
        """Every row (or those in ``states``), in row order."""
        return self._writer.call_sync(Work(lambda conn: _select_rows(conn, campaign_id, states)))

    def session_ids(self, campaign_id: str, row_number: int) -> list[str]:
        """Every attempt's session_id for one row, first first: its call records' keys."""

        def run(conn: sqlite3.Connection) -> list[str]:
            found = conn.execute(
                "SELECT session_id FROM campaign_attempts WHERE campaign_id = ? "
                "AND row_number = ? ORDER BY started_at, attempt",
                (campaign_id, row_number),
            )
            return [session_id for (session_id,) in found]

        return self._writer.call_sync(Work(run))

    def close(self) -> None:
        """Finish every queued write, then close the connection. Idempotent."""
        self._writer.close()

    def __enter__(self) -> CampaignStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- SQL, run on the writer thread -----------------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise CampaignStoreError(f"{path}: SQLite refused WAL mode ({mode}); use a local disk")
        conn.execute("PRAGMA synchronous = FULL")
        conn.executescript(SCHEMA)
        return conn
    except BaseException as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, sqlite3.Error):
            raise CampaignStoreError(
                f"{path}: cannot use it as the campaign state: {exc} (check that the directory "
                "exists and is writable, or pass another state file)"
            ) from None
        raise


def _open(
    conn: sqlite3.Connection, definition: CampaignDefinition, max_attempts: int, retry_delay: float
) -> CampaignOpened:
    campaign_id = definition.campaign_id
    known = conn.execute(
        "SELECT phone_column FROM campaigns WHERE campaign_id = ?", (campaign_id,)
    ).fetchone()
    if known is None:
        return CampaignOpened(False, _insert(conn, definition), 0)
    if known[0] != definition.phone_column:
        raise CampaignStoreError(
            f"{definition.csv_path}: campaign {campaign_id} dials the {known[0]!r} column, "
            f"not {definition.phone_column!r} (pass --phone-column {known[0]} to resume it)"
        )
    now = time.time()
    # A call in progress when the last run died ended without an outcome we know of. It
    # counts as an attempt (the phone may well have rung) and is retried after the usual
    # delay rather than failed: a crash says nothing about the number. Its session_id
    # stays in campaign_attempts, so a record the worker wrote for it can still be found.
    conn.execute(
        "UPDATE campaign_attempts SET ended_at = ?, outcome = 'interrupted', cause = ? "
        "WHERE campaign_id = ? AND ended_at IS NULL",
        (now, INTERRUPTED, campaign_id),
    )
    interrupted = conn.execute(
        "UPDATE campaign_rows SET outcome = 'interrupted', updated_at = ?, next_attempt_at = ?, "
        "state = CASE WHEN attempts >= ? THEN 'failed' ELSE 'retry' END, "
        "reason = CASE WHEN attempts >= ? THEN ? END "
        "WHERE campaign_id = ? AND state = 'in_progress'",
        (now, now + retry_delay, max_attempts, max_attempts, INTERRUPTED, campaign_id),
    ).rowcount
    # max_attempts may be lower than in the run that scheduled these retries
    conn.execute(
        "UPDATE campaign_rows SET state = 'no_answer', next_attempt_at = NULL, updated_at = ? "
        "WHERE campaign_id = ? AND state = 'retry' AND attempts >= ?",
        (now, campaign_id, max_attempts),
    )
    return CampaignOpened(True, None, interrupted)


def _insert(conn: sqlite3.Connection, definition: CampaignDefinition) -> str | None:
    """Store a new campaign; returns the campaign this file and bot had before it changed."""
    previous = conn.execute(
        "SELECT campaign_id FROM campaigns WHERE csv_path = ? AND bot_id = ? "
        "ORDER BY created_at DESC LIMIT 1",
        (definition.csv_path, definition.bot_id),
    ).fetchone()
    now, campaign_id = time.time(), definition.campaign_id
    conn.execute(
        "INSERT INTO campaigns VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            campaign_id,
            definition.bot_id,
            definition.csv_path,
            definition.csv_sha256,
            definition.phone_column,
            len(definition.rows),
            now,
        ),
    )
    conn.executemany(
        "INSERT INTO campaign_rows (campaign_id, row_number, phone, variables, state, reason, "
        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (
                campaign_id,
                row.row_number,
                row.phone,
                json.dumps(row.variables),
                row.state,
                row.reason,
                now,
            )
            for row in definition.rows
        ],
    )
    return previous[0] if previous else None


def _select_rows(
    conn: sqlite3.Connection, campaign_id: str, states: Sequence[RowState]
) -> list[StoredRow]:
    sql = f"SELECT {ROW_COLUMNS} FROM campaign_rows WHERE campaign_id = ?"
    params: list[Any] = [campaign_id]
    if states:
        sql += f" AND state IN ({', '.join('?' * len(states))})"
        params.extend(states)
    rows = conn.execute(sql + " ORDER BY row_number", params).fetchall()
    return [
        StoredRow(number, phone, json.loads(variables), *rest)
        for number, phone, variables, *rest in rows
    ]


def _select_counts(conn: sqlite3.Connection, campaign_id: str) -> CampaignCounts | None:
    campaign = conn.execute(
        "SELECT bot_id, csv_path, total FROM campaigns WHERE campaign_id = ?", (campaign_id,)
    ).fetchone()
    if campaign is None:
        return None
    per_state = conn.execute(
        "SELECT state, COUNT(*) FROM campaign_rows WHERE campaign_id = ? GROUP BY state",
        (campaign_id,),
    )
    return CampaignCounts(campaign_id, *campaign, **dict(per_state.fetchall()))
