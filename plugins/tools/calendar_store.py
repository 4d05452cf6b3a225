"""The SQLite file behind the ``calendar_slots`` / ``calendar_book`` tools.

One row per booking. ``UNIQUE(date, time)`` is what makes double-booking impossible: two
calls may both see a slot as free, but only one INSERT can succeed, whichever process or
thread it comes from. Every operation opens its own connection in a worker thread
(``asyncio.to_thread``), so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import sqlite3
import threading
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

# Readable over the phone: no 0/O, 1/I/L look-alikes.
REFERENCE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
REFERENCE_LENGTH = 6
# Seconds a writer waits for another writer's lock before giving up ("database is locked").
BUSY_TIMEOUT = 10.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS bookings (
    id          INTEGER PRIMARY KEY,
    reference   TEXT NOT NULL UNIQUE,
    date        TEXT NOT NULL,          -- YYYY-MM-DD in the calendar's time zone
    time        TEXT NOT NULL,          -- HH:MM, the slot's start
    name        TEXT NOT NULL,
    service     TEXT,
    phone       TEXT,
    session_id  TEXT,                   -- the call that booked it
    created_at  TEXT NOT NULL,          -- UTC, ISO 8601
    UNIQUE (date, time)
);
"""


class SlotTaken(Exception):
    """Someone else holds this date and time."""


@dataclass(frozen=True)
class NewBooking:
    date: dt.date
    time: str
    name: str
    service: str | None = None
    phone: str | None = None
    session_id: str | None = None


# Schema creation and the switch to WAL take a write lock; doing them once per file per
# process keeps concurrent first calls from tripping over each other.
_ready_lock = threading.Lock()
_ready_files: set[Path] = set()


class BookingStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def booked_times(self, day: dt.date) -> set[str]:
        """Start times (HH:MM) already booked on ``day``."""
        return await asyncio.to_thread(self._booked_times, day)

    async def add(self, booking: NewBooking) -> str:
        """Insert the booking and return its reference; `SlotTaken` if the slot is held."""
        return await asyncio.to_thread(self._add, booking)

    def _connect(self) -> sqlite3.Connection:
        self._ensure_schema()
        return sqlite3.connect(self.path, timeout=BUSY_TIMEOUT)

    def _ensure_schema(self) -> None:
        path = self.path.resolve()
        with _ready_lock:
            # the file may have been removed since (a test, an operator starting afresh)
            if path in _ready_files and path.exists():
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT)) as connection:
                # WAL: readers (slot look-ups) never block the writer and vice versa
                connection.execute("PRAGMA journal_mode=WAL")
                connection.executescript(SCHEMA)
            _ready_files.add(path)

    def _booked_times(self, day: dt.date) -> set[str]:
        with closing(self._connect()) as connection:
            rows = connection.execute(
                "SELECT time FROM bookings WHERE date = ?", (day.isoformat(),)
            ).fetchall()
        return {time for (time,) in rows}

    def _add(self, booking: NewBooking) -> str:
        with closing(self._connect()) as connection:
            # a reference collision is astronomically rare, but retrying costs nothing
            for _attempt in range(5):
                reference = new_reference()
                try:
                    with connection:  # one transaction: committed, or rolled back on error
                        connection.execute(
                            "INSERT INTO bookings (reference, date, time, name, service, phone,"
                            " session_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (
                                reference,
                                booking.date.isoformat(),
                                booking.time,
                                booking.name,
                                booking.service,
                                booking.phone,
                                booking.session_id,
                                dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                            ),
                        )
                    return reference
                except sqlite3.IntegrityError as exc:
                    if "bookings.date" in str(exc):  # UNIQUE (date, time)
                        raise SlotTaken(f"{booking.date} {booking.time}") from None
                    if "bookings.reference" not in str(exc):
                        raise
        raise RuntimeError("could not generate a unique booking reference")


def new_reference() -> str:
    return "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(REFERENCE_LENGTH))
