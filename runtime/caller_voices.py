"""The voices of simulated callers (`dialplan simulate --voice`, `dialplan test --voice`).

A simulated caller must not sound like the bot: a recognizer tested on the bot's own voice
learns nothing about callers. These differ from the shipped bots' voice (Piper's joe at its
own pace) in pitch, vocal-tract length and pace, or are another synthesizer altogether.
Imported by the CLI's argument parser: no audio libraries here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CallerVoiceSpec:
    provider: str
    options: dict[str, Any] = field(default_factory=dict)
    # > 1 raises pitch and formants together, as a shorter vocal tract does (the "vocal
    # tract length perturbation" speech recognizers are trained with) and quickens the
    # pace by as much; 1 leaves the voice
    tract: float = 1.0
    description: str = ""


CALLER_VOICES = {
    "ann": CallerVoiceSpec(
        "piper",
        {"speed": 0.95, "deterministic": True},
        tract=1.16,
        description="higher and quicker than the bot (Piper; pitch and formants x1.16, pace x1.1)",
    ),
    "bob": CallerVoiceSpec(
        "piper",
        {"deterministic": True},
        tract=0.9,
        description="deeper and slower than the bot (Piper; pitch and formants x0.9, pace x0.9)",
    ),
    "joe": CallerVoiceSpec(
        "piper",
        {"deterministic": True},
        description="the shipped bots' own voice, clean: for pocketsphinx grammars "
        "(--exact), never to measure a recognizer",
    ),
    "robot": CallerVoiceSpec(
        "espeak",
        {"voice": "en-us+m3", "rate": 165},
        description="eSpeak NG's formant synthesizer: harder than any human caller",
    ),
}
DEFAULT_CALLER_VOICE = "ann"
