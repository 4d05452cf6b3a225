"""The `openai` STT and TTS providers: options checked at load, livekit's OpenAI STT and
TTS built per call with them. No request ever leaves the machine."""

from __future__ import annotations

import re
import sys
import typing
from collections.abc import Callable
from typing import Any

import pytest
from livekit.plugins import openai
from livekit.plugins.openai.models import STTModels, TTSModels, TTSVoices
from openai.types.audio.speech_create_params import Voice as SDKVoice
from openai.types.audio.speech_model import SpeechModel
from pydantic import ValidationError

import runtime
from plugins.stt import openai as openai_stt
from plugins.tts import openai as openai_tts

from .conftest import KEYS


def stt_options(**table: Any) -> openai_stt.OpenAISTTOptions:
    return openai_stt.OpenAISTTOptions.model_validate(table)


def tts_options(**table: Any) -> openai_tts.OpenAITTSOptions:
    return openai_tts.OpenAITTSOptions.model_validate(table)


def literal_values(annotation: Any) -> set[str]:
    """Every string a (nested) Literal / Union annotation names."""
    values: set[str] = set()
    for arg in typing.get_args(annotation):
        if isinstance(arg, str):
            values.add(arg)
        else:
            values |= literal_values(arg)
    return values


# -- STT -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"langauge": "en"}, "langauge\n  Extra inputs are not permitted"),
        (
            {"model": "gpt-4o-mini-transcibe"},
            "unknown OpenAI transcription model 'gpt-4o-mini-transcibe'; "
            "did you mean `gpt-4o-mini-transcribe`?",
        ),
        (
            {"model": "whisper-1", "keywords": ["Okafor"]},
            "`keywords` works with gpt-transcribe and gpt-live-transcribe only, not 'whisper-1'",
        ),
        (
            {"model": "gpt-realtime-whisper", "use_realtime": False},
            "'gpt-realtime-whisper' is served only over the Realtime API",
        ),
        ({"use_realtime": True, "temperature": 0.2}, "`temperature` does not apply"),
        ({"temperature": 1.5}, "less than or equal to 1"),
        ({"noise_reduction_type": "near"}, "'near_field' or 'far_field'"),
        ({"base_url": "localhost:8000/v1"}, "should match pattern"),
        ({"api_key": "sk-plain-text"}, "secrets are read from the environment only"),
    ],
)
def test_invalid_stt_options(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        stt_options(**table)


def test_known_stt_models_are_livekits() -> None:
    assert set(openai_stt.MODELS) == literal_values(STTModels)


async def test_builds_livekits_openai_stt_with_the_options(
    fake_keys: dict[str, str],
    make_call: Callable[..., runtime.CallContext],
    closing: Callable[[Any], Any],
) -> None:
    chosen = stt_options(
        model="gpt-4o-transcribe",
        prompt="A caller booking a dental appointment.",
        temperature=0.1,
        base_url="http://127.0.0.1:9/v1",
    )
    stt = closing(openai_stt.create_stt(chosen, make_call("fr")))

    assert isinstance(stt, openai.STT)
    opts = stt._opts
    assert (opts.model, opts.languages) == ("gpt-4o-transcribe", ["fr"])  # the bot's language
    assert (opts.prompt, opts.temperature) == ("A caller booking a dental appointment.", 0.1)
    assert stt.capabilities.streaming is False  # not the Realtime API
    assert stt._client.api_key == KEYS["OPENAI_API_KEY"]
    assert str(stt._client.base_url) == "http://127.0.0.1:9/v1/"


async def test_stt_keywords_and_an_explicit_language(
    fake_keys: dict[str, str],
    make_call: Callable[..., runtime.CallContext],
    closing: Callable[[Any], Any],
) -> None:
    chosen = stt_options(model="gpt-transcribe", language="es", keywords=["Okafor"])
    stt = closing(openai_stt.create_stt(chosen, make_call("fr")))
    assert (stt._opts.languages, stt._opts.keywords) == (["es"], ["Okafor"])


def test_stt_missing_key_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, make_call: Callable[..., runtime.CallContext]
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(runtime.CallSetupError, match="environment variable OPENAI_API_KEY"):
        openai_stt.create_stt(stt_options(), make_call())


def test_stt_missing_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
    fake_keys: dict[str, str],
    make_call: Callable[..., runtime.CallContext],
) -> None:
    monkeypatch.setitem(sys.modules, "livekit.plugins.openai", None)
    with pytest.raises(runtime.MissingExtra) as caught:
        openai_stt.create_stt(stt_options(), make_call())
    assert "pip install 'dialplan[openai]'" in str(caught.value)


# -- TTS -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"voise": "coral"}, "voise\n  Extra inputs are not permitted"),
        ({"model": "tts-2"}, "unknown OpenAI speech model 'tts-2'; did you mean `tts-1`?"),
        ({"voice": "corall"}, "unknown OpenAI voice 'corall'; did you mean `coral`?"),
        ({"voice": "voice_"}, "unknown OpenAI voice 'voice_'"),
        ({"speed": 5}, "less than or equal to 4"),
        (
            {"model": "tts-1", "instructions": "Speak warmly."},
            "`instructions` works with gpt-4o-mini-tts only, not 'tts-1'",
        ),
        ({"response_format": "ogg"}, "'mp3', 'opus', 'aac', 'flac', 'wav' or 'pcm'"),
        ({"api_key": "${OPENAI_API_KEY}"}, "secrets are read from the environment only"),
    ],
)
def test_invalid_tts_options(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        tts_options(**table)


def test_known_tts_models_and_voices_are_livekits_and_the_sdks() -> None:
    assert set(openai_tts.MODELS) == literal_values(TTSModels) | literal_values(SpeechModel)
    assert set(openai_tts.VOICES) == literal_values(TTSVoices) | literal_values(SDKVoice)


def test_a_custom_voice_id_is_accepted() -> None:
    assert tts_options(voice="voice_1234").voice == "voice_1234"


async def test_builds_livekits_openai_tts_with_the_options(
    fake_keys: dict[str, str],
    make_call: Callable[..., runtime.CallContext],
    closing: Callable[[Any], Any],
) -> None:
    chosen = tts_options(
        model="gpt-4o-mini-tts",
        voice="coral",
        speed=1.25,
        instructions="Speak warmly.",
        response_format="pcm",
    )
    tts = closing(openai_tts.create_tts(chosen, make_call()))

    assert isinstance(tts, openai.TTS)
    opts = tts._opts
    assert (opts.model, opts.voice, opts.speed) == ("gpt-4o-mini-tts", "coral", 1.25)
    assert (opts.instructions, opts.response_format) == ("Speak warmly.", "pcm")
    assert tts._client.api_key == KEYS["OPENAI_API_KEY"]
    assert str(tts._client.base_url) == "https://api.openai.com/v1/"


def test_tts_missing_key_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, make_call: Callable[..., runtime.CallContext]
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(runtime.CallSetupError, match="environment variable OPENAI_API_KEY"):
        openai_tts.create_tts(tts_options(), make_call())


def test_tts_missing_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
    fake_keys: dict[str, str],
    make_call: Callable[..., runtime.CallContext],
) -> None:
    monkeypatch.setitem(sys.modules, "livekit.plugins.openai", None)
    with pytest.raises(runtime.MissingExtra) as caught:
        openai_tts.create_tts(tts_options(), make_call())
    assert "pip install 'dialplan[openai]'" in str(caught.value)


async def test_without_a_prompt_the_bots_expected_words_are_the_prompt(
    fake_keys: dict[str, str],
    receptionist_call: runtime.CallContext,
    closing: Callable[[Any], Any],
) -> None:
    told = closing(openai_stt.create_stt(stt_options(bot_vocabulary=True), receptionist_call))
    prompt = told._opts.prompt
    assert prompt.startswith("Bright Smile Dental receptionist (inbound). hours, open, close")
    assert prompt.endswith("thanks for calling Bright Smile Dental. How can I help you today?")
    # a prompt of the file's own wins; without the option, none is made up
    own = stt_options(bot_vocabulary=True, prompt="Dental clinic.")
    assert closing(openai_stt.create_stt(own, receptionist_call))._opts.prompt == "Dental clinic."
    plain = closing(openai_stt.create_stt(stt_options(), receptionist_call))
    assert not plain._opts.prompt
