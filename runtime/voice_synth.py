"""Speech for the simulated caller: any registered TTS provider, resampled to 8 kHz, in
one of the caller voices (`runtime.caller_voices`), with the hiss of a phone line."""

from __future__ import annotations

from typing import Any

import numpy as np

from runtime.caller_voices import CALLER_VOICES
from runtime.phone_sim import pcm_at_8k
from runtime.registry import Registry

LINE_SNR_DB = 30.0  # hiss of a phone line relative to the caller's speech
PAUSE = 0.8  # seconds: a caller stopping to think mid-sentence ("I'd like to book ... a")


class CallerVoice:
    def __init__(
        self,
        registry: Registry,
        provider: str = "piper",
        *,
        tract: float = 1.0,
        line_snr_db: float | None = None,
        **options: Any,
    ) -> None:
        entry = registry.provider("tts", provider)
        if provider == "piper" and not options:
            options = {"deterministic": True}  # the same line sounds the same every run
        self._tts = entry.factory(entry.options.model_validate(options), None)
        self.tract = tract
        self.line_snr_db = line_snr_db
        self._lines = 0

    @classmethod
    def named(cls, registry: Registry, name: str, *, line_snr_db: float | None = LINE_SNR_DB):
        """One of `CALLER_VOICES`, over a line with hiss (``line_snr_db``; None: clean)."""
        spec = CALLER_VOICES[name]
        return cls(
            registry, spec.provider, tract=spec.tract, line_snr_db=line_snr_db, **spec.options
        )

    async def synthesize(self, text: str) -> bytes:
        """``text`` spoken; " ... " in it is a pause for thought (`PAUSE` seconds)."""
        pause = bytes(2 * int(PAUSE * 8000))
        pieces = [await self._speak(piece) for piece in text.split(" ... ") if piece.strip()]
        speech = pause.join(pieces)
        if self.tract != 1.0:
            speech = change_tract(speech, self.tract)
        if self.line_snr_db is not None:
            self._lines += 1  # a new hiss per line, the same on every run
            speech = add_line_noise(speech, self.line_snr_db, seed=self._lines)
        return speech

    async def _speak(self, text: str) -> bytes:
        pcm = bytearray()
        rate = self._tts.sample_rate
        async with self._tts.synthesize(text) as stream:
            async for chunk in stream:
                pcm.extend(bytes(chunk.frame.data))
                rate = chunk.frame.sample_rate
        return pcm_at_8k(bytes(pcm), rate)

    async def aclose(self) -> None:
        await self._tts.aclose()


def change_tract(pcm16: bytes, factor: float) -> bytes:
    """Scale pitch and formants together by ``factor`` (resampling the waveform: the
    speech also gets shorter or longer by that factor)."""
    samples = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32)
    if samples.size < 2:
        return pcm16
    positions = np.arange(0, samples.size - 1, factor)
    return np.interp(positions, np.arange(samples.size), samples).astype(np.int16).tobytes()


def add_line_noise(pcm16: bytes, snr_db: float, *, seed: int) -> bytes:
    """White hiss ``snr_db`` below the speech's level (measured over its voiced part)."""
    samples = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32)
    if samples.size == 0:
        return pcm16
    voiced = samples[np.abs(samples) > 0.05 * (np.abs(samples).max() or 1.0)]
    level = float(np.sqrt(np.mean(voiced**2))) if voiced.size else 0.0
    noise = np.random.default_rng(seed).normal(0.0, level / 10 ** (snr_db / 20), samples.size)
    return np.clip(samples + noise, -32768, 32767).astype(np.int16).tobytes()
