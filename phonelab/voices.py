"""Caller lines as WAV files a SIP phone plays: a caller voice unlike the bot's, at 8 kHz."""

from __future__ import annotations

import asyncio
from pathlib import Path

from phonelab.baresip import silence, write_wav


def caller_line(
    text: str, path: Path, *, voice: str = "ann", then_silence: float = 120.0, lead: float = 0.3
) -> Path:
    """``text`` in a caller voice, written as 8 kHz WAV; padded with silence, because
    baresip hangs up when the file it speaks ends."""
    from runtime.registry import load_registry
    from runtime.voice_synth import CallerVoice

    async def speak() -> bytes:
        caller = CallerVoice.named(load_registry(), voice)
        try:
            return await caller.synthesize(text)
        finally:
            await caller.aclose()

    pcm = asyncio.run(speak())
    return write_wav(path, silence(lead) + pcm + silence(then_silence))
