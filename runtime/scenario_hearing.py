"""`dialplan test --voice`: each caller line as the bot hears it over a phone line.

The line is synthesized with a caller voice (not the bot's), gets the line's hiss, goes
through μ-law at 8 kHz as a phone call carries it, and is recognized by the bot's own STT
provider, built for the scenario's call (so a recognizer biased by the call, such as the
default Whisper told what the bot just asked, is biased exactly as on a real call). The
scenario's turn then runs on what was heard, and its expectations say whether the bot still
did the right thing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runtime.audio.mulaw import pcm16_to_ulaw, ulaw_to_pcm16
from runtime.call_defaults import call_defaults
from runtime.errors import CallSetupError
from runtime.phone_sim import RATE
from runtime.voice_synth import CallerVoice

if TYPE_CHECKING:
    from runtime.call import CallContext
    from runtime.registry import Registry


@dataclass
class Heard:
    said: str
    heard: str
    audio_seconds: float
    recognize_seconds: float


@dataclass
class Hearing:
    registry: Registry
    voice: CallerVoice
    # (provider, options) to hear with instead of each bot's own STT (benchmarks)
    stt: tuple[str, dict[str, Any]] | None = None
    lines: list[Heard] = field(default_factory=list)
    _stts: dict[str, Any] = field(default_factory=dict)  # by call session id

    async def __call__(self, line: str, call: CallContext) -> str:
        from livekit import rtc

        pcm = ulaw_to_pcm16(pcm16_to_ulaw(await self.voice.synthesize(line)))
        samples = len(pcm) // 2
        frame = rtc.AudioFrame(pcm[: samples * 2], RATE, 1, samples)
        started = time.perf_counter()
        event = await self._stt(call).recognize([frame])
        elapsed = time.perf_counter() - started
        heard = event.alternatives[0].text.strip() if event.alternatives else ""
        self.lines.append(Heard(line, heard, samples / RATE, elapsed))
        return heard

    def _stt(self, call: CallContext) -> Any:
        stt = self._stts.get(call.session_id)
        if stt is None:
            if self.stt is not None:
                entry = self.registry.provider("stt", self.stt[0])
                options = entry.options.model_validate(self.stt[1])
            else:
                resolved = call_defaults(call.bot, self.registry).providers.get("stt")
                if resolved is None:
                    raise CallSetupError(f"bot {call.bot_id!r} has no STT provider to hear with")
                entry, options = resolved.entry, resolved.options
            stt = self._stts[call.session_id] = entry.factory(options, call)
        return stt

    def word_errors(self) -> tuple[int, int]:
        """(word errors, words said) over every line heard so far."""
        return word_errors((line.said, line.heard) for line in self.lines)

    async def aclose(self) -> None:
        for stt in self._stts.values():
            await stt.aclose()
        self._stts.clear()
        await self.voice.aclose()


# hesitations a transcript may keep or drop: not words the bot needs (Whisper's own
# normalizer drops them too before scoring)
FILLERS = frozenset({"uh", "um", "umm", "uhm", "hmm", "mm", "mhm", "er", "ah"})
SPELLINGS = {"ok": "okay", "alright": "all right", "goodbye": "good bye"}


def normalized_words(text: str) -> list[str]:
    """Lower case, no punctuation, hyphenated words joined, fillers dropped."""
    text = text.lower().replace("-", "")
    words = re.findall(r"[a-z0-9']+", text)
    words = [SPELLINGS.get(word, word) for word in words if word not in FILLERS]
    return " ".join(words).split()


def word_errors(pairs: Iterable[tuple[str, str]]) -> tuple[int, int]:
    """Word-level edit distance summed over (said, heard) pairs, and the words said."""
    errors = total = 0
    for said, heard in pairs:
        reference, hypothesis = normalized_words(said), normalized_words(heard)
        row = list(range(len(hypothesis) + 1))
        for i, word in enumerate(reference, start=1):
            diagonal, row[0] = row[0], i
            for j, other in enumerate(hypothesis, start=1):
                diagonal, row[j] = (
                    row[j],
                    min(row[j] + 1, row[j - 1] + 1, diagonal + (word != other)),
                )
        errors += row[-1]
        total += len(reference)
    return errors, total
