"""The ``energy`` VAD provider: speech is audio louder than a threshold.

Far cheaper than silero (no model: one RMS per 20 ms frame), so it suits load tests,
simulated calls and quiet lines; silero is the better choice for real, noisy callers.

    [vad]
    provider = "energy"
    threshold_db = -40          # frames louder than this (dBFS) count as speech
    min_speech_duration = 0.1
    min_silence_duration = 0.5
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from runtime import RegisterProvider, hookimpl


class EnergyVADOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    threshold_db: float = Field(-40.0, le=0, description="speech is louder than this (dBFS)")
    min_speech_duration: float = Field(0.1, gt=0, description="seconds of sound to start speech")
    min_silence_duration: float = Field(0.5, gt=0, description="seconds of quiet that end speech")
    prefix_padding_duration: float = Field(
        0.3, ge=0, description="seconds of audio kept before the start of speech"
    )


def make_vad(options: EnergyVADOptions, call: Any) -> Any:
    from plugins.vad.energy_vad import EnergyVAD

    return EnergyVAD(options)


@hookimpl
def register_providers(register: RegisterProvider) -> None:
    register(
        kind="vad",
        name="energy",
        factory=make_vad,
        options=EnergyVADOptions,
        description="loudness threshold VAD: no model, negligible CPU",
    )
