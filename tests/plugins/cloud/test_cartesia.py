"""The `cartesia` TTS provider: options checked at load, livekit's Cartesia TTS built per
call with them. No request ever leaves the machine."""

from __future__ import annotations

import re
import sys
import typing
from collections.abc import Callable
from typing import Any

import pytest
from livekit.plugins import cartesia
from livekit.plugins.cartesia.models import TTSDefaultVoiceId, TTSModels, TTSVoiceEmotion
from pydantic import ValidationError

import runtime
from plugins.tts.cartesia import DEFAULT_VOICE, EMOTIONS, MODELS, CartesiaTTSOptions, create_tts

from .conftest import KEYS

VOICE = "a0e99841-438c-4a64-b679-ae501e7d6091"


def options(**table: Any) -> CartesiaTTSOptions:
    return CartesiaTTSOptions.model_validate(table)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"voice_id": VOICE}, "voice_id\n  Extra inputs are not permitted"),
        ({"model": "sonic-4"}, "unknown Cartesia model 'sonic-4'; did you mean `sonic-3`?"),
        ({"voice": "Katie"}, "'Katie' is not a Cartesia voice id: give the voice's id"),
        ({"speed": 2.5}, "less than or equal to 2"),
        ({"speed": "fast"}, "valid number"),
        ({"volume": 0.1}, "greater than or equal to 0.5"),
        ({"model": "sonic-turbo", "volume": 1.2}, "`volume` works with sonic-3 models only"),
        ({"emotion": "calm"}, "unknown Cartesia emotion 'calm'; did you mean `Calm`?"),
        (
            {"model": "sonic-2", "speed": 1.2, "emotion": "Calm"},
            "`speed` and `emotion` work with sonic-3 models only, not 'sonic-2'",
        ),
        ({"sample_rate": 11025}, "Input should be 8000, 16000, 22050, 24000, 44100 or 48000"),
        ({"api_key": "sk_car_plain"}, "secrets are read from the environment only"),
    ],
)
def test_invalid_options(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        options(**table)


def test_known_names_are_livekits() -> None:
    assert set(MODELS) == set(typing.get_args(TTSModels))
    assert set(EMOTIONS) == set(typing.get_args(TTSVoiceEmotion))
    assert TTSDefaultVoiceId == DEFAULT_VOICE


def test_a_dated_snapshot_of_a_known_model_is_accepted() -> None:
    assert options(model="sonic-3-2025-10-27", speed=1.1).model == "sonic-3-2025-10-27"


async def test_builds_livekits_cartesia_tts_with_the_options(
    fake_keys: dict[str, str],
    make_call: Callable[..., runtime.CallContext],
    closing: Callable[[Any], Any],
) -> None:
    chosen = options(
        model="sonic-3", voice=VOICE, speed=1.2, volume=1.5, emotion="Calm", sample_rate=16000
    )
    tts = closing(create_tts(chosen, make_call("es")))

    assert isinstance(tts, cartesia.TTS)
    opts = tts._opts
    assert (opts.model, opts.voice, opts.language) == ("sonic-3", VOICE, "es")  # bot's language
    assert (opts.speed, opts.volume, opts.emotion) == (1.2, 1.5, ["Calm"])
    assert (opts.sample_rate, tts.sample_rate) == (16000, 16000)
    assert opts.api_key == KEYS["CARTESIA_API_KEY"]
    assert tts._session is None  # no HTTP session, no connection yet


async def test_defaults_and_an_explicit_language(
    fake_keys: dict[str, str],
    make_call: Callable[..., runtime.CallContext],
    closing: Callable[[Any], Any],
) -> None:
    tts = closing(create_tts(options(language="fr"), make_call("es")))
    opts = tts._opts
    assert (opts.model, opts.voice, opts.language) == ("sonic-3", DEFAULT_VOICE, "fr")
    assert (opts.speed, opts.volume, opts.emotion, opts.sample_rate) == (None, None, None, 24000)


def test_a_missing_key_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, make_call: Callable[..., runtime.CallContext]
) -> None:
    monkeypatch.delenv("CARTESIA_API_KEY", raising=False)
    with pytest.raises(runtime.CallSetupError, match="environment variable CARTESIA_API_KEY"):
        create_tts(options(), make_call())


def test_a_missing_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
    fake_keys: dict[str, str],
    make_call: Callable[..., runtime.CallContext],
) -> None:
    monkeypatch.setitem(sys.modules, "livekit.plugins.cartesia", None)
    with pytest.raises(runtime.MissingExtra) as caught:
        create_tts(options(), make_call())
    assert "pip install 'dialplan[cartesia]'" in str(caught.value)
