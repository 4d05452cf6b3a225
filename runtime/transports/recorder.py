"""A stereo recording of a WebSocket call: the caller on the left, the bot on the right.

Both channels share one timeline, the call's monotonic clock at the line's sample rate.
Caller audio is placed where it arrived; bot audio where it was scheduled to play, so
what the caller heard lines up with what they said. A barge-in truncates the bot's
channel at the moment the caller interrupted.
"""

from __future__ import annotations

import time
import wave
from pathlib import Path

import numpy as np


class StereoRecorder:
    def __init__(self, sample_rate: int, *, started: float | None = None) -> None:
        self.sample_rate = sample_rate
        self._t0 = time.monotonic() if started is None else started
        self._caller = bytearray()
        self._bot = bytearray()

    def _offset(self, at: float) -> int:
        """Byte offset of a moment on the timeline (16-bit samples)."""
        return max(0, int((at - self._t0) * self.sample_rate)) * 2

    def caller(self, pcm16: bytes, at: float | None = None) -> None:
        self._place(self._caller, pcm16, time.monotonic() if at is None else at, append=True)

    def bot(self, pcm16: bytes, play_at: float) -> None:
        self._place(self._bot, pcm16, play_at, append=False)

    def truncate_bot(self, at: float | None = None) -> None:
        """The caller interrupted: audio scheduled after ``at`` was never heard."""
        cut = self._offset(time.monotonic() if at is None else at)
        del self._bot[cut:]

    def _place(self, track: bytearray, pcm16: bytes, at: float, *, append: bool) -> None:
        start = self._offset(at) - (len(pcm16) if append else 0)
        if append and start < len(track):
            # a steady stream arrives in bursts: keep it contiguous rather than overlapping
            start = len(track)
        if start > len(track):
            track.extend(bytes(start - len(track)))
        track[start : start + len(pcm16)] = pcm16

    @property
    def seconds(self) -> float:
        return max(len(self._caller), len(self._bot)) / 2 / self.sample_rate

    def write(self, path: Path) -> Path:
        frames = max(len(self._caller), len(self._bot)) // 2
        stereo = np.zeros((frames, 2), dtype="<i2")
        stereo[: len(self._caller) // 2, 0] = np.frombuffer(bytes(self._caller), dtype="<i2")
        stereo[: len(self._bot) // 2, 1] = np.frombuffer(bytes(self._bot), dtype="<i2")
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as out:
            out.setnchannels(2)
            out.setsampwidth(2)
            out.setframerate(self.sample_rate)
            out.writeframes(stereo.tobytes())
        return path
