"""The piper provider: real synthesis with the bundled voice, checked by what it sounds like
to a real recognizer, by its determinism, and inside an ``AgentSession`` on an 8 kHz line."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from livekit.agents import Agent, AgentSession
from pydantic import ValidationError

import runtime
from plugins.stt.pocketsphinx import PocketSphinxOptions
from plugins.stt.pocketsphinx_stt import PocketSphinxSTT
from plugins.tts.piper import PiperOptions, create_tts, default_voice
from plugins.tts.piper_tts import PiperTTS, shared_voice
from runtime.catalog import load_catalog
from runtime.registry import Registry
from runtime.resolve import plan_call
from tests.plugins.speech import LineOutput, frames, rms

SENTENCE = "We open at nine in the morning."


@pytest.fixture(scope="module")
def voice_loaded() -> None:
    shared_voice(default_voice())  # about two seconds, once for the whole process


@pytest.fixture(scope="module")
def recognizer() -> PocketSphinxSTT:
    engine = PocketSphinxSTT(PocketSphinxOptions())
    engine.load()
    return engine


def piper(**options: object) -> PiperTTS:
    model = create_tts(PiperOptions.model_validate(options), None)  # type: ignore[arg-type]
    assert isinstance(model, PiperTTS)
    return model


async def synthesize(model: PiperTTS, text: str) -> bytes:
    frame = await model.synthesize(text).collect()
    assert (frame.sample_rate, frame.num_channels) == (model.sample_rate, 1)
    return bytes(frame.data)


async def heard(recognizer: PocketSphinxSTT, pcm: bytes, rate: int) -> str:
    event = await recognizer.recognize(frames(pcm, rate))
    return event.alternatives[0].text


# -- synthesis ---------------------------------------------------------------------------


@pytest.mark.usefixtures("voice_loaded")
async def test_speech_is_the_text(recognizer: PocketSphinxSTT) -> None:
    model = piper(deterministic=True)  # so the recognizer hears the same audio every run
    pcm = await synthesize(model, "Thank you for calling.")

    assert model.sample_rate == 22050
    assert 0.8 < len(pcm) / 2 / 22050 < 2.5
    assert await heard(recognizer, pcm, 22050) == "thank you for calling"


@pytest.mark.usefixtures("voice_loaded")
async def test_deterministic_gives_identical_bytes() -> None:
    model = piper(deterministic=True)

    first, second = await asyncio.gather(synthesize(model, SENTENCE), synthesize(model, SENTENCE))
    third = await synthesize(piper(deterministic=True), SENTENCE)

    assert first == second == third
    assert rms(first) > 1000


@pytest.mark.usefixtures("voice_loaded")
async def test_speed_and_volume() -> None:
    normal = await synthesize(piper(deterministic=True), SENTENCE)
    fast = await synthesize(piper(deterministic=True, speed=2.0), SENTENCE)
    quiet = await synthesize(piper(deterministic=True, volume=0.5), SENTENCE)

    assert 0.45 < len(fast) / len(normal) < 0.7  # the pauses around the words shrink less
    assert len(quiet) == len(normal)
    assert rms(quiet) / rms(normal) == pytest.approx(0.5, abs=0.05)


@pytest.mark.usefixtures("voice_loaded")
async def test_streams_sentence_by_sentence() -> None:
    model = piper(deterministic=True)
    text = " ".join(
        [
            "Thank you for calling the dental clinic on the corner of Main Street.",
            "We are open from nine in the morning until five in the afternoon.",
            "On Saturdays we open at ten and close at one in the afternoon.",
        ]
    )
    started = time.perf_counter()
    arrivals: list[float] = []
    async with model.synthesize(text) as stream:
        async for _audio in stream:
            arrivals.append(time.perf_counter() - started)

    # the first sentence is on its way while the others are still being synthesized
    assert arrivals[0] < 0.6 * arrivals[-1]


@pytest.mark.usefixtures("voice_loaded")
async def test_an_interrupted_synthesis_stops_cleanly() -> None:
    model = piper()
    stream = model.synthesize("One. " * 40)
    first = await stream.__anext__()
    await stream.aclose()

    assert first.frame.duration > 0
    assert await synthesize(model, "Two.")  # the voice is free for the next sentence


# -- options -----------------------------------------------------------------------------


def problem(**table: object) -> str:
    with pytest.raises(ValidationError) as caught:
        PiperOptions.model_validate(table)
    [error] = caught.value.errors()
    return f"{'.'.join(map(str, error['loc']))}: {error['msg']}"


def test_options_are_checked_at_load(tmp_path: Path) -> None:
    assert problem(voice=str(tmp_path / "none.onnx")).endswith(
        f"no voice model at {tmp_path / 'none.onnx'}"
    )
    (tmp_path / "lonely.onnx").write_bytes(b"")
    assert problem(voice=str(tmp_path / "lonely.onnx")).endswith(
        "has no config beside it (lonely.onnx.json)"
    )
    assert "is not a Piper voice model (a .onnx file)" in problem(voice="voice.bin")
    assert problem(speaker=1) == (
        "speaker: Value error, the voice has 1 speaker(s): ids 0 to 0, not 1"
    )
    assert "the voice has no speaker 'alice'; speakers: (none)" in problem(speaker="alice")
    assert problem(speed=0) == "speed: Input should be greater than or equal to 0.25"
    assert problem(sped=1.2) == "sped: Extra inputs are not permitted"


# -- through the registry, in a session ----------------------------------------------------


@pytest.mark.usefixtures("voice_loaded")
async def test_a_bot_speaks_on_an_8khz_line(
    registry: Registry, bot_dir: Callable[..., Path], recognizer: PocketSphinxSTT
) -> None:
    toml = (
        '[prompt]\nsystem = "You are a test bot."\n[llm]\nprovider = "rules"\n'
        '[tts]\nprovider = "piper"\nspeed = 0.9\ndeterministic = true\n'
    )
    snapshot = load_catalog(bot_dir("speaker", toml), registry)
    assert not snapshot.problems, snapshot.problems
    plan = plan_call(snapshot, runtime.CallRequest(bot="speaker"), registry)
    provider = plan.providers["tts"]
    assert provider.entry.factory is create_tts  # found through the entry point
    model = provider.entry.factory(provider.options, plan.new_context())
    assert isinstance(model, PiperTTS)
    assert model.options.speed == 0.9
    assert (model.model, model.provider) == ("en_US-joe-medium", "piper")

    line = LineOutput(sample_rate=8000)
    session: AgentSession = AgentSession(tts=model)
    session.output.audio = line
    await session.start(Agent(instructions="Speak."))
    try:
        # livekit wraps the non-streaming TTS and feeds it sentence by sentence
        await session.say("Good morning. What are your opening hours?").wait_for_playout()
    finally:
        await session.aclose()

    assert {frame.sample_rate for frame in line.frames} == {8000}
    assert await heard(recognizer, line.pcm, 8000) == "good morning what are your opening hours"
