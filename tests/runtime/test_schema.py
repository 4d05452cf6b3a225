from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from runtime.durations import format_duration, parse_duration
from runtime.schema import Bot, Schedule


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("20s", 20), ("15m", 900), ("1h30m", 5400), ("250ms", 0.25), (12, 12), ("1.5s", 1.5)],
)
def test_durations_parse(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["20 parsecs", "", "m", "-1s", "1h 2x", True, -3])
def test_bad_durations_say_how_to_write_one(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_duration_round_trip() -> None:
    assert [format_duration(v) for v in (900, 20, 0.25, 3600, 90)] == [
        "15m",
        "20s",
        "250ms",
        "1h",
        "90s",
    ]


def minimal(**extra: object) -> dict[str, object]:
    return {"prompt": {"system": "x"}, "llm": {"provider": "rules"}, **extra}


def test_minimal_bot_has_sensible_defaults() -> None:
    bot = Bot.model_validate(minimal())
    assert bot.limits.max_duration == 900
    assert bot.limits.silence_timeout == 20
    assert bot.prompt.greeting_mode == "speak"
    assert bot.turn.detection == "transcript"
    assert bot.recording.enabled is False


def test_unknown_keys_are_errors_at_every_level() -> None:
    with pytest.raises(ValidationError) as exc:
        Bot.model_validate(minimal(colour="red", limits={"max_duraton": "1m"}))
    locations = {error["loc"] for error in exc.value.errors()}
    assert ("colour",) in locations
    assert ("limits", "max_duraton") in locations


def test_variables_accept_defaults_and_specs() -> None:
    bot = Bot.model_validate(
        minimal(
            variables={
                "clinic": "Bright",
                "name": {"required": True, "description": "d"},
                "table": {"a": 1},
            }
        )
    )
    assert bot.defaults() == {"clinic": "Bright", "table": {"a": 1}}
    assert bot.required_variables() == ["name"]


def test_bad_variable_name_and_bot_id() -> None:
    with pytest.raises(ValidationError, match="not a valid variable name"):
        Bot.model_validate(minimal(variables={"bad-name": 1}))
    with pytest.raises(ValidationError, match="not a valid bot id"):
        Bot.model_validate(minimal(id="Has Spaces"))


def test_provider_tables_keep_their_options() -> None:
    bot = Bot.model_validate(minimal(llm={"provider": "litellm", "model": "m", "temperature": 0}))
    assert bot.llm.provider == "litellm"
    assert bot.llm.options() == {"model": "m", "temperature": 0}


def test_duplicate_disposition_names() -> None:
    rule = {"name": "a", "when": "true"}
    with pytest.raises(ValidationError, match="repeated: a"):
        Bot.model_validate(minimal(dispositions=[rule, rule]))


def test_schedule_opening_hours() -> None:
    schedule = Schedule(timezone="Europe/Berlin", hours={"mon-fri": "09:00-17:00"})
    berlin_monday_10 = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.timezone.utc)  # 10:00 CET
    berlin_monday_18 = dt.datetime(2026, 11, 23, 17, 30, tzinfo=dt.timezone.utc)
    saturday = dt.datetime(2026, 11, 21, 11, 0, tzinfo=dt.timezone.utc)
    assert schedule.is_open(berlin_monday_10)
    assert not schedule.is_open(berlin_monday_18)
    assert not schedule.is_open(saturday)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timezone", "Mars/Olympus", "unknown time zone"),
        ("hours", {"someday": "09:00-10:00"}, "days are written"),
        ("hours", {"mon": "9-5"}, "HH:MM-HH:MM"),
        ("hours", {"mon": "17:00-09:00"}, "closing time must be after"),
    ],
)
def test_bad_schedules(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Schedule.model_validate({field: value})


def test_opening_hours_spans() -> None:
    import datetime as dt

    from runtime.schema import parse_span

    assert parse_span("09:00-17:30") == (dt.time(9), dt.time(17, 30))
    assert parse_span("18:00-24:00") == (dt.time(18), dt.time.max)  # until midnight
    for bad, message in [
        ("09:00-25:00", "not a valid time of day"),
        ("09:00-24:30", "not a valid time of day"),
        ("17:00-09:00", "closing time must be after opening time"),
        ("9-5", "opening hours are written"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_span(bad)


def test_a_value_type_written_another_way_gets_what_was_meant() -> None:
    with pytest.raises(ValidationError) as analysis:
        Bot.model_validate(
            {
                "prompt": {"system": "x"},
                "llm": {"provider": "rules"},
                "analysis": {"prompt": "x", "fields": {"booked": "boolean"}},
            }
        )
    assert "'boolean' is not a field type; did you mean \"bool\"?" in str(analysis.value)
    from runtime.flow.schema import CaptureSpec

    with pytest.raises(ValidationError, match='did you mean "number"'):
        CaptureSpec.model_validate({"type": "integer"})
