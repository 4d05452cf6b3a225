"""The espeak provider: libespeak-ng through ctypes, one process-wide engine behind a lock.
Real synthesis, checked for sound, for its options, and for overlapping use."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

import runtime
from plugins.tts.espeak import EspeakOptions, create_tts
from plugins.tts.espeak_tts import EspeakError, EspeakTTS, engine
from runtime.catalog import load_catalog
from runtime.registry import Registry
from runtime.resolve import plan_call
from tests.plugins.speech import rms

SENTENCE = "What are your opening hours?"


def espeak(**options: object) -> EspeakTTS:
    model = create_tts(EspeakOptions.model_validate(options), None)  # type: ignore[arg-type]
    assert isinstance(model, EspeakTTS)
    return model


async def synthesize(model: EspeakTTS, text: str = SENTENCE) -> bytes:
    frame = await model.synthesize(text).collect()
    assert (frame.sample_rate, frame.num_channels) == (model.sample_rate, 1)
    return bytes(frame.data)


async def test_speaks_at_the_reported_rate() -> None:
    model = espeak()
    pcm = await synthesize(model)

    assert model.sample_rate == engine().sample_rate == 22050
    assert 1.0 < len(pcm) / 2 / model.sample_rate < 3.5
    assert rms(pcm) > 500  # speech, not silence


async def test_rate_and_pitch() -> None:
    normal = await synthesize(espeak())
    fast = await synthesize(espeak(rate=350))
    high = await synthesize(espeak(pitch=90))

    assert len(fast) < 0.7 * len(normal)
    assert high != normal


async def test_overlapping_syntheses_do_not_mix() -> None:
    # one global synthesizer: each synthesis must get exactly its own audio (eSpeak adds a
    # little noise, so the same text is the same length, give or take a few samples)
    long_text = "Thank you for calling, our opening hours are nine to five on weekdays."
    english = espeak(voice="en-us")
    german = espeak(voice="de")
    alone = [len(await synthesize(english, long_text)), len(await synthesize(german, "Ja."))]

    together = await asyncio.gather(
        *[synthesize(english, long_text) for _ in range(3)],
        *[synthesize(german, "Ja.") for _ in range(3)],
    )

    assert alone[0] > 5 * alone[1]
    for pcm, expected in zip(together, [alone[0]] * 3 + [alone[1]] * 3, strict=True):
        assert len(pcm) == pytest.approx(expected, rel=0.01)


def test_unknown_voice_is_a_clear_error() -> None:
    with pytest.raises(ValidationError) as caught:
        EspeakOptions(voice="en-uss")
    [error] = caught.value.errors()
    assert error["loc"] == ("voice",)
    assert error["msg"].startswith(
        "Value error, eSpeak NG has no voice 'en-uss'; did you mean `en-us`? voices: af, "
    )

    with pytest.raises(ValidationError, match="no voice variant 'zz'; variants: adam, alex, "):
        EspeakOptions(voice="en-us+zz")
    assert EspeakOptions(voice="EN-US+F3").voice == "EN-US+F3"

    # the engine says so too, for a name that got past validation
    with pytest.raises(EspeakError, match="eSpeak NG has no voice 'nosuch'"):
        engine().set_voice("nosuch")


def test_option_ranges() -> None:
    with pytest.raises(ValidationError, match="rate\n  Input should be less than or equal to 450"):
        EspeakOptions(rate=1000)
    with pytest.raises(ValidationError, match="pitch\n  Input should be greater than or equal"):
        EspeakOptions(pitch=-1)


async def test_built_through_the_registry(registry: Registry, bot_dir: Callable[..., Path]) -> None:
    toml = (
        '[prompt]\nsystem = "You are a test bot."\n[llm]\nprovider = "rules"\n'
        '[tts]\nprovider = "espeak"\nvoice = "en"\nrate = 200\n'
    )
    snapshot = load_catalog(bot_dir("robot", toml), registry)
    assert not snapshot.problems, snapshot.problems
    plan = plan_call(snapshot, runtime.CallRequest(bot="robot"), registry)
    provider = plan.providers["tts"]
    assert provider.entry.factory is create_tts
    model = provider.entry.factory(provider.options, plan.new_context())

    assert isinstance(model, EspeakTTS)
    assert (model.model, model.provider, model.options.rate) == ("espeak-ng/en", "espeak-ng", 200)
    assert rms(await synthesize(model, "Hello.")) > 500
