"""The calendar tools: a real SQLite file in tmp_path, the plugin loaded from its entry point.

"Now" is pinned by replacing `plugins.tools.calendar.utc_now`, the tools' clock. Unless a
test moves it, it is Friday 2026-11-20, 14:10 in New York; 2026-11-23 is the next Monday.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import plugins.tools.calendar as calendar_plugin
from plugins.tools.calendar_store import BookingStore, NewBooking, SlotTaken
from runtime import CallContext, ToolDefinition, ToolFailure
from runtime.call import CallRequest
from runtime.catalog import load_catalog
from runtime.registry import Registry
from runtime.resolve import plan_call
from runtime.session import build_call_session
from runtime.textchat import run_text_call, scripted_lines

from ...conftest import REPO

FRIDAY_AFTERNOON = dt.datetime(2026, 11, 20, 19, 10, tzinfo=dt.timezone.utc)  # 14:10 in NY
MONDAY = "2026-11-23"
REFERENCE = re.compile(r"^[A-Z2-9]{6}$")

OPTIONS: dict[str, Any] = {
    "database": "calendar.sqlite",  # relative: the tests chdir into tmp_path
    "timezone": "America/New_York",
    "hours": {"mon-fri": "09:00-12:00,13:00-17:00", "sat": "10:00-13:00"},
    "services": ["cleaning", "check-up"],
}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[dt.datetime], None]:
    """Pins the calendar tools' "now"; call it to move time."""
    now = [FRIDAY_AFTERNOON]
    monkeypatch.setattr(calendar_plugin, "utc_now", lambda: now[0])

    def set_now(moment: dt.datetime) -> None:
        now[0] = moment

    return set_now


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
        )
    return json.dumps(value)  # strings, numbers and lists of them are the same in TOML


def calendar_bot(rules: str = "", book_name: str | None = None, **changes: Any) -> str:
    """A rules bot binding both calendar tools with OPTIONS (plus changes; None drops one)."""
    options = {k: v for k, v in {**OPTIONS, **changes}.items() if v is not None}
    table = "\n".join(f"{key} = {toml_value(value)}" for key, value in options.items())
    renamed = f"name = {toml_value(book_name)}\n" if book_name else ""
    return (
        '[prompt]\nsystem = "static"\n[llm]\nprovider = "rules"\n'
        f"{rules}\n"
        f'[[tools]]\nuse = "calendar_slots"\n{table}\n'
        f'[[tools]]\nuse = "calendar_book"\n{renamed}{table}\n'
    )


@dataclass
class Line:
    """One call's calendar tools, as the session would build them."""

    tools: dict[str, ToolDefinition]
    call: CallContext

    async def slots(self, **arguments: Any) -> Any:
        return await self.tools["calendar_slots"].handler(arguments, self.call)

    async def book(self, **arguments: Any) -> Any:
        return await self.tools["calendar_book"].handler(arguments, self.call)


@pytest.fixture
def open_line(
    bot_dir: Callable[..., Path], registry: Registry, workdir: Path
) -> Callable[..., Line]:
    def open_line(caller: str | None = None, **changes: Any) -> Line:
        snapshot = load_catalog(bot_dir("clinic", calendar_bot(**changes)), registry)
        assert snapshot.problems == ()
        plan = plan_call(snapshot, CallRequest(bot="clinic", caller=caller), registry)
        call = plan.new_context()
        tools = {tool.name: tool.entry.factory(tool.options, call) for tool in plan.tools}
        return Line(tools, call)

    return open_line


def bookings(path: Path) -> list[tuple[Any, ...]]:
    """Read the file with a fresh connection, as another process would."""
    if not path.exists():  # never touched: the tools create it on first use
        return []
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute(
            "SELECT date, time, name, service, phone FROM bookings ORDER BY date, time"
        ).fetchall()


# --- slots ---------------------------------------------------------------------------------


async def test_slots_fit_the_opening_hours_and_the_slot_length(
    open_line: Callable[..., Line], clock: Any
) -> None:
    line = open_line(hours={"mon-fri": "09:00-11:00,13:00-14:00"}, slot_minutes=45)
    # 10:30 would end at 11:15, after closing; 13:45 likewise
    assert await line.slots(date=MONDAY) == {
        "date": MONDAY,
        "weekday": "Monday",
        "slots": ["09:00", "09:45", "13:00"],
    }


async def test_slots_offered_are_limited_spread_and_skip_bookings(
    open_line: Callable[..., Line], clock: Any
) -> None:
    line = open_line(hours={"mon": "09:00-12:00"}, max_slots_offered=3)
    assert (await line.slots(date=MONDAY))["slots"] == ["09:00", "10:00", "11:30"]
    await line.book(date=MONDAY, time="09:00", name="Ann")
    await line.book(date=MONDAY, time="10:30", name="Bob")
    # free: 09:30 10:00 11:00 11:30 -> three of them, first and last included
    result = await line.slots(date=MONDAY, service="Cleaning")
    assert result == {
        "date": MONDAY,
        "weekday": "Monday",
        "slots": ["09:30", "11:00", "11:30"],
        "service": "cleaning",
    }


async def test_today_offers_only_slots_still_ahead(
    open_line: Callable[..., Line], clock: Any
) -> None:
    line = open_line(max_slots_offered=20)
    result = await line.slots(date="today")  # Friday, 14:10 in New York
    assert result["date"] == "2026-11-20"
    assert result["slots"] == ["14:30", "15:00", "15:30", "16:00", "16:30"]


@pytest.mark.parametrize(
    ("timezone", "word", "expected"),
    [
        # 03:30 UTC on Saturday 21st is still Friday 20th, 22:30, in New York
        ("America/New_York", "today", "2026-11-20"),
        ("America/New_York", "tomorrow", "2026-11-21"),
        ("America/New_York", "Saturday", "2026-11-21"),
        ("America/New_York", "monday", "2026-11-23"),
        ("America/New_York", "friday", "2026-11-27"),  # the next Friday, never today
        ("America/New_York", "wed", "2026-11-25"),
        ("UTC", "today", "2026-11-21"),
        ("UTC", "tomorrow", "2026-11-22"),
        ("UTC", "saturday", "2026-11-28"),
        ("UTC", "2026-12-01", "2026-12-01"),
    ],
)
async def test_day_words_resolve_in_the_calendar_time_zone(
    open_line: Callable[..., Line],
    clock: Callable[[dt.datetime], None],
    timezone: str,
    word: str,
    expected: str,
) -> None:
    clock(dt.datetime(2026, 11, 21, 3, 30, tzinfo=dt.timezone.utc))
    line = open_line(timezone=timezone, hours={"mon-sun": "09:00-17:00"})
    result = await line.slots(date=word)
    assert result["date"] == expected
    assert result["weekday"] == dt.date.fromisoformat(expected).strftime("%A")


async def test_no_slots_left_today_is_explained(
    open_line: Callable[..., Line], clock: Callable[[dt.datetime], None]
) -> None:
    clock(dt.datetime(2026, 11, 20, 22, 5, tzinfo=dt.timezone.utc))  # 17:05 in New York
    result = await open_line().slots(date="today")
    assert result["slots"] == [] and result["reason"] == "there are no appointments left today"


async def test_closed_day_has_no_slots_and_cannot_be_booked(
    open_line: Callable[..., Line], clock: Any, workdir: Path
) -> None:
    line = open_line()
    assert await line.slots(date="sunday") == {
        "date": "2026-11-22",
        "weekday": "Sunday",
        "slots": [],
        "reason": "we're closed on Sundays",
    }
    with pytest.raises(ToolFailure, match=r"^we're closed on Sundays$"):
        await line.book(date="sunday", time="10:00", name="Ann")
    assert bookings(workdir / "calendar.sqlite") == []


async def test_fully_booked_day(open_line: Callable[..., Line], clock: Any) -> None:
    line = open_line(hours={"mon": "09:00-10:00"})
    await line.book(date=MONDAY, time="09:00", name="Ann")
    await line.book(date=MONDAY, time="09:30", name="Bob")
    result = await line.slots(date="monday")
    assert result["slots"] == [] and result["reason"] == "Monday 2026-11-23 is fully booked"
    with pytest.raises(ToolFailure) as failure:
        await line.book(date=MONDAY, time="09:30", name="Cy")
    assert str(failure.value) == (
        "09:30 on Monday 2026-11-23 is taken; Monday 2026-11-23 is fully booked"
    )


# --- booking -------------------------------------------------------------------------------


async def test_booking_persists_for_a_new_call_and_connection(
    open_line: Callable[..., Line], clock: Any, workdir: Path
) -> None:
    first = open_line(caller="+15550100")
    result = await first.book(
        date="monday", time="2:30 pm", name="  Ann   Lee ", service="check-up"
    )
    assert REFERENCE.match(result.pop("reference"))
    assert result == {
        "booked": True,
        "date": MONDAY,
        "weekday": "Monday",
        "time": "14:30",
        "name": "Ann Lee",
        "service": "check-up",
    }
    booked_event = next(e for e in first.call.events if e.type == "calendar_booked")
    assert booked_event.data["time"] == "14:30" and booked_event.data["date"] == MONDAY

    database = workdir / "calendar.sqlite"
    assert bookings(database) == [(MONDAY, "14:30", "Ann Lee", "check-up", "+15550100")]
    with closing(sqlite3.connect(database)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)

    second = open_line(max_slots_offered=20)  # another call: new tool instances
    assert "14:30" not in (await second.slots(date=MONDAY))["slots"]
    with pytest.raises(ToolFailure, match=r"^14:30 on Monday 2026-11-23 is taken; free: "):
        await second.book(date=MONDAY, time="14:30", name="Bob")


async def test_phone_argument_wins_over_the_caller_number(
    open_line: Callable[..., Line], clock: Any, workdir: Path
) -> None:
    await open_line(caller="+15550100").book(
        date=MONDAY, time="09:00", name="Ann", phone="555 0199"
    )
    await open_line().book(date=MONDAY, time="09:30", name="Bob")  # text chat: no caller id
    assert [(row[1], row[4]) for row in bookings(workdir / "calendar.sqlite")] == [
        ("09:00", "555 0199"),
        ("09:30", None),
    ]


async def test_two_calls_booking_the_same_slot_at_once(
    open_line: Callable[..., Line], clock: Any, workdir: Path
) -> None:
    ann, bob = open_line(), open_line()
    outcomes = await asyncio.gather(
        ann.book(date=MONDAY, time="10:00", name="Ann"),
        bob.book(date=MONDAY, time="10:00", name="Bob"),
        return_exceptions=True,
    )
    booked = [o for o in outcomes if isinstance(o, dict)]
    failed = [o for o in outcomes if isinstance(o, ToolFailure)]
    assert len(booked) == 1 and len(failed) == 1
    assert str(failed[0]) == "10:00 on Monday 2026-11-23 is taken; free: 09:00, 09:30, 10:30"
    rows = bookings(workdir / "calendar.sqlite")
    assert [(date, time, name) for date, time, name, *_ in rows] == [
        (MONDAY, "10:00", booked[0]["name"])
    ]


async def test_the_unique_constraint_refuses_a_racing_insert(tmp_path: Path) -> None:
    """The last line of defence: even past the availability check, one insert wins."""
    store, other = BookingStore(tmp_path / "c.sqlite"), BookingStore(tmp_path / "c.sqlite")
    day = dt.date(2026, 11, 23)
    outcomes = await asyncio.gather(
        *(s.add(NewBooking(day, "10:00", name)) for s, name in ((store, "A"), (other, "B"))),
        return_exceptions=True,
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["SlotTaken", "str"]
    assert await other.booked_times(day) == {"10:00"}
    with pytest.raises(SlotTaken):
        await store.add(NewBooking(day, "10:00", "C"))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"time": "25:00"}, "'25:00' is not a time of day; use HH:MM, like 14:30"),
        ({"time": "half past ten"}, "'half past ten' is not a time of day"),
        ({"time": "13 pm"}, "'13 pm' is not a time of day"),
        (
            {"time": "09:10"},
            "09:10 on Monday 2026-11-23 is not a start time (appointments start every "
            "30 minutes); free: 09:00, 09:30, 10:00",
        ),
        (
            {"time": "18:00"},
            "18:00 on Monday 2026-11-23 is outside our hours (09:00-12:00 and 13:00-17:00); "
            "free: 15:30, 16:00, 16:30",
        ),
        (
            {"date": "today", "time": "11:00"},
            "11:00 on Friday 2026-11-20 has already passed; free: 14:30, 15:00, 15:30",
        ),
        ({"date": "2026-11-19"}, "2026-11-19 is in the past; today is Friday 2026-11-20"),
        ({"date": "2026-02-30"}, "'2026-02-30' is not a day I understand"),
        ({"date": "someday"}, "'someday' is not a day I understand; use YYYY-MM-DD"),
        ({"date": ""}, "which day? use YYYY-MM-DD, 'today', 'tomorrow' or a weekday name"),
        ({"service": "whitening"}, "we don't offer 'whitening'; services: cleaning, check-up"),
        ({"name": " "}, "I need the caller's name to book; ask for it"),
    ],
)
async def test_refused_bookings_say_why(
    open_line: Callable[..., Line],
    clock: Any,
    workdir: Path,
    arguments: dict[str, Any],
    message: str,
) -> None:
    line = open_line()
    with pytest.raises(ToolFailure) as failure:
        await line.book(**{"date": MONDAY, "time": "10:00", "name": "Ann", **arguments})
    assert str(failure.value).startswith(message)
    assert bookings(workdir / "calendar.sqlite") == []


# --- options -------------------------------------------------------------------------------


async def test_schema_names_and_service_enum(open_line: Callable[..., Line], clock: Any) -> None:
    line = open_line(book_name="reserve")
    assert set(line.tools) == {"calendar_slots", "reserve"}
    assert line.tools["reserve"].name == "reserve"
    parameters = line.tools["calendar_slots"].parameters
    assert parameters["required"] == ["date"]
    assert parameters["properties"]["service"]["enum"] == ["cleaning", "check-up"]
    assert "America/New_York" in parameters["properties"]["date"]["description"]

    line = open_line(services=None)
    book = line.tools["calendar_book"]
    assert book.name == "calendar_book"
    assert book.parameters["required"] == ["date", "time", "name"]
    assert "enum" not in book.parameters["properties"]["service"]
    assert (await line.book(date=MONDAY, time="09:00", name="Ann", service="Whitening"))[
        "service"
    ] == "Whitening"


@pytest.mark.parametrize(
    ("changes", "key", "message"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown time zone 'Mars/Olympus'"),
        ({"hours": {"mon-fri": "9-5"}}, "hours.mon-fri", "'9-5': opening hours are written"),
        ({"hours": {"mon": "09:00-25:00"}}, "hours.mon", "not a valid time of day"),
        ({"hours": {"weekdays": "09:00-17:00"}}, "hours", "'weekdays': days are written"),
        ({"hours": {}}, "hours", "at least 1 item"),
        ({"slot_minutes": 240}, "slot_minutes", "no 240-minute slot fits in hours 'mon-fri'"),
        ({"services": ["cleaning", "Cleaning"]}, "services", "service names must be distinct"),
        ({"name": "find times"}, "name", "use 1-64 letters"),
        ({"database": None}, "database", "is required but missing"),
        ({"databse": "x.sqlite"}, "databse", "unknown key"),
    ],
)
def test_invalid_options_are_reported_at_load_time(
    bot_dir: Callable[..., Path],
    registry: Registry,
    changes: dict[str, Any],
    key: str,
    message: str,
) -> None:
    snapshot = load_catalog(bot_dir("clinic", calendar_bot(**changes)), registry)
    assert "clinic" not in snapshot.bots
    found = {(p.key, message in p.message) for p in snapshot.problems}
    assert found == {(f"tools[0].{key}", True), (f"tools[1].{key}", True)}, snapshot.problems


# --- whole calls ---------------------------------------------------------------------------

RULES = r"""
[[llm.rules]]
match = 'book (?P<time>\d{1,2}:\d{2}) on (?P<day>\w+) for (?P<name>[a-z ]*[a-z])'
tool = "calendar_book"
reply = "Booked {{ result.name }}, {{ result.weekday }} {{ result.time }}: {{ result.reference }}"
on_error = "Sorry: {{ error }}"
[llm.rules.arguments]
date = "{{ match.day }}"
time = "{{ match.time }}"
name = "{{ match.name }}"
service = "cleaning"
[[llm.rules]]
match = '(?P<day>monday|tuesday|today|tomorrow)'
tool = "calendar_slots"
arguments = { date = "{{ match.day }}" }
reply = "{{ result.weekday }} {{ result.date }}: {{ result.slots | join(', ') }}"
"""


async def test_a_call_finds_slots_and_books_one(
    bot_dir: Callable[..., Path], registry: Registry, clock: Any, workdir: Path
) -> None:
    snapshot = load_catalog(bot_dir("clinic", calendar_bot(RULES)), registry)
    assert snapshot.problems == ()
    plan = plan_call(snapshot, CallRequest(bot="clinic", caller="+15550100"), registry)
    call_session = build_call_session(plan)
    await call_session.start()

    result = await call_session.say_text("What do you have on Monday?")
    result.expect.next_event().is_function_call(name="calendar_slots", arguments={"date": "Monday"})
    result.expect.next_event().is_function_call_output()
    result.expect.next_event().is_message(role="assistant")

    result = await call_session.say_text("Please book 10:30 on monday for Ann Lee")
    result.expect.next_event().is_function_call(name="calendar_book")
    await call_session.say_text("And book 10:30 on monday for Bob Stone")
    record = await call_session.close()

    bot_lines = [entry.text for entry in record.transcript if entry.role == "bot"]
    assert bot_lines[0] == "Monday 2026-11-23: 09:00, 13:00, 16:30"
    confirmation = re.fullmatch(r"Booked Ann Lee, Monday 10:30: ([A-Z2-9]{6})", bot_lines[1])
    assert confirmation, bot_lines
    assert bot_lines[2] == ("Sorry: 10:30 on Monday 2026-11-23 is taken; free: 09:30, 10:00, 11:00")
    tool_calls = [e.data for e in record.events if e.type == "tool_call"]
    assert [(c["name"], c["outcome"]) for c in tool_calls] == [
        ("calendar_slots", "ok"),
        ("calendar_book", "ok"),
        ("calendar_book", "error"),
    ]
    assert tool_calls[1]["arguments"] == {
        "date": "monday",
        "time": "10:30",
        "name": "Ann Lee",
        "service": "cleaning",
    }
    assert bookings(workdir / "calendar.sqlite") == [
        (MONDAY, "10:30", "Ann Lee", "cleaning", "+15550100")
    ]
    with closing(sqlite3.connect(workdir / "calendar.sqlite")) as connection:
        (reference, session_id) = connection.execute(
            "SELECT reference, session_id FROM bookings"
        ).fetchone()
    assert reference == confirmation.group(1) and session_id == record.session_id


async def test_shipped_dentist_bot_plays_its_demo_script(
    registry: Registry, clock: Any, workdir: Path
) -> None:
    snapshot = load_catalog(REPO / "bots", registry)
    plan = plan_call(snapshot, CallRequest(bot="dentist"), registry)
    script = (REPO / "bots" / "dentist.demo.txt").read_text().splitlines()
    shown: list[str] = []
    record = await run_text_call(plan, scripted_lines(script, shown.append), out=shown.append)

    bot_lines = [entry.text for entry in record.transcript if entry.role == "bot"]
    assert bot_lines[1].startswith("Happy to help with a cleaning. Which day")
    assert "On Monday 2026-11-23 I have 09:00, 13:00, 16:30." in bot_lines[2]
    # "nine o'clock", as a recognizer writes it, books 09:00
    assert re.match(r"You're booked, Ann Lee: Monday 2026-11-23 at 09:00\. ", bot_lines[3])
    assert bot_lines[4].startswith("Please arrive ten minutes early, Ann Lee")
    assert record.disconnected_by == "bot"
    assert record.steps == ["triage", "booking", "confirmation", "wrap_up"]
    assert record.captured["booking_ref"] in bot_lines[3]
    names = [row[2] for row in bookings(workdir / "var" / "dentist-calendar.sqlite")]
    assert names == ["Ann Lee"]


@pytest.mark.parametrize(
    ("spoken", "clock"),
    [
        ("14:30", "14:30"),
        ("2pm", "14:00"),
        ("one pm", "13:00"),
        ("nine thirty", "09:30"),
        ("two forty five p.m.", "14:45"),
        ("Eleven fifteen a.m.", "11:15"),
        ("twelve o'clock", "12:00"),
        ("1030", "10:30"),  # how Whisper writes "ten thirty"
        ("10.30", "10:30"),
        ("9 a. m.", "09:00"),
        ("2 p. m.", "14:00"),
    ],
)
def test_times_are_read_in_digits_or_as_a_recognizer_writes_them(spoken: str, clock: str) -> None:
    assert calendar_plugin.parse_time(spoken) == clock


@pytest.mark.parametrize("nonsense", ["thirteen pm", "one twenty", "noonish", ""])
def test_a_time_that_is_not_one_is_refused_with_the_format(nonsense: str) -> None:
    with pytest.raises(ToolFailure, match="HH:MM"):
        calendar_plugin.parse_time(nonsense)
