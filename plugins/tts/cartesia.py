"""The ``cartesia`` TTS provider: Cartesia's Sonic voices through the official
``livekit-plugins-cartesia`` (``pip install 'dialplan[cartesia]'``).

```toml
[tts]
provider = "cartesia"
model = "sonic-3"
voice = "f786b574-daa5-4673-aa0c-cbe3e8534c02"
speed = 1.1
sample_rate = 16000
api_key = "${env:CARTESIA_API_KEY}"     # the default
```

This module only registers the provider and declares its options; livekit is imported
when a call builds its TTS.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import runtime
from plugins.cloud_support import CloudProvider, check_known

if TYPE_CHECKING:
    from livekit.agents import tts

CARTESIA = CloudProvider(
    kind="tts",
    name="cartesia",
    label="Cartesia",
    module="livekit.plugins.cartesia",
    package="livekit-plugins-cartesia",
    extra="cartesia",
    key_env="CARTESIA_API_KEY",
)

# `TTSModels` of livekit-plugins-cartesia 1.8; dated snapshots ("sonic-3-2025-10-27") too
MODELS = ("sonic", "sonic-2", "sonic-lite", "sonic-preview", "sonic-turbo", "sonic-3")
DEFAULT_VOICE = "f786b574-daa5-4673-aa0c-cbe3e8534c02"  # livekit's default: Katie
# `TTSVoiceEmotion` of livekit-plugins-cartesia 1.8 (sonic-3's generation_config.emotion)
EMOTIONS = (
    "Happy",
    "Excited",
    "Enthusiastic",
    "Elated",
    "Euphoric",
    "Triumphant",
    "Amazed",
    "Surprised",
    "Flirtatious",
    "Joking/Comedic",
    "Curious",
    "Content",
    "Peaceful",
    "Serene",
    "Calm",
    "Grateful",
    "Affectionate",
    "Trust",
    "Sympathetic",
    "Anticipation",
    "Mysterious",
    "Angry",
    "Mad",
    "Outraged",
    "Frustrated",
    "Agitated",
    "Threatened",
    "Disgusted",
    "Contempt",
    "Envious",
    "Sarcastic",
    "Ironic",
    "Sad",
    "Dejected",
    "Melancholic",
    "Disappointed",
    "Hurt",
    "Guilty",
    "Bored",
    "Tired",
    "Rejected",
    "Nostalgic",
    "Wistful",
    "Apologetic",
    "Hesitant",
    "Insecure",
    "Confused",
    "Resigned",
    "Anxious",
    "Panicked",
    "Alarmed",
    "Scared",
    "Neutral",
    "Proud",
    "Confident",
    "Distant",
    "Skeptical",
    "Contemplative",
    "Determined",
)


class CartesiaTTSOptions(BaseModel):
    """Options of the ``cartesia`` TTS provider (the keys of the bot's ``[tts]`` table)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        "sonic-3",
        description='Cartesia model, e.g. "sonic-3" or "sonic-turbo"',
        examples=list(MODELS),
    )
    voice: str = Field(
        DEFAULT_VOICE,
        description="id of a Cartesia voice (a UUID, from the voice library or your own)",
    )
    language: str | None = Field(
        None,
        min_length=1,
        description='language to speak, e.g. "en" or "de"; default: the bot\'s `language`',
    )
    speed: float | None = Field(
        None, ge=0.6, le=2.0, description="speaking rate, 0.6 to 2 (sonic-3 models only)"
    )
    volume: float | None = Field(
        None, ge=0.5, le=2.0, description="loudness, 0.5 to 2 (sonic-3 models only)"
    )
    emotion: str | None = Field(
        None, description='emotion to speak with, e.g. "Calm" (sonic-3 models only)'
    )
    sample_rate: Literal[8000, 16000, 22050, 24000, 44100, 48000] = Field(
        24000, description="sample rate in Hz of the audio Cartesia sends"
    )
    api_key: runtime.SecretRef = CARTESIA.api_key_field()

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        return check_known(value, MODELS, what="Cartesia model")

    @field_validator("voice")
    @classmethod
    def _voice_id(cls, value: str) -> str:
        try:
            uuid.UUID(value)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a Cartesia voice id: give the voice's id (a UUID like "
                f'"{DEFAULT_VOICE}"), not its name'
            ) from None
        return value

    @field_validator("emotion")
    @classmethod
    def _known_emotion(cls, value: str | None) -> str | None:
        return None if value is None else check_known(value, EMOTIONS, what="Cartesia emotion")

    @model_validator(mode="after")
    def _controls_need_sonic_3(self) -> CartesiaTTSOptions:
        controls = [
            name for name in ("speed", "volume", "emotion") if getattr(self, name) is not None
        ]
        if controls and not self.model.startswith("sonic-3"):
            names = " and ".join(f"`{name}`" for name in controls)
            verb = "works" if len(controls) == 1 else "work"
            raise ValueError(
                f"{names} {verb} with sonic-3 models only, not {self.model!r} "
                '(use model = "sonic-3")'
            )
        return self


@runtime.hookimpl
def register_providers(register: runtime.RegisterProvider) -> None:
    register(
        kind="tts",
        name="cartesia",
        factory=create_tts,
        options=CartesiaTTSOptions,
        description="Cartesia Sonic text to speech (cloud; extra `cartesia`)",
    )


def create_tts(options: CartesiaTTSOptions, call: runtime.CallContext) -> tts.TTS:
    """Cartesia's livekit TTS for this call, in the bot's language unless set."""
    CARTESIA.require()
    from livekit.plugins import cartesia

    return cartesia.TTS(
        model=options.model,
        voice=options.voice,
        language=options.language or call.bot.bot.language,
        speed=options.speed,
        volume=options.volume,
        emotion=options.emotion,
        sample_rate=options.sample_rate,
        api_key=CARTESIA.api_key(options.api_key),
    )
