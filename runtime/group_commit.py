"""Durable SQLite writes off the event loop: one writer thread, one connection, group commit.

Callers queue ``Work`` (a function of the connection) and wait for it: on an event loop
with ``await writer.call(work)``, from a thread with ``writer.call_sync(work)``. The thread
takes the first piece of work, then everything else already queued, and runs the lot in
one transaction; waiters are settled only after the COMMIT returned, so with
``synchronous=FULL`` the work is on disk when the caller resumes. While one commit's fsync
runs, the next batch queues up, so many concurrent writers share each fsync.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger("dialplan.outbox")
T = TypeVar("T")

# an event loop's future or a thread's: both are settled the same way
Waiter = asyncio.Future[Any] | concurrent.futures.Future[Any]
_STOP = object()


@dataclass(frozen=True)
class Work(Generic[T]):
    """Statements to run inside the writer's current transaction. ``notify``: listeners
    hear about the commit once this work has succeeded."""

    run: Callable[[sqlite3.Connection], T]
    writes: bool = False
    notify: bool = False


class GroupCommitWriter:
    """``connect()`` opens the connection on the writer thread (its errors are raised
    here); failures are raised as ``error(message)``, the message starting with ``name``."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        name: str,
        error: Callable[[str], Exception],
        what: str = "the outbox",  # how its errors name the database ("the campaign state")
    ) -> None:
        self.name = name
        self.error = error
        self.what = what
        self.listeners: list[Callable[[], None]] = []
        self.transactions = 0
        self.operations = 0
        self._queue: queue.SimpleQueue[tuple[Work[Any], Waiter] | object] = queue.SimpleQueue()
        self._closed = False
        opened: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._serve, args=(connect, opened), name=f"writer:{name}", daemon=True
        )
        self._thread.start()
        try:
            opened.result()
        except BaseException:
            self._thread.join()
            raise

    async def call(self, work: Work[T]) -> T:
        waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._submit(work, waiter)
        # a cancelled caller stops waiting; the work is done all the same
        return await waiter

    def call_sync(self, work: Work[T]) -> T:
        waiter: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._submit(work, waiter)
        return waiter.result()

    def close(self) -> None:
        """Finish the queued work, then close the connection. Idempotent."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join()

    def _submit(self, work: Work[Any], waiter: Waiter) -> None:
        if self._closed:
            raise self.error(f"{self.name}: {self.what} is closed")
        self._queue.put((work, waiter))

    # -- the writer thread -------------------------------------------------------------

    def _serve(
        self, connect: Callable[[], sqlite3.Connection], opened: concurrent.futures.Future[None]
    ) -> None:
        try:
            conn = connect()
        except BaseException as exc:
            opened.set_exception(exc)
            return
        opened.set_result(None)
        try:
            while (batch := self._next_batch()) is not None:
                self._commit(conn, batch)
        finally:
            conn.close()
            # work queued while close() ran must not wait forever
            closed = self.error(f"{self.name}: {self.what} is closed")
            _settle([(waiter, closed, True) for _, waiter in self._drain()])

    def _next_batch(self) -> list[tuple[Work[Any], Waiter]] | None:
        """Block for the first piece of work, then take whatever else is queued; None
        once closed."""
        item = self._queue.get()
        batch: list[tuple[Work[Any], Waiter]] = []
        while item is not _STOP:
            assert isinstance(item, tuple)
            batch.append(item)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch
        if batch:
            self._queue.put(_STOP)  # commit what came before the stop first
            return batch
        return None

    def _drain(self) -> list[tuple[Work[Any], Waiter]]:
        left: list[tuple[Work[Any], Waiter]] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return left
            if isinstance(item, tuple):
                left.append(item)

    def _commit(self, conn: sqlite3.Connection, batch: list[tuple[Work[Any], Waiter]]) -> None:
        """One transaction for the whole batch; each write in its own savepoint, so one
        failing piece of work does not undo the others."""
        outcomes: list[tuple[Waiter, Any, bool]] = []
        notify = False
        try:
            conn.execute("BEGIN IMMEDIATE" if any(w.writes for w, _ in batch) else "BEGIN")
            for work, waiter in batch:
                if work.writes:
                    conn.execute("SAVEPOINT work")
                try:
                    outcomes.append((waiter, work.run(conn), False))
                    notify = notify or work.notify
                except Exception as exc:
                    if work.writes:
                        conn.execute("ROLLBACK TO work")
                    outcomes.append((waiter, exc, True))
                if work.writes:
                    conn.execute("RELEASE work")
            conn.execute("COMMIT")
        except Exception as exc:  # disk full, I/O error, or a bug: nothing here is durable
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            failure = self.error(f"{self.name}: cannot write {self.what}: {exc}")
            _settle([(waiter, failure, True) for _, waiter in batch])
            return
        self.transactions += 1
        self.operations += len(batch)
        _settle(outcomes)
        if notify:
            for listener in list(self.listeners):
                try:
                    listener()
                except Exception:
                    log.exception("an outbox listener failed")


def _settle(outcomes: Sequence[tuple[Waiter, Any, bool]]) -> None:
    """Resolve waiters from the writer thread: a thread's future directly, an event
    loop's with one call_soon_threadsafe per loop for the whole batch (one wake-up)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Waiter, Any, bool]]] = {}
    for outcome in outcomes:
        waiter = outcome[0]
        if isinstance(waiter, asyncio.Future):
            by_loop.setdefault(waiter.get_loop(), []).append(outcome)
        else:
            _resolve([outcome])
    for loop, on_loop in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            loop.call_soon_threadsafe(_resolve, on_loop)


def _resolve(outcomes: Sequence[tuple[Waiter, Any, bool]]) -> None:
    for waiter, value, failed in outcomes:
        if waiter.done():  # the caller stopped waiting (cancelled)
            continue
        if failed:
            waiter.set_exception(value)
        else:
            waiter.set_result(value)
