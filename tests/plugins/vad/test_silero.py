"""The silero provider: one loaded model per process and options, shared by every call;
each stream finds the speech in real synthesized audio, and none in silence."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from livekit.agents import vad
from pydantic import ValidationError

import runtime
from plugins.vad.silero import SileroOptions, create_vad
from runtime.catalog import load_catalog
from runtime.registry import Registry
from runtime.resolve import plan_call
from tests.plugins.speech import VOICE_RATE, frames, resample, silence, spoken

SENTENCE = "what are your opening hours"


def speech_seconds() -> float:
    return len(spoken(SENTENCE)) / 2 / VOICE_RATE


async def detect(model: vad.VAD, pcm: bytes, rate: int) -> list[vad.VADEvent]:
    """Every speech start and end the VAD reports for this audio."""
    stream = model.stream()
    for frame in frames(pcm, rate):
        stream.push_frame(frame)
    stream.end_input()
    events = [
        event
        async for event in stream
        if event.type in (vad.VADEventType.START_OF_SPEECH, vad.VADEventType.END_OF_SPEECH)
    ]
    await stream.aclose()
    return events


def call_audio(rate: int) -> bytes:
    """Half a second of silence, the sentence, then a second and a half of silence."""
    pcm = resample(spoken(SENTENCE), VOICE_RATE, rate)
    return silence(0.5, rate) + pcm + silence(1.5, rate)


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_finds_the_speech(rate: int) -> None:
    events = await detect(create_vad(SileroOptions(), None), call_audio(rate), rate)  # type: ignore[arg-type]

    assert [event.type for event in events] == [
        vad.VADEventType.START_OF_SPEECH,
        vad.VADEventType.END_OF_SPEECH,
    ]
    end = events[1]
    assert end.speech_duration == pytest.approx(speech_seconds(), abs=0.35)
    # the end of speech carries the utterance, with its prefix padding, for the STT
    utterance = sum(frame.duration for frame in end.frames)
    assert speech_seconds() < utterance < speech_seconds() + 1.0


async def test_silence_is_not_speech() -> None:
    events = await detect(create_vad(SileroOptions(), None), silence(2.0, 16000), 16000)  # type: ignore[arg-type]

    assert events == []


async def test_one_model_serves_concurrent_calls() -> None:
    first = create_vad(SileroOptions(), None)  # type: ignore[arg-type]
    second = create_vad(SileroOptions(), None)  # type: ignore[arg-type]
    other = create_vad(SileroOptions(min_silence_duration=0.55), None)  # type: ignore[arg-type]

    assert first is second  # loaded once, shared
    assert other is not first
    assert other.min_silence_duration == 0.55

    # two calls at once: each stream keeps its own state
    speech, quiet = await asyncio.gather(
        detect(first, call_audio(8000), 8000), detect(second, silence(2.5, 8000), 8000)
    )
    assert len(speech) == 2
    assert quiet == []


def test_options() -> None:
    defaults = SileroOptions()
    assert (defaults.min_speech_duration, defaults.min_silence_duration) == (0.05, 0.3)
    assert (defaults.activation_threshold, defaults.prefix_padding_duration) == (0.5, 0.5)

    with pytest.raises(ValidationError, match="activation_threshold\n  Input should be less"):
        SileroOptions(activation_threshold=1.5)


async def test_built_through_the_registry(registry: Registry, bot_dir: Callable[..., Path]) -> None:
    toml = (
        '[prompt]\nsystem = "You are a test bot."\n[llm]\nprovider = "rules"\n'
        '[vad]\nprovider = "silero"\nmin_silence_duration = 0.3\n'
    )
    snapshot = load_catalog(bot_dir("listener", toml), registry)
    assert not snapshot.problems, snapshot.problems
    plan = plan_call(snapshot, runtime.CallRequest(bot="listener"), registry)
    provider = plan.providers["vad"]
    assert provider.entry.factory is create_vad

    model = provider.entry.factory(provider.options, plan.new_context())

    assert model is create_vad(SileroOptions(min_silence_duration=0.3), None)  # type: ignore[arg-type]
    assert (model.model, model.provider) == ("silero", "dialplan (batched)")


def boundaries(events: list[vad.VADEvent]) -> list[tuple[vad.VADEventType, float]]:
    """Where speech starts and ends, in seconds of the audio."""
    return [
        (
            event.type,
            event.timestamp
            - (
                event.speech_duration
                if event.type == vad.VADEventType.START_OF_SPEECH
                else event.silence_duration
            ),
        )
        for event in events
    ]


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_batched_hears_the_turn_livekits_per_call_stream_hears(rate: int) -> None:
    audio = call_audio(rate)
    batched = await detect(create_vad(SileroOptions(), None), audio, rate)  # type: ignore[arg-type]
    per_call = await detect(create_vad(SileroOptions(batched=False), None), audio, rate)  # type: ignore[arg-type]

    assert create_vad(SileroOptions(batched=False), None).provider == "ONNX"  # type: ignore[arg-type]
    ours, theirs = boundaries(batched), boundaries(per_call)
    assert [kind for kind, _ in ours] == [kind for kind, _ in theirs]
    for (_, mine), (_, livekits) in zip(ours, theirs, strict=True):
        assert mine == pytest.approx(livekits, abs=0.04)  # within 40 ms


async def test_concurrent_calls_share_one_inference_per_window() -> None:
    from plugins.vad.silero_batch import BatchedSileroVAD, SileroBatcher

    batcher = SileroBatcher()
    model = BatchedSileroVAD(SileroOptions(), batcher)
    talking, quiet = call_audio(8000), silence(3.0, 8000)
    results = await asyncio.gather(
        *(detect(model, talking if i % 2 == 0 else quiet, 8000) for i in range(8))
    )

    for index, events in enumerate(results):  # each call's state stayed its own
        expected = 2 if index % 2 == 0 else 0
        assert len(events) == expected, (index, events)
    assert batcher.stats.largest > 1  # calls shared runs
    # the silent calls never reached the model: fewer windows ran than calls x windows
    assert batcher.stats.windows < 8 * len(talking) / 2 / 512


async def test_after_the_end_of_speech_nothing_reads_as_the_caller_still_talking() -> None:
    """livekit interrupts the bot when a VAD report says speech has lasted long enough:
    once the caller stopped, reports must count speech from zero again."""
    model = create_vad(SileroOptions(), None)  # type: ignore[arg-type]
    stream = model.stream()
    for frame in frames(call_audio(8000), 8000):
        stream.push_frame(frame)
    stream.end_input()
    events = [event async for event in stream]
    await stream.aclose()

    (end,) = [i for i, e in enumerate(events) if e.type == vad.VADEventType.END_OF_SPEECH]
    assert events[end].speech_duration > 0.5  # the utterance's own length is reported
    after = [e for e in events[end + 1 :] if e.type == vad.VADEventType.INFERENCE_DONE]
    assert after and all(e.speech_duration == 0.0 and not e.speaking for e in after)
