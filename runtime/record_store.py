"""What `CallResults`, the `Deliverer` and `dialplan outbox` need of a results store.

Two stores have it: the SQLite ``runtime.outbox.Outbox``, one file per worker (the
default), and ``runtime.pg_outbox.PostgresOutbox``, one database a fleet of workers
shares. ``runtime.outbox`` documents the semantics both keep.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

from runtime.outbox import Delivery, ListFilter, OutboxEntry
from runtime.record import CallRecord


class RecordStore(Protocol):
    @property
    def path(self) -> Path | str:
        """Where the records are, for messages: a file, or a DSN without its password."""
        ...

    @property
    def sinks(self) -> tuple[str, ...]:
        """The sinks every released record is queued for."""
        ...

    # -- the event loop's API ----------------------------------------------------------

    async def put(self, record: CallRecord, *, held: bool = False) -> None: ...

    async def release(self, record: CallRecord) -> None: ...

    async def held(self) -> list[CallRecord]: ...

    async def due(self, sinks: Iterable[str], *, limit: int) -> list[Delivery]: ...

    async def mark_delivered(self, delivery: Delivery) -> None: ...

    async def mark_failed(
        self, delivery: Delivery, error: str, *, retry_at: float | None
    ) -> None: ...

    async def aclose(self) -> None: ...

    # -- blocking API, for the CLI ---------------------------------------------------------

    def entries(
        self, state: ListFilter | None = None, limit: int | None = None
    ) -> list[OutboxEntry]: ...

    def entry(self, session_id: str) -> OutboxEntry | None: ...

    def retry(self, session_id: str) -> int: ...

    def replay(self, since: dt.datetime) -> int: ...

    def close(self) -> None: ...

    def add_listener(self, listener: Callable[[], None]) -> None: ...

    def remove_listener(self, listener: Callable[[], None]) -> None: ...
