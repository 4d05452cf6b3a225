"""The ``calendar_slots`` and ``calendar_book`` tools: appointment slots in a local SQLite
file (see `plugins.tools.calendar_store`).

Bind both with the same options, so the booking tool accepts exactly what the slots tool
offers:

    [[tools]]
    use = "calendar_slots"
    database = "var/dentist-calendar.sqlite"   # relative to the working directory
    timezone = "America/New_York"
    hours = { "mon-fri" = "09:00-12:00,13:00-17:00", sat = "10:00-13:00" }
    services = ["cleaning", "check-up"]

    [[tools]]
    use = "calendar_book"
    database = "var/dentist-calendar.sqlite"
    ...

Slots start every ``slot_minutes`` from each opening time and must end by its closing time.
Dates and times are wall-clock times in ``timezone``.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from runtime import CallContext, RegisterTool, ToolDefinition, ToolFailure, hookimpl
from runtime.schema import DAY_NAMES, expand_days, known_timezone, parse_span

if TYPE_CHECKING:
    # sqlite3 and asyncio load with the first call, so `dialplan validate` stays fast
    from plugins.tools.calendar_store import BookingStore

SLOTS_TOOL = "calendar_slots"
BOOK_TOOL = "calendar_book"
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MINUTES_PER_DAY = 24 * 60

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# "14:30", "9:00", "9", "2pm", "2:30 p.m." — what an LLM or a rules regex may pass on
# "14:30", "2pm", and as recognizers write times: "10.30", "1030", "9 a. m."
_TIME = re.compile(r"^(\d{1,2})(?:[:.]?(\d{2}))?\s*(?:([ap])\.?\s?m\.?)?$", re.IGNORECASE)
# what LLM providers accept as a function name
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    """The tools' clock (tests replace this function to pin "now")."""
    return dt.datetime.now(dt.timezone.utc)


# --- options -------------------------------------------------------------------------------


Span = tuple[int, int]  # opening and closing time, in minutes since midnight


def parse_spans(text: str) -> list[Span]:
    """'09:00-12:00,13:00-17:00' -> [(540, 720), (780, 1020)]; ValueError when malformed."""
    spans = []
    for part in text.split(","):
        start, end = parse_span(part)  # the same syntax as [schedule] hours
        if end == dt.time.max and not part.strip().endswith("24:00"):
            raise ValueError(f"{part.strip()!r}: not a valid time of day")
        close = MINUTES_PER_DAY if end == dt.time.max else end.hour * 60 + end.minute
        spans.append((start.hour * 60 + start.minute, close))
    return sorted(spans)


def _check_spans(text: str) -> str:
    parse_spans(text)
    return text


OpeningHours = Annotated[str, AfterValidator(_check_spans)]


class CalendarOptions(BaseModel):
    """Shared by both tools; give both bindings the same values."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str | None = Field(None, description="the name the LLM sees (default: the tool's)")
    description: str | None = Field(
        None, description="what the LLM is told about the tool (default: a built-in text)"
    )
    database: str = Field(
        description="SQLite file holding the bookings, created on first use; "
        "a relative path is relative to the working directory"
    )
    timezone: str = Field("UTC", description="IANA time zone of the hours and the slots")
    hours: dict[str, OpeningHours] = Field(
        min_length=1,
        description='opening hours per day: { "mon-fri" = "09:00-12:00,13:00-17:00", '
        'sat = "10:00-14:00" }; days not listed are closed',
    )
    slot_minutes: int = Field(
        30, ge=5, le=720, validate_default=True, description="length of one appointment"
    )
    max_slots_offered: int = Field(3, ge=1, le=20, description="free slots offered at once")
    services: list[str] | None = Field(
        None, description="allowed service names (default: any, or none)"
    )

    @field_validator("name")
    @classmethod
    def _valid_tool_name(cls, value: str | None) -> str | None:
        if value is not None and not _TOOL_NAME.match(value):
            raise ValueError(f"{value!r}: use 1-64 letters, digits, '_' or '-'")
        return value

    _known_timezone = field_validator("timezone")(known_timezone)

    @field_validator("hours")
    @classmethod
    def _known_days(cls, value: dict[str, str]) -> dict[str, str]:
        for days in value:
            expand_days(days)
        return value

    @field_validator("services")
    @classmethod
    def _distinct_services(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        names = [name.strip() for name in value]
        if not names or not all(names):
            raise ValueError("list at least one service, and no empty names")
        if len({name.lower() for name in names}) != len(names):
            raise ValueError("service names must be distinct")
        return names

    @field_validator("slot_minutes")
    @classmethod
    def _slots_fit(cls, value: int, info: ValidationInfo) -> int:
        # `hours` is declared first, so it is here unless it was invalid itself
        for days, text in (info.data.get("hours") or {}).items():
            for start, end in parse_spans(text):
                if end - start < value:
                    raise ValueError(f"no {value}-minute slot fits in hours {days!r} = {text!r}")
        return value

    def weekly_hours(self) -> dict[int, list[Span]]:
        """Opening spans by weekday (0 = Monday); a day missing here is closed."""
        week: dict[int, list[Span]] = {}
        for days, text in self.hours.items():
            for day in expand_days(days):
                week.setdefault(DAY_NAMES.index(day), []).extend(parse_spans(text))
        return {day: sorted(spans) for day, spans in week.items()}


# --- small pure helpers ----------------------------------------------------------------------


def clock_time(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def to_minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


_HOUR_WORDS = (
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
)
_MINUTE_WORDS = {"o'clock": 0, "oclock": 0, "fifteen": 15, "thirty": 30, "forty five": 45}
# "one pm", "nine thirty", "two forty five p.m.": how a speech recognizer writes a time
_SPOKEN_TIME = re.compile(
    rf"^({'|'.join(_HOUR_WORDS)})(?:[\s-]+({'|'.join(_MINUTE_WORDS)}))?"
    r"\s*(?:([ap])\.?\s?m\.?)?$",
    re.IGNORECASE,
)


def _spoken_as_digits(text: str) -> str:
    """A spoken time in digits ("one thirty pm" -> "1:30 pm"); other text unchanged."""
    found = _SPOKEN_TIME.match(" ".join(text.lower().split()))
    if found is None:
        return text
    hour = _HOUR_WORDS.index(found.group(1)) + 1
    minute = _MINUTE_WORDS[found.group(2)] if found.group(2) else 0
    half = f" {found.group(3)}m" if found.group(3) else ""
    return f"{hour}:{minute:02d}{half}"


def parse_time(value: Any) -> str:
    """A time of day as 'HH:MM'; a `ToolFailure` the LLM can act on when it is not one.
    Digits ("14:30", "2pm") or words as a recognizer writes them ("two thirty pm")."""
    text = _spoken_as_digits(str(value or "").strip())
    found = _TIME.match(text)
    hour = int(found.group(1)) if found else -1
    minute = int(found.group(2) or 0) if found else -1
    half = (found.group(3) or "").lower() if found else ""
    if half:
        hour = -1 if not 1 <= hour <= 12 else hour % 12 + (12 if half == "p" else 0)
    if not (0 <= hour < 24 and 0 <= minute < 60):
        raise ToolFailure(f"{text!r} is not a time of day; use HH:MM, like 14:30")
    return clock_time(hour * 60 + minute)


def _iso_date(text: str) -> dt.date | None:
    if not _ISO_DATE.match(text):
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def _caller_name(value: Any) -> str:
    name = " ".join(str(value or "").split())
    if not name:
        raise ToolFailure("I need the caller's name to book; ask for it")
    if len(name) > 100:
        raise ToolFailure("that name is too long; ask for the caller's name")
    return name


def day_label(day: dt.date) -> str:
    return f"{WEEKDAYS[day.weekday()].capitalize()} {day.isoformat()}"


def spread(times: list[str], count: int) -> list[str]:
    """``count`` times spread over the day, first and last included, so the caller hears
    morning and afternoon choices rather than three neighbouring half-hours."""
    if len(times) <= count:
        return list(times)
    if count == 1:
        return times[:1]
    step = (len(times) - 1) / (count - 1)
    return [times[round(index * step)] for index in range(count)]


def nearest(times: list[str], wanted: str, count: int) -> list[str]:
    """The ``count`` times closest to ``wanted`` (earlier wins a tie), in order."""
    target = to_minutes(wanted)
    closest = sorted(times, key=lambda t: (abs(to_minutes(t) - target), t))[:count]
    return sorted(closest)


def describe_spans(spans: list[Span]) -> str:
    return " and ".join(f"{clock_time(start)}-{clock_time(end)}" for start, end in spans)


# --- the calendar ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DaySlots:
    """One day's appointment grid and what is left of it."""

    day: dt.date
    spans: list[Span]
    grid: list[str]  # every slot start within opening hours
    past: set[str]
    booked: set[str]

    @property
    def free(self) -> list[str]:
        return [t for t in self.grid if t not in self.past and t not in self.booked]

    def why_none_free(self) -> str:
        weekday = WEEKDAYS[self.day.weekday()].capitalize()
        if not self.grid:
            return f"we're closed on {weekday}s"
        if all(t in self.past for t in self.grid):
            return "there are no appointments left today"
        return f"{day_label(self.day)} is fully booked"


class Calendar:
    """The rules of the appointment book: which days, which times, what is free."""

    def __init__(self, options: CalendarOptions, store: BookingStore, clock: Clock) -> None:
        self.options = options
        self.store = store
        self.clock = clock
        self.zone = zoneinfo.ZoneInfo(options.timezone)
        self.week = options.weekly_hours()

    def now(self) -> dt.datetime:
        return self.clock().astimezone(self.zone)

    def resolve_day(self, value: Any) -> dt.date:
        """'2026-11-23', 'today', 'tomorrow' or a weekday ('monday' = the next Monday after
        today), in the calendar's time zone. Past days are refused."""
        text = str(value or "").strip().lower().rstrip(".,!?")
        today = self.now().date()
        day = self._day_from_words(text, today) or _iso_date(text)
        if day is None:
            what = f"{text!r} is not a day I understand;" if text else "which day?"
            raise ToolFailure(f"{what} use YYYY-MM-DD, 'today', 'tomorrow' or a weekday name")
        if day < today:
            raise ToolFailure(f"{day.isoformat()} is in the past; today is {day_label(today)}")
        return day

    @staticmethod
    def _day_from_words(text: str, today: dt.date) -> dt.date | None:
        if text == "today":
            return today
        if text == "tomorrow":
            return today + dt.timedelta(days=1)
        for index, weekday in enumerate(WEEKDAYS):
            if text in (weekday, weekday[:3]):
                return today + dt.timedelta(days=(index - today.weekday() - 1) % 7 + 1)
        return None

    def check_service(self, value: Any) -> str | None:
        text = str(value or "").strip()
        if not text or self.options.services is None:
            return text or None
        for service in self.options.services:
            if service.lower() == text.lower():
                return service
        raise ToolFailure(f"we don't offer {text!r}; services: {', '.join(self.options.services)}")

    async def day_slots(self, day: dt.date) -> DaySlots:
        spans = self.week.get(day.weekday(), [])
        grid = sorted({clock_time(start) for start in self._slot_starts(spans)})
        now = self.now()
        past = {t for t in grid if self._starts_at(day, t) <= now}
        booked = await self.store.booked_times(day) if grid else set()
        return DaySlots(day, spans, grid, past, booked)

    def _slot_starts(self, spans: list[Span]) -> list[int]:
        step = self.options.slot_minutes
        return [m for start, end in spans for m in range(start, end - step + 1, step)]

    def _starts_at(self, day: dt.date, hhmm: str) -> dt.datetime:
        return dt.datetime.combine(day, dt.time.fromisoformat(hhmm), tzinfo=self.zone)

    def refuse(self, slots: DaySlots, time: str) -> str | None:
        """Why ``time`` cannot be booked on that day (with nearby free times), or None."""
        when = f"{time} on {day_label(slots.day)}"
        if not slots.grid:
            problem = slots.why_none_free()
        elif time not in slots.grid:
            problem = self._off_grid(slots, time, when)
        elif time in slots.past:
            problem = f"{when} has already passed"
        elif time in slots.booked:
            problem = f"{when} is taken"
        else:
            return None
        return problem + self.alternatives(slots, time)

    def _off_grid(self, slots: DaySlots, time: str, when: str) -> str:
        minutes = to_minutes(time)
        if any(start <= minutes < end for start, end in slots.spans):
            every = self.options.slot_minutes
            return f"{when} is not a start time (appointments start every {every} minutes)"
        return f"{when} is outside our hours ({describe_spans(slots.spans)})"

    def alternatives(self, slots: DaySlots, time: str) -> str:
        if not slots.grid:
            return ""
        free = nearest(slots.free, time, self.options.max_slots_offered)
        if free:
            return f"; free: {', '.join(free)}"
        return f"; {slots.why_none_free()}"


# --- the two tools ---------------------------------------------------------------------------


def _calendar(options: CalendarOptions) -> Calendar:
    from plugins.tools.calendar_store import BookingStore

    # resolved now, so a relative path means the directory the process runs calls from
    store = BookingStore(Path(options.database).absolute())
    return Calendar(options, store, utc_now)


def _date_parameter(options: CalendarOptions) -> dict[str, Any]:
    return {
        "type": "string",
        "description": "the day: YYYY-MM-DD, 'today', 'tomorrow' or a weekday name like "
        f"'monday' (the next such day after today), in the {options.timezone} time zone",
    }


def _service_parameter(options: CalendarOptions) -> dict[str, Any]:
    parameter: dict[str, Any] = {"type": "string", "description": "the kind of appointment"}
    if options.services:
        parameter["enum"] = list(options.services)
    return parameter


def create_slots_tool(options: CalendarOptions, call: CallContext) -> ToolDefinition:
    calendar = _calendar(options)

    async def calendar_slots(arguments: dict[str, Any], call: CallContext) -> dict[str, Any]:
        day = calendar.resolve_day(arguments.get("date"))
        service = calendar.check_service(arguments.get("service"))
        slots = await calendar.day_slots(day)
        result: dict[str, Any] = {
            "date": day.isoformat(),
            "weekday": WEEKDAYS[day.weekday()].capitalize(),
            "slots": spread(slots.free, options.max_slots_offered),
        }
        if service:
            result["service"] = service
        if not result["slots"]:
            result["reason"] = slots.why_none_free()
        return result

    return ToolDefinition(
        name=options.name or SLOTS_TOOL,
        description=options.description
        or "Find free appointment times on a day. Use it before booking and offer the "
        "caller the times it returns; if there are none, say why and suggest another day.",
        handler=calendar_slots,
        parameters={
            "type": "object",
            "properties": {
                "date": _date_parameter(options),
                "service": _service_parameter(options),
            },
            "required": ["date"],
        },
    )


def create_book_tool(options: CalendarOptions, call: CallContext) -> ToolDefinition:
    from plugins.tools.calendar_store import NewBooking, SlotTaken

    calendar = _calendar(options)

    async def calendar_book(arguments: dict[str, Any], call: CallContext) -> dict[str, Any]:
        day = calendar.resolve_day(arguments.get("date"))
        time = parse_time(arguments.get("time"))
        name = _caller_name(arguments.get("name"))
        service = calendar.check_service(arguments.get("service"))
        phone = str(arguments.get("phone") or call.request.caller or "").strip() or None
        refusal = calendar.refuse(await calendar.day_slots(day), time)
        if refusal:
            raise ToolFailure(refusal)
        booking = NewBooking(day, time, name, service, phone, call.session_id)
        try:
            reference = await calendar.store.add(booking)
        except SlotTaken:
            # another call took it between our look-up and our insert
            fresh = await calendar.day_slots(day)
            raise ToolFailure(calendar.refuse(fresh, time) or f"{time} was just taken") from None
        call.add_event(
            "calendar_booked", reference=reference, date=day.isoformat(), time=time, service=service
        )
        result: dict[str, Any] = {
            "booked": True,
            "date": day.isoformat(),
            "weekday": WEEKDAYS[day.weekday()].capitalize(),
            "time": time,
            "name": name,
            "reference": reference,
        }
        if service:
            result["service"] = service
        return result

    return ToolDefinition(
        name=options.name or BOOK_TOOL,
        description=options.description
        or "Book an appointment for the caller at a free time they chose. Needs the day, "
        "the time and the caller's name; read the returned reference back to the caller.",
        handler=calendar_book,
        parameters={
            "type": "object",
            "properties": {
                "date": _date_parameter(options),
                "time": {"type": "string", "description": "start time, HH:MM (24-hour)"},
                "name": {"type": "string", "description": "the caller's full name"},
                "service": _service_parameter(options),
                "phone": {
                    "type": "string",
                    "description": "a contact number (default: the number the caller uses)",
                },
            },
            "required": ["date", "time", "name"],
        },
    )


@hookimpl
def register_tools(register: RegisterTool) -> None:
    register(
        name=SLOTS_TOOL,
        factory=create_slots_tool,
        options=CalendarOptions,
        description="free appointment slots on a day, from a local SQLite calendar",
    )
    register(
        name=BOOK_TOOL,
        factory=create_book_tool,
        options=CalendarOptions,
        description="book an appointment slot in a local SQLite calendar (no double-booking)",
    )
