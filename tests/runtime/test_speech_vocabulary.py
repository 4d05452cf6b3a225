"""Bot-aware recognition: what a bot expects callers to say, worked out from its file (its
rules' words, its step's choices, short variable values) and from the call (the line the
bot just said), as a recognizer is told before each utterance."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import CallOverrides, CallRequest, regex_phrases
from runtime.catalog import CatalogSnapshot, load_catalog
from runtime.record import TranscriptEntry
from runtime.registry import Registry
from runtime.resolve import plan_call

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def shipped(registry: Registry) -> CatalogSnapshot:
    snapshot = load_catalog(REPO / "bots", registry, prompts_dir=REPO / "prompts")
    assert not snapshot.problems, snapshot.problems
    return snapshot


@pytest.mark.parametrize(
    ("pattern", "phrases"),
    [
        (r"\b(hours|open|close|closing)\b", ["hours", "open", "close", "closing"]),
        (r"\b(?P<day>monday|tuesday)\b", ["monday", "tuesday"]),
        (r"\b(book|check[- ]?up|check-?up)\b", ["book", "check up", "check-up"]),
        (r"\bmy name is (?P<name>[a-z]+)", ["my name is"]),
        (r"\b(bye|that's all|thank you)\b", ["bye", "that's all", "thank you"]),
        # glue words and single letters carry nothing a recognizer needs
        (r"\bbook (?:me )?(?:at )?(?P<t>\d{1,2})\s*(?:a\.m\.|pm)", ["book", "pm"]),
        (r"(?P<number>\+?\d[\d -]{5,}\d)", []),
    ],
)
def test_the_words_a_pattern_listens_for(pattern: str, phrases: list[str]) -> None:
    assert regex_phrases(pattern) == phrases


def test_a_bot_without_a_flow_expects_its_rules_words_and_answers_its_greeting(
    shipped: CatalogSnapshot, registry: Registry
) -> None:
    request = CallRequest(
        bot="receptionist",
        variables={"caller_name": "Ann"},
        overrides=CallOverrides(ignore_schedule=True),
    )
    call = plan_call(shipped, request, registry).new_context()

    context = call.speech_context()

    assert {"hours", "address", "cleaning", "tuesday", "receptionist"} <= set(context.phrases)
    assert {"Bright Smile Dental", "Ann"} <= set(context.phrases)  # names in the variables
    assert "+15550100" not in context.phrases  # a number is not a name
    assert (
        context.last_bot_line
        == "Hi Ann, thanks for calling Bright Smile Dental. How can I help you today?"
    )

    call.transcript.append(TranscriptEntry(role="bot", text="Which day suits you best?", at=3))
    context = call.speech_context()
    assert context.last_bot_line == "Which day suits you best?"
    prompt = context.as_prompt(call.bot.bot.description)
    assert prompt.startswith("Bright Smile Dental receptionist (inbound). hours, open")
    assert prompt.endswith("Which day suits you best?")  # what came last, Whisper reads last


def test_a_flow_bot_expects_the_words_of_the_step_it_is_in(
    shipped: CatalogSnapshot, registry: Registry
) -> None:
    plan = plan_call(shipped, CallRequest(bot="dentist"), registry)
    call = plan.new_context()

    call.step, call.steps = "triage", ["triage"]
    triage = call.speech_context()
    call.step, call.steps = "booking", ["triage", "booking"]
    booking = call.speech_context()

    # a transition's `when`, and a capture's allowed values
    assert "the caller wants to book an appointment" in triage.phrases
    assert {"cleaning", "check-up", "filling"} <= set(triage.phrases)
    # rules scoped to the booking step: times in words; not triage's transitions
    assert {"o'clock", "thirty", "eleven"} <= set(booking.phrases)
    assert "o'clock" not in triage.phrases
    assert "the caller wants to book an appointment" not in booking.phrases
    assert triage.last_bot_line is not None and "emergency" in triage.last_bot_line


def test_a_call_that_starts_in_a_later_step_does_not_answer_the_greeting(
    shipped: CatalogSnapshot, registry: Registry
) -> None:
    call = plan_call(shipped, CallRequest(bot="dentist"), registry).new_context()
    call.step, call.steps = "booking", ["booking"]

    assert call.speech_context().last_bot_line is None


def test_the_vocabulary_is_worked_out_once_per_bot_version_and_step(
    shipped: CatalogSnapshot, registry: Registry
) -> None:
    from runtime.speech_vocabulary import bot_phrases

    bot = shipped.bots["dentist"]
    assert bot_phrases(bot, "booking") is bot_phrases(bot, "booking")
    assert bot_phrases(bot, "booking") != bot_phrases(bot, "triage")
