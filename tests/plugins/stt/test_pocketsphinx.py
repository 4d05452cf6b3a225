"""The pocketsphinx provider on real speech: the bundled piper voice says a sentence, the
line carries it at 8, 16 or 48 kHz, and PocketSphinx must return exactly those words —
alone, inside an ``AgentSession``, and built through the registry like any plugin."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from livekit.agents import Agent, AgentSession, stt
from pydantic import ValidationError

import runtime
from plugins.stt.pocketsphinx import PocketSphinxOptions, create_stt, installed_languages
from plugins.stt.pocketsphinx_stt import PocketSphinxSTT
from plugins.vad.silero_vad import shared_vad
from runtime.catalog import load_catalog
from runtime.registry import Registry, load_registry
from runtime.resolve import plan_call
from tests.plugins.speech import VOICE_RATE, LineInput, frames, resample, silence, spoken

HOURS = "what are your opening hours"
BOOKING = "i would like to book an appointment"


@pytest.fixture(scope="module")
def recognizer() -> PocketSphinxSTT:
    """One decoder for the module: loading it takes about half a second."""
    engine = PocketSphinxSTT(PocketSphinxOptions())
    engine.load()
    return engine


@pytest.fixture(scope="module")
def menu() -> PocketSphinxSTT:
    engine = PocketSphinxSTT(PocketSphinxOptions(grammar=[HOURS, "book an appointment", "no"]))
    engine.load()
    return engine


def line_audio(text: str, rate: int) -> list:
    return frames(resample(spoken(text), VOICE_RATE, rate), rate)


def text_of(event: stt.SpeechEvent) -> str:
    assert event.type == stt.SpeechEventType.FINAL_TRANSCRIPT
    return event.alternatives[0].text


# -- recognition -------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
async def test_exact_transcript_at_line_rates(recognizer: PocketSphinxSTT, rate: int) -> None:
    event = await recognizer.recognize(line_audio(HOURS, rate))

    assert text_of(event) == HOURS
    data = event.alternatives[0]
    assert data.language == "en-US"
    assert 0.0 < data.confidence <= 1.0
    assert data.end_time == pytest.approx(len(spoken(HOURS)) / 2 / VOICE_RATE, abs=0.03)


async def test_one_frame_and_stereo(recognizer: PocketSphinxSTT) -> None:
    from livekit import rtc

    mono = resample(spoken(HOURS), VOICE_RATE, 24000)
    stereo = bytes(b for i in range(0, len(mono), 2) for b in mono[i : i + 2] * 2)
    frame = rtc.AudioFrame(stereo, 24000, 2, len(mono) // 2)

    assert text_of(await recognizer.recognize(frame)) == HOURS


async def test_silence_is_no_words(recognizer: PocketSphinxSTT) -> None:
    event = await recognizer.recognize(frames(silence(1.0, 8000), 8000))

    assert text_of(event) == ""


async def test_overlapping_recognitions_each_get_their_own_words(
    recognizer: PocketSphinxSTT,
) -> None:
    hours, booking = await asyncio.gather(
        recognizer.recognize(line_audio(HOURS, 8000)),
        recognizer.recognize(line_audio(BOOKING, 16000)),
    )

    assert (text_of(hours), text_of(booking)) == (HOURS, BOOKING)


async def test_grammar_recognizes_only_its_phrases(menu: PocketSphinxSTT) -> None:
    booking, hours, other = await asyncio.gather(
        menu.recognize(line_audio("book an appointment", 8000)),
        menu.recognize(line_audio(HOURS, 8000)),
        menu.recognize(line_audio("the weather is lovely today", 8000)),
    )

    assert (text_of(booking), text_of(hours)) == ("book an appointment", HOURS)
    assert text_of(other) in {"", "book an appointment", HOURS, "no"}  # never other words


async def test_added_words_are_recognized() -> None:
    options = PocketSphinxOptions(
        grammar=["call zorbex now", "call the office"], words={"zorbex": "z ao r b eh k s"}
    )
    engine = PocketSphinxSTT(options)
    try:
        event = await engine.recognize(line_audio("call zorbex now", 16000))
    finally:
        await engine.aclose()

    assert text_of(event) == "call zorbex now"


# -- options -----------------------------------------------------------------------------


def problem(**table: object) -> str:
    with pytest.raises(ValidationError) as caught:
        PocketSphinxOptions.model_validate(table)
    [error] = caught.value.errors()
    return f"{'.'.join(map(str, error['loc']))}: {error['msg']}"


def test_only_installed_languages() -> None:
    assert installed_languages() == ("en-us",)
    message = problem(language="de")
    assert message.startswith("language: Value error, pocketsphinx has no model for language ")
    assert "'de'; installed: en-us (a CMU Sphinx model goes in " in message


def test_grammar_is_checked_at_load() -> None:
    assert "give at least one phrase" in problem(grammar=[])
    assert "phrase 1 is empty" in problem(grammar=["yes", "  "])
    assert "phrase 0 ('yes, please'): 'yes,' is not a word" in problem(grammar=["yes, please"])
    assert "'zorbex' is not in the en-us dictionary" in problem(grammar=["call zorbex"])
    assert "unknown: Q" in problem(words={"zorbex": "Z AO R B Q"}, grammar=["call zorbex"])
    assert "'Zorbex' is not a lowercase word" in problem(words={"Zorbex": "Z AO R"})


def test_grammar_becomes_jsgf() -> None:
    options = PocketSphinxOptions(grammar=["Yes  please", "no", "yes please"])

    assert options.grammar == ["yes please", "no", "yes please"]
    assert options.jsgf() == (
        "#JSGF V1.0;\ngrammar dialplan;\npublic <utterance> = ( yes please ) | ( no ) ;\n"
    )
    assert PocketSphinxOptions().jsgf() is None


# -- through the registry and inside a session -------------------------------------------


@pytest.fixture
def build(registry: Registry, bot_dir: Callable[..., Path]) -> Callable[[str], object]:
    """The STT a call gets: bot file -> catalog -> call plan -> the registered factory."""

    def build(tables: str) -> object:
        toml = f'[prompt]\nsystem = "You are a test bot."\n[llm]\nprovider = "rules"\n{tables}'
        snapshot = load_catalog(bot_dir("voice", toml), registry)
        assert not snapshot.problems, snapshot.problems
        plan = plan_call(snapshot, runtime.CallRequest(bot="voice"), registry)
        provider = plan.providers["stt"]
        assert provider.entry.factory is create_stt  # found through the entry point
        return provider.entry.factory(provider.options, plan.new_context())

    return build


async def transcribe_in_session(model: stt.STT, *, vad: object = None) -> str:
    """Play the sentence into an AgentSession's audio input; the first final transcript."""
    heard: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    # closing waits for a last transcript up to this long; the sentence is long done by then
    session: AgentSession = AgentSession(
        stt=model,
        vad=vad,  # type: ignore[arg-type]
        session_close_transcript_timeout=0.1,
    )

    @session.on("user_input_transcribed")
    def _transcribed(event: object) -> None:
        if getattr(event, "is_final", False) and not heard.done():
            heard.set_result(getattr(event, "transcript", ""))

    line = LineInput()
    session.input.audio = line
    await session.start(Agent(instructions="Listen."))
    try:
        pcm = resample(spoken(HOURS), VOICE_RATE, 8000)
        line.play(silence(0.3, 8000) + pcm + silence(1.5, 8000), 8000)
        return await asyncio.wait_for(heard, timeout=20)
    finally:
        line.hang_up()
        await session.aclose()


async def test_a_bot_without_vad_gets_the_offline_default(
    build: Callable[[str], object],
) -> None:
    model = build('[stt]\nprovider = "pocketsphinx"')
    assert isinstance(model, PocketSphinxSTT)  # the session gets silero, livekit wraps it


async def test_without_any_vad_the_stt_streams_by_itself_in_a_session(
    bot_dir: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIALPLAN_DISABLED_PLUGINS", "silero")  # no VAD provider at all
    registry = load_registry()
    toml = '[prompt]\nsystem = "x"\n[llm]\nprovider = "rules"\n[stt]\nprovider = "pocketsphinx"'
    snapshot = load_catalog(bot_dir("voice", toml), registry)
    plan = plan_call(snapshot, runtime.CallRequest(bot="voice"), registry)
    assert "vad" not in plan.providers
    model = plan.providers["stt"].entry.factory(plan.providers["stt"].options, plan.new_context())

    # livekit refuses a non-streaming STT in a session without a VAD, so it comes wrapped
    assert isinstance(model, stt.StreamAdapter)
    assert isinstance(model.wrapped_stt, PocketSphinxSTT)
    assert model.capabilities.streaming

    assert await transcribe_in_session(model) == HOURS


async def test_bot_with_vad_gets_the_recognizer_and_livekit_wraps_it(
    build: Callable[[str], object],
) -> None:
    model = build('[stt]\nprovider = "pocketsphinx"\n[vad]\nprovider = "silero"')

    assert isinstance(model, PocketSphinxSTT)
    assert not model.capabilities.streaming

    assert await transcribe_in_session(model, vad=shared_vad()) == HOURS


async def test_calls_share_pooled_decoders_instead_of_loading_one_each() -> None:
    from plugins.stt.pocketsphinx_stt import DecoderPool, PocketSphinxSTT

    pool = DecoderPool()
    options = PocketSphinxOptions(grammar=[HOURS, BOOKING])
    calls = [PocketSphinxSTT(options, pool) for _ in range(6)]  # six calls' recognizers
    audio = line_audio(HOURS, 8000)
    for recognizer in calls:
        assert text_of(await recognizer.recognize(audio)) == HOURS
    assert pool.created == 1  # one after another: one decoder served all six calls
    results = await asyncio.gather(*(r.recognize(audio) for r in calls[:3]))
    assert [text_of(event) for event in results] == [HOURS] * 3
    assert pool.created <= 3  # at most one per recognition running at the same moment
