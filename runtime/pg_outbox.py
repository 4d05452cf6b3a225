"""The results store a fleet shares: finished call records and their deliveries in
PostgreSQL. A drop-in for the SQLite ``runtime.outbox.Outbox`` (still the default, one
file per worker), with the same methods and semantics, and what sharing adds:

    dialplan_records         session_id (key), bot_id, ended_at, disconnected_by, held,
                             held_by (worker), holder_pid (its session), body (JSON)
    dialplan_deliveries      (session_id, sink) key: state pending | delivered | dead,
                             attempts, next_attempt_at, claimed_by, last_error,
                             delivered_at, version
    dialplan_results_schema  the schema version; tables are created on first use

- A held record belongs to the worker that put it (``worker_id``). ``held()`` returns this
  worker's, and those of workers whose database session has ended (crashed, stopped), so
  a worker restarting never releases a record whose post-call work is still running on
  another, live worker. Worker ids must be unique among live workers (hostname:pid is).
- ``due()`` claims what it hands out: rows taken ``FOR UPDATE SKIP LOCKED`` and leased to
  this worker (``claimed_by``, ``next_attempt_at`` pushed ``lease`` seconds ahead), so two
  deliverers never send one delivery at the same time. Each call renews this worker's
  leases and hands its unsent claims back first; a lease that runs out (the worker died
  mid-send) makes the delivery due again, for any worker. An outcome clears the claim.
- Times are the database's clock, so workers with skewed clocks agree on what is due.

``put`` returns once PostgreSQL has committed. Event-loop calls share up to
``connections`` connections, so concurrent puts commit side by side and the server
flushes their WAL together; the blocking (CLI) calls use one session of their own, which
also marks this worker alive for ``held()``. Connect through PgBouncer only in session
mode: that liveness is a server session.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from runtime.errors import MissingExtra
from runtime.outbox import (
    Delivery,
    DeliveryState,
    ListFilter,
    OutboxEntry,
    OutboxError,
    UnknownRecord,
)
from runtime.pg_outbox_sql import (
    ADOPT_HELD,
    CLAIM_DUE,
    PUT_RECORD,
    RENEW_CLAIMS,
    REPLAY,
    RETRY,
    SCHEDULED,
    SCHEMA,
    SCHEMA_LOCK,
    SCHEMA_VERSION,
    SET_OUTCOME,
    SET_SCHEMA_VERSION,
    select_entries,
)
from runtime.pg_pool import ConnectionPool
from runtime.record import CallRecord

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.rows import TupleRow
except ImportError as missing:  # the optional extra: say how to install it
    raise MissingExtra("PostgreSQL results store", "psycopg", "postgres") from missing

log = logging.getLogger("dialplan.outbox")
T = TypeVar("T")
AsyncConn = psycopg.AsyncConnection[TupleRow]
SyncConn = psycopg.Connection[TupleRow]

DEFAULT_LEASE_S = 60.0  # longer than any send (the deliverer's timeout is 10 s)
DEFAULT_CONNECTIONS = 4
CONNECT_TIMEOUT_S = 10  # libpq waits forever on a host that drops packets


class PostgresOutboxError(OutboxError):
    """The results database cannot be reached or used; the message names the host and
    database (never the password) and the fix."""


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def display_dsn(dsn: str) -> str:
    """``postgresql://user@host:port/dbname``: the DSN without its password, for messages."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise PostgresOutboxError(
            f"not a PostgreSQL DSN ({exc}); write postgresql://user:password@host:5432/dbname "
            "or host=... dbname=..."
        ) from None
    user = f"{params['user']}@" if params.get("user") else ""
    host = params.get("host") or params.get("hostaddr") or ""
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{user}{host}{port}/{params.get('dbname') or ''}"


class PostgresOutbox:
    """The shared store at ``dsn``; ``sinks`` are the names every released record is
    queued for. Async methods serve one event loop at a time; the blocking methods (the
    CLI's) block the calling thread."""

    def __init__(
        self,
        dsn: str,
        *,
        sinks: Sequence[str] = (),
        worker_id: str | None = None,
        create: bool = True,
        connections: int = DEFAULT_CONNECTIONS,
        lease: float = DEFAULT_LEASE_S,
    ) -> None:
        self.path = display_dsn(dsn)
        self.sinks = tuple(dict.fromkeys(sinks))
        self.worker_id = worker_id or default_worker_id()
        self.lease = lease
        self._dsn = dsn
        self._listeners: list[Callable[[], None]] = []
        self._session_lock = threading.Lock()
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._session = self._connect_session()
        try:
            self._prepare_schema(create)
        except BaseException:
            self._session.close()
            raise
        self._holder_pid = self._session.info.backend_pid
        self._pool = ConnectionPool(self._connect_async, connections)

    # -- the event loop's API ----------------------------------------------------------

    async def put(self, record: CallRecord, *, held: bool = False) -> None:
        """Store ``record`` durably. ``held``: post-call analysis is still running, so it
        is not delivered until ``release``. Once called, the write happens even if the
        caller is cancelled while waiting."""
        params = self._put_params(record, held)

        async def run(conn: AsyncConn) -> None:
            await conn.execute(PUT_RECORD, params)

        await self._run(run, notify=not held)

    async def release(self, record: CallRecord) -> None:
        """Replace the stored record (now with analysis results) and make it deliverable."""
        await self.put(record, held=False)

    async def held(self) -> list[CallRecord]:
        """Records held by this worker, or by workers that are gone; this worker takes
        them over (to release them)."""

        async def run(conn: AsyncConn) -> list[tuple[Any, ...]]:
            params = {"worker": self.worker_id, "pid": self._holder_pid}
            return await (await conn.execute(ADOPT_HELD, params)).fetchall()

        rows = sorted(await self._run(run), key=lambda row: row[1])
        return [CallRecord.model_validate_json(body) for body, _ in rows]

    async def due(self, sinks: Iterable[str], *, limit: int) -> list[Delivery]:
        """This worker's claimed deliveries and newly claimed due ones (with their body),
        then, up to ``limit``, the next scheduled ones (without)."""
        params: dict[str, Any] = {
            "sinks": list(sinks),
            "worker": self.worker_id,
            "lease": self.lease,
        }
        if not params["sinks"] or limit < 1:
            return []

        async def run(conn: AsyncConn) -> list[Delivery]:
            found = _deliveries(await (await conn.execute(RENEW_CLAIMS, params)).fetchall())
            if len(found) < limit:
                claim = {**params, "limit": limit - len(found)}
                found += _deliveries(await (await conn.execute(CLAIM_DUE, claim)).fetchall())
            if len(found) < limit:
                later = {**params, "limit": limit - len(found)}
                rows = await (await conn.execute(SCHEDULED, later)).fetchall()
                found += _deliveries([(*row, None) for row in rows])  # no body: not due
            return found

        return await self._run(run)

    async def mark_delivered(self, delivery: Delivery) -> None:
        await self._outcome(delivery, "delivered", None, None)

    async def mark_failed(self, delivery: Delivery, error: str, *, retry_at: float | None) -> None:
        """Record a failed attempt: retried at ``retry_at`` (this host's clock), or dead
        when it is None."""
        state: DeliveryState = "pending" if retry_at is not None else "dead"
        await self._outcome(delivery, state, error, retry_at)

    async def aclose(self) -> None:
        """Finish the operations under way, then close every connection. Idempotent."""
        self._closed = True
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        self.close()

    # -- blocking API, for the CLI -----------------------------------------------------

    def entries(
        self, state: ListFilter | None = None, limit: int | None = None
    ) -> list[OutboxEntry]:
        """Records, most recently ended first; ``state`` keeps held records, or records
        with at least one delivery in that state."""
        return self._blocking(lambda conn: select_entries(conn, state, limit))

    def entry(self, session_id: str) -> OutboxEntry | None:
        found = self._blocking(lambda conn: select_entries(conn, None, 1, session_id))
        return found[0] if found else None

    def retry(self, session_id: str) -> int:
        """Make the record's pending and dead deliveries due now with their attempts reset;
        returns how many. Delivered ones stay delivered (``replay`` resends those)."""

        def run(conn: SyncConn) -> int:
            with conn.transaction():
                known = conn.execute(
                    "SELECT 1 FROM dialplan_records WHERE session_id = %s FOR UPDATE",
                    (session_id,),
                )
                if known.fetchone() is None:
                    raise UnknownRecord(
                        f"{self.path}: no record with session_id {session_id!r} "
                        "(`dialplan outbox list` shows what it holds)"
                    )
                return conn.execute(RETRY, (session_id,)).rowcount

        return self._blocking(run, notify=True)

    def replay(self, since: dt.datetime) -> int:
        """Queue every released record that ended at or after ``since`` again, for every
        sink it has a delivery for and every sink of this store, delivered ones too;
        returns how many records."""

        def run(conn: SyncConn) -> int:
            with conn.transaction():
                selected = conn.execute(
                    "SELECT session_id FROM dialplan_records WHERE NOT held AND ended_at >= %s "
                    "ORDER BY session_id FOR UPDATE",
                    (_timestamp(since),),
                )
                session_ids = [session_id for (session_id,) in selected]
                conn.execute(REPLAY, {"session_ids": session_ids, "sinks": list(self.sinks)})
            return len(session_ids)

        return self._blocking(run, notify=True)

    def close(self) -> None:
        """Close every connection; operations still under way fail. Idempotent."""
        with self._session_lock:
            self._closed = True
            self._pool.close()
            self._session.close()

    def __enter__(self) -> PostgresOutbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_listener(self, listener: Callable[[], None]) -> None:
        """``listener()`` runs after every commit that made a delivery due here (a
        release, a retry, a replay); it must be thread-safe and quick. Deliveries other
        workers make due are found by the deliverer's polling."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        self._listeners.remove(listener)

    # -- running operations ------------------------------------------------------------

    async def _run(self, operation: Callable[[AsyncConn], Awaitable[T]], notify: bool = False) -> T:
        if self._closed:
            raise PostgresOutboxError(f"{self.path}: the results store is closed")
        task = asyncio.ensure_future(self._on_pool(operation, notify))
        self._in_flight.add(task)
        task.add_done_callback(self._finished)
        # a cancelled caller stops waiting; the operation is done all the same
        return await asyncio.shield(task)

    async def _on_pool(self, operation: Callable[[AsyncConn], Awaitable[T]], notify: bool) -> T:
        try:
            result = await self._once_more_if_broken(operation)
        except psycopg.Error as exc:
            raise self._failed(exc) from exc
        if notify:
            self._notify()
        return result

    async def _once_more_if_broken(self, operation: Callable[[AsyncConn], Awaitable[T]]) -> T:
        """A restart or failover of the server breaks every pooled connection; every
        statement here is idempotent, so it runs again on a new one."""
        async with self._pool.connection() as conn:
            try:
                return await operation(conn)
            except psycopg.OperationalError:
                if not conn.broken:
                    raise
        async with self._pool.connection() as conn:
            return await operation(conn)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that was cancelled never will

    def _blocking(self, operation: Callable[[SyncConn], T], notify: bool = False) -> T:
        with self._session_lock:
            if self._closed:
                raise PostgresOutboxError(f"{self.path}: the results store is closed")
            try:
                result = operation(self._session)
            except psycopg.Error as exc:
                raise self._failed(exc) from exc
        if notify:
            self._notify()
        return result

    def _failed(self, exc: psycopg.Error) -> PostgresOutboxError:
        return PostgresOutboxError(f"{self.path}: the results database failed: {_first_line(exc)}")

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:  # the write is committed; a listener's bug must not undo that
                log.exception("an outbox listener failed")

    async def _outcome(
        self, delivery: Delivery, state: DeliveryState, error: str | None, at: float | None
    ) -> None:
        params = {
            "state": state,
            "attempt": delivery.attempt,
            "error": error,
            # this host's clock to the database's: only the delay carries over
            "delay": 0.0 if at is None else at - time.time(),
            "session_id": delivery.session_id,
            "sink": delivery.sink,
            "version": delivery.version,
        }

        async def run(conn: AsyncConn) -> None:
            # the version check drops the outcome of an attempt whose delivery was
            # re-queued meanwhile: the new content still has to go out
            await conn.execute(SET_OUTCOME, params)

        await self._run(run)

    def _put_params(self, record: CallRecord, held: bool) -> dict[str, Any]:
        return {
            "session_id": record.session_id,
            "bot_id": record.bot_id,
            "ended_at": _timestamp(record.ended_at or record.started_at),
            "disconnected_by": record.disconnected_by,
            "held": held,
            "held_by": self.worker_id if held else None,
            "holder_pid": self._holder_pid if held else None,
            "body": record.model_dump_json(),
            "sinks": [] if held else list(self.sinks),
        }

    # -- connecting --------------------------------------------------------------------

    def _connect_session(self) -> SyncConn:
        try:
            return psycopg.connect(self._dsn, autocommit=True, **self._connect_defaults())
        except psycopg.Error as exc:
            raise self._unreachable(exc) from None

    async def _connect_async(self) -> AsyncConn:
        try:
            return await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, **self._connect_defaults()
            )
        except psycopg.Error as exc:
            raise self._unreachable(exc) from None

    def _connect_defaults(self) -> dict[str, Any]:
        given = conninfo_to_dict(self._dsn)
        defaults = {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "application_name": f"dialplan {self.worker_id}",  # who is who in pg_stat_activity
        }
        return {key: value for key, value in defaults.items() if key not in given}

    def _unreachable(self, exc: psycopg.Error) -> PostgresOutboxError:
        reason = _first_line(exc)
        password = conninfo_to_dict(self._dsn).get("password")
        if password:  # libpq never echoes it; make sure no message ever does
            reason = reason.replace(str(password), "***")
        return PostgresOutboxError(
            f"{self.path}: cannot connect to the results database: {reason} (check that "
            "PostgreSQL runs there and that the DSN's host, port, database, user and password "
            "are right; set it with --postgres DSN or DIALPLAN_RESULTS_DSN)"
        )

    def _prepare_schema(self, create: bool) -> None:
        conn = self._session
        try:
            with conn.transaction():
                # workers starting together would race to create the same tables
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                version = _schema_version(conn)
                if version is None and create:
                    conn.execute(SCHEMA)
                    conn.execute(SET_SCHEMA_VERSION, (SCHEMA_VERSION,))
                    version = SCHEMA_VERSION
        except psycopg.Error as exc:
            raise PostgresOutboxError(
                f"{self.path}: cannot prepare the results tables: {_first_line(exc)} (the "
                "user needs CREATE on the schema the first time, or create them as its owner)"
            ) from exc
        if version is None:
            raise PostgresOutboxError(
                f"{self.path}: no dialplan results here (the call server creates the tables "
                "on first start; check that --postgres or DIALPLAN_RESULTS_DSN names its database)"
            )
        if version > SCHEMA_VERSION:
            raise PostgresOutboxError(
                f"{self.path}: written by a newer dialplan (results schema {version}, this "
                f"one knows {SCHEMA_VERSION}); upgrade dialplan or use another database"
            )


def _schema_version(conn: SyncConn) -> int | None:
    """None when the tables have not been created yet."""
    created = conn.execute("SELECT to_regclass('dialplan_results_schema') IS NOT NULL")
    if created.fetchone() != (True,):
        return None
    row = conn.execute("SELECT max(version) FROM dialplan_results_schema").fetchone()
    return row[0] if row is not None else None


def _deliveries(rows: Sequence[tuple[Any, ...]]) -> list[Delivery]:
    """Rows of (session_id, sink, attempts, version, next_attempt_at, body)."""
    return [
        Delivery(session_id, sink, attempts + 1, version, next_at, body)
        for session_id, sink, attempts, version, next_at, body in rows
    ]


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _timestamp(moment: dt.datetime) -> float:
    """Seconds since the epoch; a naive datetime is taken as UTC, like every record's."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.timestamp()
