"""The ``openai`` TTS provider: OpenAI's speech models (or any OpenAI-compatible server)
through the official ``livekit-plugins-openai`` (``pip install 'dialplan[openai]'``).

```toml
[tts]
provider = "openai"
model = "gpt-4o-mini-tts"
voice = "coral"
instructions = "Speak warmly and a little slower than usual."
api_key = "${env:OPENAI_API_KEY}"       # the default
```

This module only registers the provider and declares its options; livekit is imported
when a call builds its TTS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import runtime
from plugins.cloud_support import CloudProvider, check_known

if TYPE_CHECKING:
    from livekit.agents import tts

OPENAI_TTS = CloudProvider(
    kind="tts",
    name="openai",
    label="OpenAI",
    module="livekit.plugins.openai",
    package="livekit-plugins-openai",
    extra="openai",
    key_env="OPENAI_API_KEY",
)

# `TTSModels` of livekit-plugins-openai 1.8 and the openai SDK's `SpeechModel`
MODELS = ("tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15")
# `TTSVoices` of livekit-plugins-openai 1.8 and the built-in voices of the openai SDK
VOICES = (
    "alloy",
    "ash",
    "ballad",
    "cedar",
    "coral",
    "echo",
    "fable",
    "marin",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)
CUSTOM_VOICE_PREFIX = "voice_"  # custom voices are named by id, e.g. "voice_1234"


class OpenAITTSOptions(BaseModel):
    """Options of the ``openai`` TTS provider (the keys of the bot's ``[tts]`` table)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "gpt-4o-mini-tts",
        description='speech model: "gpt-4o-mini-tts", "tts-1" or "tts-1-hd"',
        examples=list(MODELS),
    )
    voice: str = Field(
        "ash",
        description='built-in voice, e.g. "ash", "coral" or "alloy", or a custom voice id '
        '("voice_...")',
        examples=list(VOICES),
    )
    speed: float = Field(1.0, ge=0.25, le=4.0, description="speaking rate, 0.25 to 4")
    instructions: str | None = Field(
        None,
        min_length=1,
        description="how to speak: tone, pace, accent (gpt-4o-mini-tts only)",
    )
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = Field(
        "mp3", description="audio encoding OpenAI sends; pcm needs no decoding"
    )
    base_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="base URL of an OpenAI-compatible server; default: OpenAI's API",
    )
    api_key: runtime.SecretRef = OPENAI_TTS.api_key_field()

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        return check_known(value, MODELS, what="OpenAI speech model")

    @field_validator("voice")
    @classmethod
    def _known_voice(cls, value: str) -> str:
        if value.startswith(CUSTOM_VOICE_PREFIX) and len(value) > len(CUSTOM_VOICE_PREFIX):
            return value
        return check_known(value, VOICES, what="OpenAI voice")

    @model_validator(mode="after")
    def _instructions_need_gpt_4o_mini_tts(self) -> OpenAITTSOptions:
        if self.instructions is not None and self.model.startswith("tts-1"):
            raise ValueError(f"`instructions` works with gpt-4o-mini-tts only, not {self.model!r}")
        return self


@runtime.hookimpl
def register_providers(register: runtime.RegisterProvider) -> None:
    register(
        kind="tts",
        name="openai",
        factory=create_tts,
        options=OpenAITTSOptions,
        description="OpenAI text to speech (gpt-4o-mini-tts, tts-1 ...; cloud; extra `openai`)",
    )


def create_tts(options: OpenAITTSOptions, call: runtime.CallContext) -> tts.TTS:
    """OpenAI's livekit TTS for this call (the model speaks the language it is given)."""
    OPENAI_TTS.require()
    from livekit.agents.types import NOT_GIVEN
    from livekit.plugins import openai

    return openai.TTS(
        model=options.model,
        voice=options.voice,
        speed=options.speed,
        instructions=options.instructions if options.instructions is not None else NOT_GIVEN,
        response_format=options.response_format,
        base_url=options.base_url or NOT_GIVEN,
        api_key=OPENAI_TTS.api_key(options.api_key),
    )
