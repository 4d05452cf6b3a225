"""Connections of the PostgreSQL results store, for one event loop at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import TupleRow

AsyncConn = psycopg.AsyncConnection[TupleRow]


class ConnectionPool:
    """Up to ``size`` connections for the event loop, opened when first needed. A new
    loop (the CLI runs one per command) gets new connections: an old loop's are ended."""

    def __init__(self, connect: Callable[[], Awaitable[AsyncConn]], size: int) -> None:
        self._connect = connect
        self._size = size
        self._idle: list[AsyncConn] = []
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConn]:
        loop = asyncio.get_running_loop()
        if self._slots is None or loop is not self._loop:
            self._end_idle()
            self._loop, self._slots = loop, asyncio.Semaphore(self._size)
        async with self._slots:
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                yield conn
            finally:
                self._give_back(conn)

    def close(self) -> None:
        self._closed = True
        self._end_idle()

    def _give_back(self, conn: AsyncConn) -> None:
        if conn.broken:  # the server went away: the idle ones are as dead
            self._end_idle()
        # one left mid-statement (its task was cancelled) or broken is not reused
        if self._closed or conn.info.transaction_status != TransactionStatus.IDLE:
            end_connection(conn)
        else:
            self._idle.append(conn)

    def _end_idle(self) -> None:
        while self._idle:
            end_connection(self._idle.pop())


def end_connection(conn: AsyncConn) -> None:
    """``AsyncConnection.close()`` only calls libpq's PQfinish, which never waits: calling it
    directly lets blocking code end the connections of a loop that has finished."""
    conn.pgconn.finish()
