"""The default recognizer, Whisper tiny.en from its wheel, hearing real speech over a phone
line: what it hears, what it says of a line with only hiss on it, and how it is told what
the bot expects."""

from __future__ import annotations

import numpy as np
import pytest
from livekit import rtc

from plugins.stt.faster_whisper import FasterWhisperOptions
from plugins.stt.faster_whisper_stt import WhisperSTT, _without_repeats, resolve_model
from plugins.stt.offline import Expectation, to_mono_16k
from runtime.audio.mulaw import pcm16_to_ulaw, ulaw_to_pcm16
from runtime.registry import Registry
from runtime.voice_synth import CallerVoice, add_line_noise


@pytest.fixture(scope="module")
def whisper() -> WhisperSTT:
    options = FasterWhisperOptions(cpu_threads=1)
    stt = WhisperSTT(options, resolve_model(options))
    stt.load()
    return stt


async def over_the_line(registry: Registry, text: str, voice: str = "bob") -> rtc.AudioFrame:
    caller = CallerVoice.named(registry, voice)
    try:
        pcm = ulaw_to_pcm16(pcm16_to_ulaw(await caller.synthesize(text)))
    finally:
        await caller.aclose()
    return rtc.AudioFrame(pcm, 8000, 1, len(pcm) // 2)


async def test_a_caller_is_heard_over_a_phone_line(registry: Registry, whisper) -> None:
    frame = await over_the_line(registry, "Hi, could I book a cleaning for next Tuesday?")

    event = await whisper.recognize([frame])

    heard = event.alternatives[0]
    assert "cleaning" in heard.text.lower() and "tuesday" in heard.text.lower(), heard.text
    assert heard.language == "en" and 0 < heard.confidence <= 1


async def test_a_long_utterance_or_an_unknown_language_takes_whispers_own_loop(
    registry: Registry,
) -> None:
    """Past one 30 s window, or with the language left to detect, the utterance goes
    through faster-whisper's own segment loop instead of the short-window decoder."""
    options = FasterWhisperOptions(cpu_threads=1, language=None)
    detecting = WhisperSTT(options, resolve_model(options))
    frame = await over_the_line(registry, "What are your opening hours on Saturday?")

    event = await detecting.recognize([frame])

    assert "saturday" in event.alternatives[0].text.lower(), event.alternatives[0].text
    assert event.alternatives[0].language == "en"  # tiny.en detects nothing but English


async def test_a_line_with_only_hiss_on_it_says_nothing(whisper) -> None:
    quiet = (np.random.default_rng(7).normal(0, 200, 8000 * 2)).astype(np.int16).tobytes()
    hiss = add_line_noise(quiet, 0.0, seed=3)
    frame = rtc.AudioFrame(ulaw_to_pcm16(pcm16_to_ulaw(hiss)), 8000, 1, len(hiss) // 2)

    event = await whisper.recognize([frame])

    # not "Thank you." (what Whisper says of noise), which would end a receptionist's call
    assert event.alternatives[0].text == ""


async def test_what_the_bot_expects_is_read_before_the_utterance(
    registry: Registry, whisper
) -> None:
    audio = to_mono_16k(await over_the_line(registry, "Tuesday would be great.", voice="ann"))
    expected = Expectation("Which day suits you best?", ("monday", "tuesday", "wednesday"))

    told = whisper._recognize_blocking(audio, expected)
    # an off-topic prompt must not put its words in the caller's mouth
    misled = whisper._recognize_blocking(audio, Expectation("Thank you, bye.", ("thanks", "bye")))

    assert "tuesday" in told.text.lower(), told.text
    assert "bye" not in misled.text.lower() and "tuesday" in misled.text.lower(), misled.text


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("Thank you, please, please, please, please.", "Thank you, please,"),
        ("I'd like to book. I'd like to book. I'd like to book.", "I'd like to book."),
        ("No, no, I said no.", "No, no, I said no."),  # twice is speech, not a loop
        ("Bye bye.", "Bye bye."),
    ],
)
def test_a_loop_is_said_once(raw: str, kept: str) -> None:
    assert _without_repeats(raw) == kept
