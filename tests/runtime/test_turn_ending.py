"""The end of the caller's turn judged from the words heard: a turn that ends on "and",
"the", "um" or a comma waits for more; a finished sentence is answered at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from livekit.agents import llm

from runtime.catalog import load_catalog
from runtime.registry import Registry
from runtime.session import _session_options
from runtime.turn_ending import UNLIKELY, TranscriptTurnDetector, end_of_turn_probability


@pytest.mark.parametrize(
    "unfinished",
    [
        "I'd like to book a cleaning and",
        "Hi, um",
        "So, uh...",
        "I need to speak to the",
        "Can I book it for my",
        "What I wanted to ask,",
        "I'd like to",
    ],
)
def test_a_turn_that_stops_mid_sentence_is_unlikely_over(unfinished: str) -> None:
    assert end_of_turn_probability(unfinished) < UNLIKELY


@pytest.mark.parametrize(
    "finished",
    [
        "What are your opening hours?",
        "Who am I speaking with?",  # a preposition can end an English question
        "Can I come in?",
        "Yes, I can.",
        "Tuesday would be great.",
        "thanks bye",  # a recognizer without punctuation: no reason to wait
    ],
)
def test_a_finished_sentence_is_not_waited_on(finished: str) -> None:
    assert end_of_turn_probability(finished) >= UNLIKELY


async def test_the_detector_reads_the_callers_words_since_the_bot_spoke() -> None:
    detector = TranscriptTurnDetector()
    chat = llm.ChatContext()
    chat.add_message(role="assistant", content="Which day suits you best?")
    chat.add_message(role="user", content="Uh, Tuesday or")

    assert await detector.predict_end_of_turn(chat) < await detector.unlikely_threshold("en")
    assert await detector.supports_language("en") and not await detector.supports_language("de")

    chat.add_message(role="assistant", content="Sorry?")
    assert await detector.predict_end_of_turn(chat) == end_of_turn_probability("")


def test_voice_sessions_judge_turns_by_their_transcript_unless_told_otherwise(
    registry: Registry, bot_dir
) -> None:
    system = '[prompt]\nsystem = "x"\n[llm]\nprovider = "rules"\n'
    bots: Path = bot_dir("judged", system)
    bot_dir("silence", system + '[turn]\ndetection = "vad"\n')
    snapshot = load_catalog(bots, registry)

    judged = _session_options(snapshot.bots["judged"], text_only=False)["turn_handling"]
    silence = _session_options(snapshot.bots["silence"], text_only=False)["turn_handling"]
    text = _session_options(snapshot.bots["judged"], text_only=True)["turn_handling"]

    assert isinstance(judged["turn_detection"], TranscriptTurnDetector)
    assert judged["endpointing"] == {"min_delay": 0.3, "max_delay": 3.0}
    assert silence["turn_detection"] == "vad"
    assert text["turn_detection"] == "manual"
