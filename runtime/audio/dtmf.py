"""In-band DTMF: the tone pairs of ITU-T Q.23, as 16-bit PCM.

Media-stream transports have no signalling channel for key presses toward the far end,
so ``send_dtmf`` plays the tones on the audio path (μ-law carries them cleanly).
"""

from __future__ import annotations

import numpy as np

LOW = {"1": 697, "2": 697, "3": 697, "A": 697, "4": 770, "5": 770, "6": 770, "B": 770,
       "7": 852, "8": 852, "9": 852, "C": 852, "*": 941, "0": 941, "#": 941, "D": 941}  # fmt: skip
HIGH = {"1": 1209, "4": 1209, "7": 1209, "*": 1209, "2": 1336, "5": 1336, "8": 1336,
        "0": 1336, "3": 1477, "6": 1477, "9": 1477, "#": 1477, "A": 1633, "B": 1633,
        "C": 1633, "D": 1633}  # fmt: skip
TONE_SECONDS = 0.1
GAP_SECONDS = 0.05
PAUSE_SECONDS = 0.5  # "w"
AMPLITUDE = 0.35  # of full scale, per tone: the pair stays well clear of clipping


def dtmf_pcm(digits: str, sample_rate: int) -> bytes:
    """The tones for ``digits`` (``0-9 * # A-D``, ``w`` = half a second of silence)."""
    parts: list[np.ndarray] = []
    gap = np.zeros(int(GAP_SECONDS * sample_rate))
    t = np.arange(int(TONE_SECONDS * sample_rate)) / sample_rate
    for digit in digits.upper():
        if digit == "W":
            parts.append(np.zeros(int(PAUSE_SECONDS * sample_rate)))
            continue
        if digit not in LOW:
            raise ValueError(f"{digit!r} is not a DTMF digit (0-9, *, #, A-D, w)")
        tone = np.sin(2 * np.pi * LOW[digit] * t) + np.sin(2 * np.pi * HIGH[digit] * t)
        parts.extend([tone * AMPLITUDE, gap])
    samples = np.concatenate(parts) if parts else np.zeros(0)
    return (samples * 32767).astype("<i2").tobytes()
