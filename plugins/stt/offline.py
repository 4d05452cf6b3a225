"""What the offline recognizers share: line audio to 16 kHz mono, a blocking engine driven
off the event loop, and a VAD for sessions that have none.

Imported by the providers' factories only (it imports livekit and numpy).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from abc import abstractmethod
from typing import NamedTuple

import numpy as np
from livekit import rtc
from livekit.agents import stt, utils
from livekit.agents.language import LanguageCode
from livekit.agents.types import NOT_GIVEN, APIConnectOptions, NotGivenOr

from runtime import CallContext

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # what both PocketSphinx's and Whisper's models are trained on


def to_mono_16k(buffer: utils.AudioBuffer) -> np.ndarray:
    """The buffer's audio as 16 kHz mono int16 samples, whatever its rate and channels."""
    frames = buffer if isinstance(buffer, list) else [buffer]
    if not frames:
        return np.zeros(0, dtype=np.int16)
    frame = rtc.combine_audio_frames(frames)
    pcm = np.frombuffer(frame.data, dtype=np.int16)
    if frame.num_channels > 1:
        pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
    if frame.sample_rate == SAMPLE_RATE or pcm.size == 0:
        return pcm
    resampler = rtc.AudioResampler(
        frame.sample_rate, SAMPLE_RATE, num_channels=1, quality=rtc.AudioResamplerQuality.HIGH
    )
    out = [*resampler.push(bytearray(pcm.tobytes())), *resampler.flush()]
    if not out:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in out])


class Transcript(NamedTuple):
    text: str
    confidence: float = 0.0  # in [0, 1]
    language: str | None = None  # when the engine detected it


class Expectation(NamedTuple):
    """What the recognizer is told before an utterance: a text to read as what came
    before (Whisper's prompt) and the phrases the bot expects (`CallContext.speech_context`)."""

    text: str
    phrases: tuple[str, ...] = ()


class OfflineSTT(stt.STT):
    """A non-streaming STT over a blocking, stateful engine.

    The engine loads lazily in a worker thread (``prewarm`` starts it as the session
    starts), recognitions run in worker threads, and one lock serializes them, so two
    overlapping recognitions are safe and the event loop never waits on the engine.
    """

    def __init__(self, *, language: str) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self._language = language
        self._lock = threading.Lock()
        self._loaded = False
        self._warming: asyncio.Future[None] | None = None

    # -- what a recognizer implements (both called with the lock held) ------------------

    @abstractmethod
    def _load(self) -> None:
        """Load the engine (may take a second)."""

    @abstractmethod
    def _transcribe(self, pcm: np.ndarray, expected: Expectation | None) -> Transcript:
        """16 kHz mono int16 samples -> what was said. ``expected``: what `_expect` gave,
        for engines that can be told what to expect."""

    def _expect(self) -> Expectation | None:
        """Worked out on the event loop before each recognition (it may read the call's
        live state, which the recognition thread must not): none by default."""
        return None

    # -- plumbing ---------------------------------------------------------------------

    def load(self) -> None:
        """Load the engine now, in this thread (idempotent)."""
        with self._lock:
            self._ensure_loaded()

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._load()
            self._loaded = True

    def _recognize_blocking(
        self, pcm: np.ndarray, expected: Expectation | None = None
    ) -> Transcript:
        with self._lock:
            self._ensure_loaded()
            return self._transcribe(pcm, expected)

    def warm(self) -> None:
        """Load the engine and run it once on a moment of silence, in this thread: what
        a server does before its first call (`runtime.warmup`)."""
        self._recognize_blocking(np.zeros(1600, dtype=np.int16))

    def prewarm(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._warming is None and not self._loaded:
            self._warming = loop.run_in_executor(None, self.load)
            self._warming.add_done_callback(_log_failure)

    async def _recognize_impl(
        self,
        buffer: utils.AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        pcm = to_mono_16k(buffer)
        transcript = await asyncio.to_thread(self._recognize_blocking, pcm, self._expect())
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=uuid.uuid4().hex[:12],
            alternatives=[
                stt.SpeechData(
                    language=LanguageCode(transcript.language or self._language),
                    text=transcript.text,
                    confidence=transcript.confidence,
                    end_time=pcm.size / SAMPLE_RATE,
                )
            ],
        )

    async def aclose(self) -> None:
        if self._warming is not None:
            # a load in progress finishes (threads cannot be stopped); its error is logged
            await asyncio.gather(self._warming, return_exceptions=True)


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and (error := future.exception()) is not None:
        logger.error("loading the speech recognizer failed: %s", error)


def for_session(recognizer: stt.STT, call: CallContext) -> stt.STT:
    """The STT a call's session gets. livekit runs a non-streaming STT through the
    session's VAD (``[vad]``, or a per-call override); for a session without one, where
    livekit would refuse it, the recognizer comes wrapped in a ``StreamAdapter`` over the
    shared Silero VAD with its default options."""
    if "vad" in call.provider_kinds:  # the bot's [vad], an override, or the offline default
        return recognizer
    from plugins.vad.silero_vad import shared_vad

    return stt.StreamAdapter(stt=recognizer, vad=shared_vad())
