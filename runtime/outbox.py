"""The durable outbox: finished call records in SQLite, with per-sink delivery state.

A call's record is put here before the call's resources are released, so nothing known
about a call is lost to a crash after hang-up. ``runtime.delivery.Deliverer`` then sends
it to every configured sink until each has it.

Durability without stalling live audio: every statement runs on one writer thread with
one connection (WAL journal, ``synchronous=FULL``; see ``runtime.group_commit``).
Operations queued while a commit is being fsynced go into the next transaction together,
and each one's waiter resumes only after the commit that holds it — when
``await outbox.put(record)`` returns, the record is on disk, and the event loop never
waited on fsync.

    records     session_id (key), bot_id, ended_at, disconnected_by, held, body (JSON)
    deliveries  (session_id, sink) key: state pending | delivered | dead, attempts,
                next_attempt_at, last_error, delivered_at, version

A record put ``held`` (post-call analysis still running) is not deliverable; ``release``
stores the final record and queues one delivery per configured sink. ``held()`` finds
records a crash left held. Putting a session_id again replaces its record and re-queues
its deliveries; it never adds a second row. ``version`` grows on every re-queue, so an
attempt that was in flight when its delivery was re-queued cannot mark the new content
delivered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from runtime.errors import DialplanError
from runtime.group_commit import GroupCommitWriter, Work
from runtime.record import CallRecord

DeliveryState = Literal["pending", "delivered", "dead"]
ListFilter = Literal["pending", "delivered", "dead", "held"]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 5000  # another process (the CLI) may hold the write lock briefly
SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    session_id TEXT PRIMARY KEY,
    bot_id TEXT NOT NULL,
    ended_at REAL,
    disconnected_by TEXT,
    held INTEGER NOT NULL,
    body TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS records_ended ON records (ended_at);
CREATE TABLE IF NOT EXISTS deliveries (
    session_id TEXT NOT NULL REFERENCES records (session_id) ON DELETE CASCADE,
    sink TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    delivered_at REAL,
    version INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (session_id, sink)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, next_attempt_at);
"""
UPSERT_RECORD = """
INSERT INTO records (session_id, bot_id, ended_at, disconnected_by, held, body, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (session_id) DO UPDATE SET
    bot_id = excluded.bot_id, ended_at = excluded.ended_at,
    disconnected_by = excluded.disconnected_by, held = excluded.held, body = excluded.body,
    updated_at = excluded.updated_at
"""
QUEUE_DELIVERY = """
INSERT INTO deliveries (session_id, sink, state, attempts, next_attempt_at)
VALUES (?, ?, 'pending', 0, ?)
ON CONFLICT (session_id, sink) DO UPDATE SET
    state = 'pending', attempts = 0, next_attempt_at = excluded.next_attempt_at,
    last_error = NULL, delivered_at = NULL, version = version + 1
"""


class OutboxError(DialplanError):
    """The outbox file cannot be opened or written; the message names the file."""


class UnknownRecord(OutboxError):
    pass


@dataclass(frozen=True)
class Delivery:
    """One attempt to come: a record's JSON for one sink. ``body`` is None while the
    delivery is not due yet (``Outbox.due`` reports when it will be)."""

    session_id: str
    sink: str
    attempt: int  # 1 for the first try
    version: int
    next_attempt_at: float
    body: str | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.session_id, self.sink)

    def record(self) -> CallRecord:
        assert self.body is not None, "only a due delivery carries its record"
        return CallRecord.model_validate_json(self.body)


@dataclass(frozen=True)
class SinkStatus:
    sink: str
    state: DeliveryState
    attempts: int
    next_attempt_at: float
    last_error: str | None
    delivered_at: float | None


@dataclass(frozen=True)
class OutboxEntry:
    """What ``dialplan outbox list`` shows of one record."""

    session_id: str
    bot_id: str
    ended_at: dt.datetime | None
    disconnected_by: str | None
    held: bool
    deliveries: tuple[SinkStatus, ...]


class Outbox:
    """The outbox file at ``path``; ``sinks`` are the names every released record is
    queued for. Async methods are for the event loop; ``*_sync`` and the CLI methods
    block the calling thread (never call them on a loop that serves calls)."""

    def __init__(self, path: str | Path, *, sinks: Sequence[str] = (), create: bool = True) -> None:
        self.path = Path(path)
        self.sinks = tuple(dict.fromkeys(sinks))
        if not create and not self.path.is_file():
            raise OutboxError(
                f"{self.path}: no outbox here (the call server creates it; pass --db PATH "
                "or set DIALPLAN_OUTBOX to the file it writes)"
            )
        self._writer = GroupCommitWriter(
            lambda: _connect(self.path), name=str(self.path), error=OutboxError
        )

    @property
    def transactions(self) -> int:
        return self._writer.transactions

    @property
    def operations(self) -> int:
        """Operations committed; ``operations / transactions`` is the mean batch size."""
        return self._writer.operations

    # -- the event loop's API ----------------------------------------------------------

    async def put(self, record: CallRecord, *, held: bool = False) -> None:
        """Store ``record`` durably. ``held``: post-call analysis is still running, so it
        is not delivered until ``release``. Once called, the write happens even if the
        caller is cancelled while waiting."""
        await self._writer.call(self._put(record, held))

    async def release(self, record: CallRecord) -> None:
        """Replace the stored record (now with analysis results) and make it deliverable."""
        await self._writer.call(self._put(record, held=False))

    async def held(self) -> list[CallRecord]:
        """Records still held: after a crash, the runtime notes the interruption and
        releases them."""
        return await self._writer.call(Work(_select_held))

    async def due(self, sinks: Iterable[str], *, limit: int) -> list[Delivery]:
        """Pending deliveries to ``sinks`` of released records, earliest first; only the
        due ones (``next_attempt_at`` now or past) carry their body."""
        names = tuple(sinks)
        return await self._writer.call(
            Work(lambda conn: _select_due(conn, names, limit, time.time()))
        )

    async def mark_delivered(self, delivery: Delivery) -> None:
        await self._writer.call(_outcome(delivery, "delivered", None, None))

    async def mark_failed(self, delivery: Delivery, error: str, *, retry_at: float | None) -> None:
        """Record a failed attempt: retried at ``retry_at``, or dead when it is None."""
        state: DeliveryState = "pending" if retry_at is not None else "dead"
        await self._writer.call(_outcome(delivery, state, error, retry_at))

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # -- blocking API, for the CLI and threads -----------------------------------------

    def put_sync(self, record: CallRecord, *, held: bool = False) -> None:
        self._writer.call_sync(self._put(record, held))

    def release_sync(self, record: CallRecord) -> None:
        self._writer.call_sync(self._put(record, held=False))

    def held_sync(self) -> list[CallRecord]:
        return self._writer.call_sync(Work(_select_held))

    def entries(
        self, state: ListFilter | None = None, limit: int | None = None
    ) -> list[OutboxEntry]:
        """Records, most recently ended first; ``state`` keeps held records, or records
        with at least one delivery in that state."""
        return self._writer.call_sync(Work(lambda conn: _select_entries(conn, state, limit)))

    def entry(self, session_id: str) -> OutboxEntry | None:
        found = self._writer.call_sync(
            Work(lambda conn: _select_entries(conn, None, 1, session_id))
        )
        return found[0] if found else None

    def retry(self, session_id: str) -> int:
        """Make the record's pending and dead deliveries due now with their attempts reset;
        returns how many. Delivered ones stay delivered (``replay`` resends those)."""

        def run(conn: sqlite3.Connection) -> int:
            known = conn.execute("SELECT 1 FROM records WHERE session_id = ?", (session_id,))
            if known.fetchone() is None:
                raise UnknownRecord(
                    f"{self.path}: no record with session_id {session_id!r} "
                    "(`dialplan outbox list` shows what it holds)"
                )
            cursor = conn.execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?, "
                "last_error = NULL, version = version + 1 "
                "WHERE session_id = ? AND state IN ('pending', 'dead')",
                (time.time(), session_id),
            )
            return cursor.rowcount

        return self._writer.call_sync(Work(run, writes=True, notify=True))

    def replay(self, since: dt.datetime) -> int:
        """Queue every released record that ended at or after ``since`` again, for every
        sink it has a delivery for and every sink of this outbox, delivered ones too;
        returns how many records."""

        def run(conn: sqlite3.Connection) -> int:
            now = time.time()
            selected = [
                session_id
                for (session_id,) in conn.execute(
                    "SELECT session_id FROM records WHERE held = 0 AND ended_at >= ?",
                    (_timestamp(since),),
                )
            ]
            for session_id in selected:
                existing = conn.execute(
                    "SELECT sink FROM deliveries WHERE session_id = ?", (session_id,)
                )
                sinks = dict.fromkeys([*(sink for (sink,) in existing), *self.sinks])
                conn.executemany(QUEUE_DELIVERY, [(session_id, sink, now) for sink in sinks])
            return len(selected)

        return self._writer.call_sync(Work(run, writes=True, notify=True))

    def close(self) -> None:
        """Finish every queued operation, then close the connection. Idempotent."""
        self._writer.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_listener(self, listener: Callable[[], None]) -> None:
        """``listener()`` runs on the writer thread after every commit that made a
        delivery due (a release, a retry, a replay); it must be thread-safe and quick."""
        self._writer.listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        self._writer.listeners.remove(listener)

    def _put(self, record: CallRecord, held: bool) -> Work[None]:
        body = record.model_dump_json()  # serialised by the caller, so the writer only writes
        now = time.time()
        row = (
            record.session_id,
            record.bot_id,
            _timestamp(record.ended_at or record.started_at),
            record.disconnected_by,
            int(held),
            body,
            now,
        )
        queued = [(record.session_id, sink, now) for sink in self.sinks]

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(UPSERT_RECORD, row)
            if not held:
                conn.executemany(QUEUE_DELIVERY, queued)

        return Work(run, writes=True, notify=not held)


def _outcome(
    delivery: Delivery, state: DeliveryState, error: str | None, retry_at: float | None
) -> Work[None]:
    def run(conn: sqlite3.Connection) -> None:
        now = time.time()
        # the version check drops the outcome of an attempt whose delivery was re-queued
        # meanwhile: the new content still has to go out
        conn.execute(
            "UPDATE deliveries SET state = ?, attempts = ?, last_error = ?, "
            "next_attempt_at = ?, delivered_at = ? "
            "WHERE session_id = ? AND sink = ? AND version = ?",
            (
                state,
                delivery.attempt,
                error,
                retry_at if retry_at is not None else now,
                now if state == "delivered" else None,
                delivery.session_id,
                delivery.sink,
                delivery.version,
            ),
        )

    return Work(run, writes=True)


# -- SQL, run on the writer thread -----------------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise OutboxError(
            f"{path}: cannot open the outbox: {exc} (check that the directory exists and "
            "is writable)"
        ) from None
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise OutboxError(
                f"{path}: written by a newer dialplan (outbox schema {version}, this one "
                f"knows {SCHEMA_VERSION}); upgrade dialplan or use another file"
            )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise OutboxError(f"{path}: SQLite refused WAL mode ({mode}); use a local disk")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.executescript(SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except sqlite3.OperationalError as exc:
        conn.close()
        raise OutboxError(f"{path}: cannot open the outbox: {exc}") from None
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise OutboxError(
            f"{path}: not a dialplan outbox ({exc}); point --db or DIALPLAN_OUTBOX at another file"
        ) from None
    except BaseException:
        conn.close()
        raise
    return conn


def _select_held(conn: sqlite3.Connection) -> list[CallRecord]:
    rows = conn.execute("SELECT body FROM records WHERE held = 1 ORDER BY updated_at")
    return [CallRecord.model_validate_json(body) for (body,) in rows]


def _select_due(
    conn: sqlite3.Connection, sinks: tuple[str, ...], limit: int, now: float
) -> list[Delivery]:
    if not sinks:
        return []
    marks = ", ".join("?" * len(sinks))
    rows = conn.execute(
        "SELECT d.session_id, d.sink, d.attempts, d.version, d.next_attempt_at, "
        "CASE WHEN d.next_attempt_at <= ? THEN r.body END "
        "FROM deliveries d JOIN records r ON r.session_id = d.session_id "
        f"WHERE d.state = 'pending' AND r.held = 0 AND d.sink IN ({marks}) "
        "ORDER BY d.next_attempt_at LIMIT ?",
        (now, *sinks, limit),
    )
    return [
        Delivery(session_id, sink, attempts + 1, version, next_at, body)
        for session_id, sink, attempts, version, next_at, body in rows
    ]


def _select_entries(
    conn: sqlite3.Connection,
    state: ListFilter | None,
    limit: int | None,
    session_id: str | None = None,
) -> list[OutboxEntry]:
    where: list[str] = []
    params: list[Any] = []
    if session_id is not None:
        where.append("session_id = ?")
        params.append(session_id)
    if state == "held":
        where.append("held = 1")
    elif state is not None:
        where.append(
            "EXISTS (SELECT 1 FROM deliveries d WHERE d.session_id = records.session_id "
            "AND d.state = ?)"
        )
        params.append(state)
    sql = "SELECT session_id, bot_id, ended_at, disconnected_by, held FROM records"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY ended_at DESC, session_id"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    entries = []
    for session, bot_id, ended_at, disconnected_by, held in conn.execute(sql, params).fetchall():
        statuses = conn.execute(
            "SELECT sink, state, attempts, next_attempt_at, last_error, delivered_at "
            "FROM deliveries WHERE session_id = ? ORDER BY sink",
            (session,),
        )
        entries.append(
            OutboxEntry(
                session_id=session,
                bot_id=bot_id,
                ended_at=_datetime(ended_at),
                disconnected_by=disconnected_by,
                held=bool(held),
                deliveries=tuple(SinkStatus(*row) for row in statuses),
            )
        )
    return entries


def _timestamp(moment: dt.datetime) -> float:
    """Seconds since the epoch; a naive datetime is taken as UTC, like every record's."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.timestamp()


def _datetime(timestamp: float | None) -> dt.datetime | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc)
