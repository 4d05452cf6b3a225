"""The ``elevenlabs`` TTS provider: ElevenLabs voices through the official
``livekit-plugins-elevenlabs`` (``pip install 'dialplan[elevenlabs]'``).

```toml
[tts]
provider = "elevenlabs"
model = "eleven_flash_v2_5"
voice_id = "hpp4J3VqNfWAUOO0d1Us"
encoding = "pcm_16000"
voice_settings = { stability = 0.5, similarity_boost = 0.75, speed = 1.05 }
api_key = "${env:ELEVEN_API_KEY}"       # the default
```

This module only registers the provider and declares its options; livekit is imported
when a call builds its TTS.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

import runtime
from plugins.cloud_support import CloudProvider, check_known

if TYPE_CHECKING:
    from livekit.agents import tts

ELEVENLABS = CloudProvider(
    kind="tts",
    name="elevenlabs",
    label="ElevenLabs",
    module="livekit.plugins.elevenlabs",
    package="livekit-plugins-elevenlabs",
    extra="elevenlabs",
    key_env="ELEVEN_API_KEY",
)

# `TTSModels` of livekit-plugins-elevenlabs 1.8
MODELS = (
    "eleven_monolingual_v1",
    "eleven_multilingual_v1",
    "eleven_multilingual_v2",
    "eleven_turbo_v2",
    "eleven_turbo_v2_5",
    "eleven_flash_v2_5",
    "eleven_flash_v2",
    "eleven_v3",
    "eleven_v3_conversational",
    "eleven_v4",
    "eleven_v4_turbo",
)
# the models that take a language to enforce; only these get the bot's language by default
LANGUAGE_MODELS = ("eleven_turbo_v2_5", "eleven_flash_v2_5")
DEFAULT_VOICE_ID = "hpp4J3VqNfWAUOO0d1Us"  # livekit's default
_VOICE_ID = re.compile(r"^[A-Za-z0-9]{20}$")

# `TTSEncoding` of livekit-plugins-elevenlabs 1.8: codec, sample rate[, bitrate]
Encoding = Literal[
    "mp3_22050_32",
    "mp3_24000_48",
    "mp3_44100",
    "mp3_44100_32",
    "mp3_44100_64",
    "mp3_44100_96",
    "mp3_44100_128",
    "mp3_44100_192",
    "opus_48000_32",
    "opus_48000_64",
    "opus_48000_96",
    "opus_48000_128",
    "opus_48000_192",
    "pcm_8000",
    "pcm_16000",
    "pcm_22050",
    "pcm_24000",
    "pcm_32000",
    "pcm_44100",
    "pcm_48000",
]


class VoiceSettings(BaseModel):
    """ElevenLabs' voice settings; when given they replace the voice's saved ones."""

    model_config = ConfigDict(extra="forbid")

    stability: float = Field(
        ge=0, le=1, description="0 to 1: higher is more even, lower more expressive"
    )
    similarity_boost: float = Field(
        ge=0, le=1, description="0 to 1: how closely to match the original voice"
    )
    style: float | None = Field(None, ge=0, le=1, description="0 to 1: style exaggeration")
    speed: float | None = Field(None, ge=0.7, le=1.2, description="speaking rate, 0.7 to 1.2")
    use_speaker_boost: bool | None = Field(
        None, description="boost similarity to the original speaker (adds latency)"
    )


class ElevenLabsTTSOptions(BaseModel):
    """Options of the ``elevenlabs`` TTS provider (the keys of the bot's ``[tts]`` table)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "eleven_turbo_v2_5",
        description='ElevenLabs model, e.g. "eleven_flash_v2_5" or "eleven_turbo_v2_5"',
        examples=list(MODELS),
    )
    voice_id: str = Field(
        DEFAULT_VOICE_ID, description="id of the voice (20 letters and digits), not its name"
    )
    language: str | None = Field(
        None,
        min_length=1,
        description='language to enforce, e.g. "en"; default: the bot\'s `language` for '
        f"{' and '.join(LANGUAGE_MODELS)}, none for the other models",
    )
    encoding: Encoding = Field(
        "mp3_22050_32",
        description='audio format ElevenLabs sends, codec_samplerate[_bitrate]: "pcm_16000" '
        "needs no decoding",
    )
    voice_settings: VoiceSettings | None = Field(
        None,
        description="stability, similarity_boost (both required), style, speed and "
        "use_speaker_boost; default: the voice's saved settings",
    )
    apply_text_normalization: Literal["auto", "on", "off"] = Field(
        "auto", description='spell out numbers, dates and the like: "auto", "on" or "off"'
    )
    enable_logging: bool = Field(
        True, description="false: zero retention mode (ElevenLabs keeps no request history)"
    )
    api_key: runtime.SecretRef = ELEVENLABS.api_key_field()

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        return check_known(value, MODELS, what="ElevenLabs model")

    @field_validator("voice_id")
    @classmethod
    def _voice_id(cls, value: str) -> str:
        if not _VOICE_ID.match(value):
            raise ValueError(
                f"{value!r} is not an ElevenLabs voice id: give the voice's id (20 letters "
                f'and digits, like "{DEFAULT_VOICE_ID}"), not its name'
            )
        return value


@runtime.hookimpl
def register_providers(register: runtime.RegisterProvider) -> None:
    register(
        kind="tts",
        name="elevenlabs",
        factory=create_tts,
        options=ElevenLabsTTSOptions,
        description="ElevenLabs text to speech (cloud; extra `elevenlabs`)",
    )


def create_tts(options: ElevenLabsTTSOptions, call: runtime.CallContext) -> tts.TTS:
    """ElevenLabs' livekit TTS for this call."""
    ELEVENLABS.require()
    from livekit.agents.types import NOT_GIVEN
    from livekit.plugins import elevenlabs

    language = options.language
    if language is None and options.model in LANGUAGE_MODELS:
        language = call.bot.bot.language
    settings = options.voice_settings
    return elevenlabs.TTS(
        model=options.model,
        voice_id=options.voice_id,
        language=language if language is not None else NOT_GIVEN,
        encoding=options.encoding,
        voice_settings=NOT_GIVEN
        if settings is None
        else elevenlabs.VoiceSettings(
            stability=settings.stability,
            similarity_boost=settings.similarity_boost,
            style=settings.style if settings.style is not None else NOT_GIVEN,
            speed=settings.speed if settings.speed is not None else NOT_GIVEN,
            use_speaker_boost=settings.use_speaker_boost
            if settings.use_speaker_boost is not None
            else NOT_GIVEN,
        ),
        apply_text_normalization=options.apply_text_normalization,
        enable_logging=options.enable_logging,
        api_key=ELEVENLABS.api_key(options.api_key),
    )
