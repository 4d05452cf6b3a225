"""The livekit-agents side of the ``piper`` provider: a process-wide cache of loaded voices
and a non-streaming ``tts.TTS`` (livekit feeds it sentence by sentence)."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, tts
from piper import PiperVoice, SynthesisConfig

from plugins.tts.offline import Emit, ThreadedChunkedStream
from plugins.tts.piper import PiperOptions, voice_config_path

logger = logging.getLogger(__name__)

_voices_lock = threading.Lock()
_voices: dict[Path, PiperVoice] = {}


def shared_voice(model: Path) -> PiperVoice:
    """The loaded voice for this model file; loaded once per process (about 2 s), then
    shared: onnxruntime sessions may run from several threads at once."""
    with _voices_lock:
        voice = _voices.get(model)
        if voice is None:
            voice = _voices[model] = PiperVoice.load(model, config_path=voice_config_path(model))
        return voice


class PiperTTS(tts.TTS):
    def __init__(
        self, options: PiperOptions, *, model: Path, sample_rate: int, speaker: int | None
    ) -> None:
        super().__init__(
            capabilities=tts.TTSCapabilities(streaming=False),
            sample_rate=sample_rate,
            num_channels=1,
        )
        self.options = options
        self.voice_model = model
        self._speaker = speaker
        self._warming: asyncio.Future[PiperVoice] | None = None

    @property
    def model(self) -> str:
        return self.voice_model.stem

    @property
    def provider(self) -> str:
        return "piper"

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> tts.ChunkedStream:
        return ThreadedChunkedStream(
            tts=self,
            input_text=text,
            conn_options=conn_options,
            synthesize=self._synthesize_blocking,
        )

    def synthesis_config(self, voice: PiperVoice) -> SynthesisConfig:
        quiet = 0.0 if self.options.deterministic else None
        return SynthesisConfig(
            speaker_id=self._speaker,
            length_scale=voice.config.length_scale / self.options.speed,
            noise_scale=quiet,
            noise_w_scale=quiet,
            volume=self.options.volume,
        )

    def _synthesize_blocking(self, text: str, emit: Emit) -> None:
        """One chunk per sentence, handed over as soon as it is made (worker thread)."""
        voice = shared_voice(self.voice_model)
        for chunk in voice.synthesize(text, syn_config=self.synthesis_config(voice)):
            if chunk.sample_rate != self.sample_rate:  # the config said otherwise
                raise ValueError(f"voice gave {chunk.sample_rate} Hz, not {self.sample_rate}")
            if not emit(chunk.audio_int16_bytes):
                return

    def warm(self) -> None:
        """Load the voice and speak one word, in this thread: the first call's greeting
        then pays for neither (`runtime.warmup`)."""
        self._synthesize_blocking("Hello.", lambda chunk: True)

    def prewarm(self) -> None:
        """Load the voice in the background as the session starts."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._warming is None:
            self._warming = loop.run_in_executor(None, shared_voice, self.voice_model)
            self._warming.add_done_callback(_log_failure)

    async def aclose(self) -> None:
        if self._warming is not None:
            await asyncio.gather(self._warming, return_exceptions=True)


def _log_failure(future: asyncio.Future[PiperVoice]) -> None:
    if not future.cancelled() and (error := future.exception()) is not None:
        logger.error("loading the piper voice failed: %s", error)
