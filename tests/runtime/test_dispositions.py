"""Auto-dispositions, compiled from real bot files: the built-in rules over every way a
call can end, bots replacing and disabling them, `set`, and rules failing mid-evaluation."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.catalog import load_catalog
from runtime.compiler import CompiledBot
from runtime.dispositions import BUILTIN_NAMES, apply_dispositions
from runtime.record import CallEvent, CallRecord, DisconnectedBy, TranscriptEntry
from runtime.registry import Registry

from ..conftest import MINIMAL_BOT

SHORT, LONG = 2.0, 30.0

# disconnected_by -> dispositions fired when the customer (spoke, long), (spoke, short),
# (silent, long), (silent, short). Every built-in skips analysis, so a non-empty list means
# the first entry is both `disposition` and `analysis_skipped`.
BUILTIN_TABLE: dict[str | None, tuple[list[str], list[str], list[str], list[str]]] = {
    None: ([], ["short_call"], ["no_customer_message"], ["no_customer_message", "short_call"]),
    "customer": (
        [],
        ["short_call"],
        ["no_customer_message"],
        ["no_customer_message", "short_call"],
    ),
    "bot": ([], ["short_call"], ["no_customer_message"], ["no_customer_message", "short_call"]),
    **{
        line_outcome: (
            [line_outcome],
            [line_outcome, "short_call"],
            [line_outcome, "no_customer_message"],
            [line_outcome, "no_customer_message", "short_call"],
        )
        for line_outcome in ("no_answer", "rejected", "outside_hours", "voicemail", "error")
    },
    **{
        after_talk: (
            [after_talk],
            [after_talk, "short_call"],
            ["no_customer_message", after_talk],
            ["no_customer_message", after_talk, "short_call"],
        )
        for after_talk in ("rnr", "timeout")
    },
}
COMBINATIONS = [
    (ended_by, spoke, duration, expected[index])
    for ended_by, expected in BUILTIN_TABLE.items()
    for index, (spoke, duration) in enumerate(
        [(True, LONG), (True, SHORT), (False, LONG), (False, SHORT)]
    )
]


def record(
    disconnected_by: str | None = "customer",
    *,
    spoke: bool = True,
    duration: float = LONG,
    transport: str = "twilio",
    **fields: Any,
) -> CallRecord:
    transcript = [TranscriptEntry(role="bot", text="Hello, Bright Smile Dental.", at=0.1)]
    if spoke:
        transcript.append(TranscriptEntry(role="customer", text="I'd like a cleaning.", at=1.0))
    return CallRecord(
        session_id="call-1",
        bot_id="clinic",
        bot_version="v1",
        transport=transport,
        started_at=dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.timezone.utc),
        duration=duration,
        disconnected_by=DisconnectedBy(disconnected_by) if disconnected_by else None,
        transcript=transcript,
        **fields,
    )


@pytest.fixture
def compile_bot(bot_dir: Callable[..., Path], registry: Registry) -> Callable[[str], CompiledBot]:
    def compile(extra_toml: str = "") -> CompiledBot:
        snapshot = load_catalog(bot_dir("clinic", MINIMAL_BOT + extra_toml), registry)
        assert not snapshot.problems, [str(p) for p in snapshot.problems]
        return snapshot.get("clinic")

    return compile


def problems_of(bot_dir: Callable[..., Path], registry: Registry, extra_toml: str) -> list[str]:
    snapshot = load_catalog(bot_dir("clinic", MINIMAL_BOT + extra_toml), registry)
    return [str(problem) for problem in snapshot.problems]


def test_the_table_covers_every_way_a_call_ends() -> None:
    assert set(BUILTIN_TABLE) == {None, *(value.value for value in DisconnectedBy)}
    assert len(COMBINATIONS) == 4 * len(BUILTIN_TABLE)


@pytest.mark.parametrize(("disconnected_by", "spoke", "duration", "expected"), COMBINATIONS)
def test_builtin_rules(
    compile_bot: Callable[[str], CompiledBot],
    disconnected_by: str | None,
    spoke: bool,
    duration: float,
    expected: list[str],
) -> None:
    result = apply_dispositions(
        record(disconnected_by, spoke=spoke, duration=duration), compile_bot("")
    )

    assert result.dispositions == expected
    assert result.disposition == (expected[0] if expected else None)
    assert result.analysis_skipped == (expected[0] if expected else None)
    assert result.has_customer_message is spoke
    assert result.fields == {}
    assert not [event for event in result.events if event.type == "disposition_error"]


def test_a_text_call_is_never_too_short(compile_bot: Callable[[str], CompiledBot]) -> None:
    typed = apply_dispositions(record(duration=0.3, transport="text"), compile_bot(""))

    assert typed.dispositions == []
    assert typed.analysis_skipped is None


def test_whitespace_is_not_a_customer_message(compile_bot: Callable[[str], CompiledBot]) -> None:
    silent = record(spoke=False)
    silent.transcript.append(TranscriptEntry(role="customer", text="  ", at=2.0))

    assert apply_dispositions(silent, compile_bot("")).dispositions == ["no_customer_message"]


def test_the_input_record_is_left_alone(compile_bot: Callable[[str], CompiledBot]) -> None:
    original = record("voicemail", spoke=False)

    apply_dispositions(original, compile_bot(""))

    assert (original.dispositions, original.disposition, original.analysis_skipped) == (
        [],
        None,
        None,
    )


# -- the bot's own rules -----------------------------------------------------------------

OWN_RULES = """
[variables]
tier = "standard"

[[dispositions]]
name = "vip"
when = "tier == 'gold'"
set = { priority = "high", tags = ["vip"] }

[[dispositions]]
name = "booked"
when = "'cleaning' in transcript | map(attribute='text') | join(' ')"
skip_analysis = true
set = { priority = "normal", reason = "{{ disconnected_by }} after {{ duration | int }} s" }
"""


def test_own_rules_run_first_in_file_order(compile_bot: Callable[[str], CompiledBot]) -> None:
    bot = compile_bot(OWN_RULES)
    assert [rule.name for rule in bot.dispositions] == ["vip", "booked", *BUILTIN_NAMES]

    gold = record("voicemail", duration=SHORT, variables={"tier": "gold"})
    result = apply_dispositions(gold, bot)

    assert result.dispositions == ["vip", "booked", "voicemail", "short_call"]
    assert result.disposition == "vip"
    assert result.analysis_skipped == "booked"  # the first rule that skips, not the first
    # earlier rules win; string values are templates over the record
    assert result.fields == {"priority": "high", "tags": ["vip"], "reason": "voicemail after 2 s"}


def test_set_keeps_fields_already_on_the_record(
    compile_bot: Callable[[str], CompiledBot],
) -> None:
    result = apply_dispositions(record(fields={"crm_id": 7}), compile_bot(OWN_RULES))

    assert result.fields == {"crm_id": 7, "priority": "normal", "reason": "customer after 30 s"}


def test_set_values_are_not_shared_between_calls(
    compile_bot: Callable[[str], CompiledBot],
) -> None:
    bot = compile_bot(OWN_RULES)
    gold = record(variables={"tier": "gold"})

    apply_dispositions(gold, bot).fields["tags"].append("changed")

    assert apply_dispositions(gold, bot).fields["tags"] == ["vip"]


def test_a_rule_with_a_builtin_name_replaces_it(
    compile_bot: Callable[[str], CompiledBot],
) -> None:
    bot = compile_bot(
        """
[[dispositions]]
name = "short_call"
when = "duration < 10"
set = { callback = true }
"""
    )
    assert [rule.name for rule in bot.dispositions].count("short_call") == 1

    result = apply_dispositions(record(duration=8.0), bot)

    assert result.dispositions == ["short_call"]  # at the bot's place, by the bot's rule
    assert result.analysis_skipped is None  # the replacement does not skip
    assert result.fields == {"callback": True}


def test_enabled_false_disables_a_builtin(compile_bot: Callable[[str], CompiledBot]) -> None:
    bot = compile_bot('[[dispositions]]\nname = "short_call"\nenabled = false\n')
    assert "short_call" not in [rule.name for rule in bot.dispositions]

    result = apply_dispositions(record(duration=SHORT), bot)

    assert (result.dispositions, result.analysis_skipped) == ([], None)
    silent = apply_dispositions(record(spoke=False, duration=SHORT), bot)
    assert silent.dispositions == ["no_customer_message"]  # the other built-ins stay


def test_a_disabled_own_rule_never_fires(compile_bot: Callable[[str], CompiledBot]) -> None:
    bot = compile_bot('[[dispositions]]\nname = "always"\nwhen = "true"\nenabled = false\n')

    assert apply_dispositions(record(), bot).dispositions == []


# -- failures ----------------------------------------------------------------------------


def test_a_rule_failing_at_runtime_is_reported_not_fatal(
    compile_bot: Callable[[str], CompiledBot],
) -> None:
    bot = compile_bot(
        """
[variables]
threshold = "5"

[[dispositions]]
name = "over_threshold"
when = "duration > threshold"
skip_analysis = true

[[dispositions]]
name = "labelled"
when = "true"
set = { first_words = "{{ transcript[5].text }}", kept = "yes" }
"""
    )

    result = apply_dispositions(record("voicemail"), bot)

    assert result.dispositions == ["labelled", "voicemail"]  # the broken rule did not fire
    assert result.analysis_skipped == "voicemail"
    assert result.fields == {"kept": "yes"}
    errors = [event for event in result.events if event.type == "disposition_error"]
    assert [event.data["rule"] for event in errors] == ["over_threshold", "labelled"]
    assert errors[0].data["error"].startswith("TypeError: '>' not supported")
    assert errors[1].data["key"] == "first_words"
    assert "UndefinedError" in errors[1].data["error"]
    assert errors[0].at == result.duration


def test_bad_rules_are_validation_problems(
    bot_dir: Callable[..., Path], registry: Registry
) -> None:
    toml = """
[[dispositions]]
name = "short_cal"
enabled = false

[[dispositions]]
name = "labelled"
when = "true"
set = { reason = "{{ disconected_by }}", broken = "{{ duration" }

[[dispositions]]
name = "no_condition"
"""
    problems = problems_of(bot_dir, registry, toml)

    assert any(
        "dispositions[2]: disposition 'no_condition' needs `when`" in line for line in problems
    )
    # schema problems stop the bot before the other checks; fix that one and look again
    problems = problems_of(bot_dir, registry, toml.split('[[dispositions]]\nname = "no_c')[0])
    assert any(
        "dispositions[0].name: there is no built-in rule 'short_cal' to disable "
        "(did you mean `short_call`?" in line
        for line in problems
    )
    assert any(
        "dispositions[1].set.reason: unknown name `disconected_by`" in line
        and "did you mean `disconnected_by`?" in line
        for line in problems
    )
    assert any("dispositions[1].set.broken: template syntax error" in line for line in problems)


def test_rules_over_a_tools_outcome_and_the_flows_values(
    compile_bot: Callable[[str], CompiledBot],
) -> None:
    """The README's two ways to label a call by a tool that succeeded: its timeline
    event, or a value it captured; and a flow's path."""
    booked_call = (
        "events | selectattr('type', 'eq', 'tool_call') | selectattr('data.name', 'eq', "
        "'calendar_book') | selectattr('data.outcome', 'eq', 'ok') | list"
    )
    bot = compile_bot(
        f"""
        [[dispositions]]
        name = "booked_by_event"
        when = "{booked_call}"
        [[dispositions]]
        name = "booked_by_capture"
        when = "captured.booking_ref is defined"
        set = {{ reference = "{{{{ captured.booking_ref }}}}" }}
        [[dispositions]]
        name = "took_a_message"
        when = "'take_message' in steps and step == 'message_taken'"
        """
    )
    booked = [CallEvent(type="tool_call", at=2.0, data={"name": "calendar_book", "outcome": "ok"})]
    failed = [
        CallEvent(type="tool_call", at=2.0, data={"name": "calendar_book", "outcome": "error"})
    ]
    done = apply_dispositions(record(events=booked, captured={"booking_ref": "BK1"}), bot)
    assert done.dispositions[:2] == ["booked_by_event", "booked_by_capture"]
    assert done.fields == {"reference": "BK1"}
    assert "booked_by_event" not in apply_dispositions(record(events=failed), bot).dispositions
    path = record(steps=["triage", "emergency", "take_message", "message_taken"])
    path.step = "message_taken"
    assert apply_dispositions(path, bot).disposition == "took_a_message"
