"""The `elevenlabs` TTS provider: options checked at load, livekit's ElevenLabs TTS built
per call with them. No request ever leaves the machine."""

from __future__ import annotations

import re
import sys
import typing
from collections.abc import Callable
from typing import Any

import pytest
from livekit.agents.utils import is_given
from livekit.plugins import elevenlabs
from livekit.plugins.elevenlabs.models import TTSEncoding, TTSModels
from pydantic import ValidationError

import runtime
from plugins.tts.elevenlabs import (
    DEFAULT_VOICE_ID,
    MODELS,
    ElevenLabsTTSOptions,
    Encoding,
    create_tts,
)

from .conftest import KEYS

VOICE_ID = "21m00Tcm4TlvDq8ikWAM"


def options(**table: Any) -> ElevenLabsTTSOptions:
    return ElevenLabsTTSOptions.model_validate(table)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"voice": VOICE_ID}, "voice\n  Extra inputs are not permitted"),
        (
            {"model": "eleven_flash_v3"},
            "unknown ElevenLabs model 'eleven_flash_v3'; did you mean `eleven_flash_v2`?",
        ),
        ({"voice_id": "Rachel"}, "'Rachel' is not an ElevenLabs voice id"),
        ({"encoding": "pcm_16k"}, "Input should be 'mp3_22050_32'"),
        (
            {"voice_settings": {"stability": 0.5}},
            "voice_settings.similarity_boost\n  Field required",
        ),
        (
            {"voice_settings": {"stability": 0.5, "similarity_boost": 0.7, "sped": 1.1}},
            "voice_settings.sped\n  Extra inputs are not permitted",
        ),
        (
            {"voice_settings": {"stability": 1.5, "similarity_boost": 0.7}},
            "less than or equal to 1",
        ),
        ({"apply_text_normalization": "yes"}, "'auto', 'on' or 'off'"),
        ({"api_key": "sk_el_plain"}, "secrets are read from the environment only"),
    ],
)
def test_invalid_options(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        options(**table)


def test_known_names_are_livekits() -> None:
    assert set(MODELS) == set(typing.get_args(TTSModels))
    assert set(typing.get_args(Encoding)) == set(typing.get_args(TTSEncoding))
    assert DEFAULT_VOICE_ID == elevenlabs.DEFAULT_VOICE_ID


async def test_builds_livekits_elevenlabs_tts_with_the_options(
    fake_keys: dict[str, str],
    make_call: Callable[..., runtime.CallContext],
    closing: Callable[[Any], Any],
) -> None:
    chosen = options(
        model="eleven_flash_v2_5",
        voice_id=VOICE_ID,
        encoding="pcm_16000",
        voice_settings={"stability": 0.4, "similarity_boost": 0.8, "speed": 1.1},
        apply_text_normalization="on",
        enable_logging=False,
    )
    tts = closing(create_tts(chosen, make_call("de")))

    assert isinstance(tts, elevenlabs.TTS)
    opts = tts._opts
    assert (opts.model, opts.voice_id, opts.language) == ("eleven_flash_v2_5", VOICE_ID, "de")
    assert (opts.encoding, tts.sample_rate) == ("pcm_16000", 16000)
    assert opts.voice_settings == elevenlabs.VoiceSettings(
        stability=0.4, similarity_boost=0.8, speed=1.1
    )
    assert (opts.apply_text_normalization, opts.enable_logging) == ("on", False)
    assert opts.api_key == KEYS["ELEVEN_API_KEY"]
    assert tts._session is None  # no HTTP session, no connection yet


async def test_the_bots_language_only_goes_to_models_that_enforce_one(
    fake_keys: dict[str, str],
    make_call: Callable[..., runtime.CallContext],
    closing: Callable[[Any], Any],
) -> None:
    call = make_call("de")
    multilingual = closing(create_tts(options(model="eleven_multilingual_v2"), call))
    assert not is_given(multilingual._opts.language)
    assert not is_given(multilingual._opts.voice_settings)  # the voice's own settings
    explicit = closing(create_tts(options(model="eleven_multilingual_v2", language="fr"), call))
    assert explicit._opts.language == "fr"


def test_a_missing_key_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, make_call: Callable[..., runtime.CallContext]
) -> None:
    monkeypatch.delenv("ELEVEN_API_KEY", raising=False)
    with pytest.raises(runtime.CallSetupError, match="environment variable ELEVEN_API_KEY"):
        create_tts(options(), make_call())


def test_a_missing_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
    fake_keys: dict[str, str],
    make_call: Callable[..., runtime.CallContext],
) -> None:
    monkeypatch.setitem(sys.modules, "livekit.plugins.elevenlabs", None)
    with pytest.raises(runtime.MissingExtra) as caught:
        create_tts(options(), make_call())
    assert "pip install 'dialplan[elevenlabs]'" in str(caught.value)
