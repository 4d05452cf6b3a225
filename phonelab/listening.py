"""What a phone heard: the lines in it (speech between silences) and their words.

The bot's lines are found by energy (20 ms frames above a floor, a line ends after
`LINE_GAP` of quiet) and transcribed offline with the Whisper tiny.en the runtime ships,
with no prompt: what a caller would make of it, not what the bot meant to say.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

RATE = 8000
FRAME = RATE // 50  # samples in 20 ms
SPEECH_RMS = 300.0  # 16-bit; line hiss and comfort noise stay far below
LINE_GAP = 1.0  # seconds of quiet that end a line (the bot pauses less inside one)


@dataclass(frozen=True)
class Line:
    start: float  # seconds into the recording
    end: float
    pcm: bytes

    @property
    def seconds(self) -> float:
        return self.end - self.start


def lines(pcm16: bytes, *, gap: float = LINE_GAP, finished: bool = True) -> list[Line]:
    """The spoken lines; with ``finished=False`` a line still going at the end (less than
    ``gap`` of quiet after it) is left out: it may not be over."""
    samples = np.frombuffer(pcm16[: len(pcm16) // 2 * 2], dtype=np.int16).astype(np.float32)
    count = len(samples) // FRAME
    if count == 0:
        return []
    frames = samples[: count * FRAME].reshape(count, FRAME)
    loud = np.sqrt((frames**2).mean(axis=1)) > SPEECH_RMS
    gap_frames = int(gap * 50)
    found: list[Line] = []
    start = None
    quiet = 0
    for index, is_loud in enumerate(loud):
        if is_loud:
            if start is None:
                start = index
            quiet = 0
        elif start is not None:
            quiet += 1
            if quiet >= gap_frames:
                found.append(_line(pcm16, start, index - quiet + 1))
                start, quiet = None, 0
    if start is not None and finished:
        found.append(_line(pcm16, start, count - quiet))
    return [line for line in found if line.seconds >= 0.3]  # not a click


def _line(pcm16: bytes, start: int, end: int) -> Line:
    return Line(start / 50, end / 50, pcm16[start * FRAME * 2 : end * FRAME * 2])


def wait_for_lines(
    recording: Callable[[], bytes], count: int, timeout: float = 30.0, *, gap: float = LINE_GAP
) -> list[Line]:
    """Poll a growing recording until it holds ``count`` finished lines."""
    deadline = time.monotonic() + timeout
    found: list[Line] = []
    while time.monotonic() < deadline:
        found = lines(recording(), gap=gap, finished=False)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise TimeoutError(f"heard {len(found)} of {count} line(s) within {timeout:g} s")


@cache
def _model() -> Any:
    from faster_whisper import WhisperModel

    from plugins.stt.faster_whisper import FasterWhisperOptions
    from plugins.stt.faster_whisper_stt import resolve_model

    path = resolve_model(FasterWhisperOptions())
    return WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=1)


def transcribe(pcm16: bytes, rate: int = RATE) -> str:
    """Words in 16-bit mono PCM, by the bundled Whisper tiny.en (no prompt)."""
    audio = np.frombuffer(pcm16[: len(pcm16) // 2 * 2], dtype=np.int16).astype(np.float32)
    audio /= 32768.0
    if rate != 16000:  # Whisper hears 16 kHz
        positions = np.arange(0, len(audio), rate / 16000)
        audio = np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)
    segments, _info = _model().transcribe(
        audio, language="en", beam_size=5, condition_on_previous_text=False
    )
    return " ".join(segment.text.strip() for segment in segments).strip()


def share_heard(expected: str, heard: str) -> float:
    """The share of ``expected``'s words found in ``heard`` (both normalized): a phone
    line and a small recognizer miss a word now and then ("bright smile bentle")."""
    from runtime.scenario_hearing import normalized_words

    wanted = normalized_words(expected)
    got = set(normalized_words(heard))
    return sum(word in got for word in wanted) / len(wanted) if wanted else 1.0


def assert_heard(expected: str, pcm16: bytes, *, at_least: float = 0.75) -> str:
    """Transcribe ``pcm16`` and check it carries most of ``expected``; returns the words."""
    heard = transcribe(pcm16)
    assert share_heard(expected, heard) >= at_least, f"expected {expected!r}, heard {heard!r}"
    return heard
