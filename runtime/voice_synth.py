"""Speech for the simulated caller: any registered TTS provider, resampled to 8 kHz."""

from __future__ import annotations

from typing import Any

from runtime.phone_sim import pcm_at_8k
from runtime.registry import Registry


class CallerVoice:
    def __init__(self, registry: Registry, provider: str = "piper", **options: Any) -> None:
        entry = registry.provider("tts", provider)
        if provider == "piper" and not options:
            options = {"deterministic": True}  # the same line sounds the same every run
        self._tts = entry.factory(entry.options.model_validate(options), None)

    async def synthesize(self, text: str) -> bytes:
        pcm = bytearray()
        rate = self._tts.sample_rate
        async with self._tts.synthesize(text) as stream:
            async for chunk in stream:
                pcm.extend(bytes(chunk.frame.data))
                rate = chunk.frame.sample_rate
        return pcm_at_8k(bytes(pcm), rate)

    async def aclose(self) -> None:
        await self._tts.aclose()
