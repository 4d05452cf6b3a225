"""The ``silero`` VAD provider: livekit's Silero voice activity detection, offline.

The ONNX model ships inside ``livekit-plugins-silero``. It is loaded once per process and
per distinct set of options, and shared by every call: each session opens its own stream
(the per-call state), so sharing is safe.

By default all calls of a process share one inference per window
(`plugins/vad/silero_batch.py`); ``batched = false`` is livekit's per-call stream.

    [vad]
    provider = "silero"
    min_speech_duration = 0.05      # seconds of speech before speech starts
    min_silence_duration = 0.3      # seconds of silence before speech ends
    activation_threshold = 0.5      # speech probability that counts as speech
    prefix_padding_duration = 0.5   # seconds of audio kept before the speech start
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from runtime import CallContext, RegisterProvider, hookimpl


class SileroOptions(BaseModel):
    # frozen, so equal options share one loaded model (see `silero_vad.shared_vad`)
    model_config = ConfigDict(extra="forbid", frozen=True)
    min_speech_duration: float = Field(
        0.05, ge=0, le=10, description="seconds of speech before a speech start is reported"
    )
    min_silence_duration: float = Field(
        0.3,
        ge=0,
        le=10,
        description="seconds of silence before the end of speech is reported (short: the "
        "turn's `transcript` detection waits longer when the caller sounds unfinished)",
    )
    activation_threshold: float = Field(
        0.5, gt=0, lt=1, description="speech probability above which a frame is speech"
    )
    prefix_padding_duration: float = Field(
        0.5, ge=0, le=5, description="seconds of audio kept before the detected speech start"
    )
    batched: bool = Field(
        True,
        description="one inference per window for every call of the process, silent windows "
        "skipped (false: livekit's stream, one inference per call per window)",
    )
    telephone_at_8k: bool = Field(
        False,
        description="judge 8 kHz phone audio at 8 kHz: about half the CPU again, but its "
        "turn boundaries differ from the 16 kHz model's more often (bench/vad_agreement.py)",
    )


def create_vad(options: SileroOptions, call: CallContext) -> Any:
    from plugins.vad.silero_vad import shared_vad

    return shared_vad(options)


@hookimpl
def register_providers(register: RegisterProvider) -> None:
    register(
        kind="vad",
        name="silero",
        factory=create_vad,
        options=SileroOptions,
        description="Silero voice activity detection (offline, model included)",
    )
