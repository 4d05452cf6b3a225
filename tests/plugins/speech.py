"""Real speech for the voice tests: sentences spoken by the bundled piper voice (no noise,
so the same text is always the same audio), resampled and cut into frames like a line."""

from __future__ import annotations

import asyncio
import functools

import numpy as np
from livekit import rtc
from livekit.agents.voice import io
from piper import SynthesisConfig

from plugins.tts.piper import default_voice
from plugins.tts.piper_tts import shared_voice

VOICE_RATE = 22050


@functools.cache
def spoken(text: str) -> bytes:
    """``text`` as 16-bit mono PCM at 22.05 kHz."""
    voice = shared_voice(default_voice())
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    return b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text, config))


def resample(pcm: bytes, source_rate: int, rate: int) -> bytes:
    if source_rate == rate:
        return pcm
    resampler = rtc.AudioResampler(
        source_rate, rate, num_channels=1, quality=rtc.AudioResamplerQuality.HIGH
    )
    frames = [*resampler.push(bytearray(pcm)), *resampler.flush()]
    return b"".join(bytes(frame.data) for frame in frames)


def silence(seconds: float, rate: int) -> bytes:
    return bytes(2 * int(seconds * rate))


def frames(pcm: bytes, rate: int, *, ms: int = 20) -> list[rtc.AudioFrame]:
    """Cut into ``ms`` frames as a line delivers them (the last one padded with silence)."""
    size = rate * ms // 1000
    samples = np.frombuffer(pcm, dtype=np.int16)
    padded = np.pad(samples, (0, -len(samples) % size))
    return [
        rtc.AudioFrame(padded[i : i + size].tobytes(), rate, 1, size)
        for i in range(0, len(padded), size)
    ]


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


class LineInput(io.AudioInput):
    """What an ``AgentSession`` hears: frames the test pushes, then the end of the line."""

    def __init__(self) -> None:
        super().__init__(label="test.line")
        self._frames: asyncio.Queue[rtc.AudioFrame | None] = asyncio.Queue()

    def play(self, pcm: bytes, rate: int) -> None:
        for frame in frames(pcm, rate):
            self._frames.put_nowait(frame)

    def hang_up(self) -> None:
        self._frames.put_nowait(None)

    async def __anext__(self) -> rtc.AudioFrame:
        frame = await self._frames.get()
        if frame is None:
            self._frames.put_nowait(None)
            raise StopAsyncIteration
        return frame


class LineOutput(io.AudioOutput):
    """What an ``AgentSession`` says: every frame kept, played out at once."""

    def __init__(self, sample_rate: int | None = None) -> None:
        super().__init__(
            label="test.line",
            capabilities=io.AudioOutputCapabilities(pause=False),
            sample_rate=sample_rate,
        )
        self.frames: list[rtc.AudioFrame] = []
        self._position = 0.0

    @property
    def pcm(self) -> bytes:
        return b"".join(bytes(frame.data) for frame in self.frames)

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        if not self._pending_playback_count:
            self.on_playback_started(created_at=0.0)
        await super().capture_frame(frame)
        self.frames.append(frame)
        self._position += frame.duration

    def flush(self) -> None:
        super().flush()
        if self._pending_playback_count:
            self.on_playback_finished(playback_position=self._position, interrupted=False)
            self._position = 0.0

    def clear_buffer(self) -> None:
        if self._pending_playback_count:
            self.on_playback_finished(playback_position=self._position, interrupted=True)
            self._position = 0.0
