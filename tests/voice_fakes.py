"""Instant voice providers for transport tests and load benchmarks, on livekit's real
base classes: the "caller" speaks tone bursts, the STT hears the next scripted line for
each utterance, the TTS answers with a tone as long as the text. No model, no network."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectOptions,
    APIStatusError,
    llm,
    stt,
    tts,
    utils,
)
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from pydantic import BaseModel, ConfigDict

from runtime import RegisterProvider, hookimpl

TTS_RATE = 16000
SECONDS_PER_CHAR = 0.03


def tone(seconds: float, sample_rate: int, frequency: float = 440.0) -> bytes:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (np.sin(2 * np.pi * frequency * t) * 12000).astype("<i2").tobytes()


class ScriptedSTT(stt.STT):
    """Each utterance is heard as the next line of ``lines`` (then "goodbye")."""

    def __init__(self, lines: Iterable[str]) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._lines = list(lines)

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        text = self._lines.pop(0) if self._lines else "goodbye"
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            alternatives=[stt.SpeechData(language="en", text=text)],
        )


class ToneTTS(tts.TTS):
    def __init__(self) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False), sample_rate=TTS_RATE, num_channels=1
        )

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return _ToneStream(tts=self, input_text=text, conn_options=conn_options)


class _ToneStream(tts.ChunkedStream):
    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(
            request_id=utils.shortuuid(),
            sample_rate=TTS_RATE,
            num_channels=1,
            mime_type="audio/pcm",
        )
        output_emitter.push(tone(min(3.0, len(self._input_text) * SECONDS_PER_CHAR), TTS_RATE))
        output_emitter.flush()


class BrokenLLM(llm.LLM):
    """An LLM whose provider answers every request with a non-retryable 500."""

    def chat(self, *, chat_ctx: llm.ChatContext, **kwargs: Any) -> llm.LLMStream:
        options = kwargs.get("conn_options", DEFAULT_API_CONNECT_OPTIONS)
        return _BrokenStream(self, chat_ctx=chat_ctx, tools=[], conn_options=options)


class _BrokenStream(llm.LLMStream):
    async def _run(self) -> None:
        raise APIStatusError("the model is overloaded", status_code=500, retryable=False)


class ScriptOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lines: list[str] = []


class FakeVoicePlugin:
    """Registers ``scripted`` STT, ``tone`` TTS and the ``broken`` LLM."""

    @hookimpl
    def register_providers(self, register: RegisterProvider) -> None:
        register(kind="stt", name="scripted", factory=_make_stt, options=ScriptOptions)
        register(kind="tts", name="tone", factory=_make_tts)
        register(kind="llm", name="broken", factory=lambda options, call: BrokenLLM())


def _make_stt(options: ScriptOptions, call: Any) -> ScriptedSTT:
    return ScriptedSTT(options.lines)


def _make_tts(options: Any, call: Any) -> ToneTTS:
    return ToneTTS()
