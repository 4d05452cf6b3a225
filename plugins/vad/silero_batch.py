"""Silero for every call of a process in one inference per window.

livekit's Silero stream runs the ONNX model once per call per 32 ms window, each run a
thread-pool hop and a full `session.run` whose fixed cost dwarfs the model's arithmetic on
512 samples; and it resamples telephone audio up to 16 kHz first. Here:

- **one batch per window for all calls.** Each call's stream hands its window and its own
  recurrent state to the process's `SileroBatcher`, whose inference thread runs whatever
  has queued up as one batch (the model takes ``input[B, context + window]`` and
  ``state[2, B, 128]``: a batch is a stack of per-call states) and hands each call its
  probability and new state. Nothing waits for a batch to fill: while one runs, the next
  queues (group commit), so a lone call is answered at once and 100 calls cost a handful
  of runs per window.
- **telephone audio stays at 8 kHz** (Silero's own 8 kHz mode, 256-sample windows); other
  rates are resampled to 16 kHz as before.
- **plainly silent windows skip the model** (below `SILENT_DBFS`, while no speech is
  under way and the last probability was low): their probability is 0. The model state is
  left as the last real window left it — a state that has just heard near-silence — and
  the context samples are zeroed, as the silence was.

Speech starts and ends by livekit's own rule (activation threshold, deactivation
threshold 0.15 below it, `min_speech_duration`, `min_silence_duration`, prefix padding), so
a call hears the same turns; `bench/vad_agreement.py` measures that against livekit's
per-call stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import vad

from plugins.vad.silero import SileroOptions
from runtime.overload import LAG_LIMIT, register_lag_probe

log = logging.getLogger("dialplan.vad")
LAG_WARN_EVERY = 5.0  # seconds between warnings while the VAD stays behind

SILENT_DBFS = -60.0  # a telephone line's hiss is around -70 dBFS; speech is far above
_SILENT_POWER = (10 ** (SILENT_DBFS / 20)) ** 2  # mean square of float samples in [-1, 1]
CATCH_UP_WINDOWS = 3  # quiet windows the model hears late, before the first loud one
WINDOWS = {8000: (256, 32), 16000: (512, 64)}  # samples per window, context samples
STATE_SHAPE = (2, 128)


@dataclass
class _Request:
    rate: int
    audio: np.ndarray  # context + window, float32
    state: np.ndarray  # (2, 128)
    future: asyncio.Future[tuple[float, np.ndarray]]
    loop: asyncio.AbstractEventLoop
    queued: float = field(default_factory=time.monotonic)


@dataclass
class BatchStats:
    runs: int = 0
    windows: int = 0
    largest: int = 0
    busy_seconds: float = 0.0
    lag_seconds: float = 0.0  # how long the latest window waited before its run began

    @property
    def mean_batch(self) -> float:
        return self.windows / self.runs if self.runs else 0.0


class SileroBatcher:
    """The process's Silero inference thread (one per process, shared by all calls)."""

    _instance: SileroBatcher | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        from livekit.plugins.silero import onnx_model

        self._session = onnx_model.new_inference_session(force_cpu=True)
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self.stats = BatchStats()
        self._lag = 0.0  # how long the oldest window of the latest batch waited
        self._lag_at = 0.0
        self._warned_at = -LAG_WARN_EVERY
        self._thread = threading.Thread(target=self._run, name="silero-batch", daemon=True)
        self._thread.start()
        register_lag_probe("the VAD", self.lag)

    def lag(self) -> float:
        """Seconds the VAD is behind real time: how long windows wait for the model (0 once
        nothing has waited for a second: an idle batcher is not behind)."""
        return self._lag if time.monotonic() - self._lag_at < 1.0 else 0.0

    @classmethod
    def shared(cls) -> SileroBatcher:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def infer(self, rate: int, audio: np.ndarray, state: np.ndarray) -> asyncio.Future[Any]:
        """The speech probability of one window and the state after it (a future)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[float, np.ndarray]] = loop.create_future()
        self._queue.put(_Request(rate, audio, state, future, loop))
        return future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            with contextlib.suppress(queue.Empty):
                while True:
                    more = self._queue.get_nowait()
                    if more is None:
                        self._queue.put(None)
                        break
                    batch.append(more)
            self._measure_lag(batch)
            for rate in {request.rate for request in batch}:
                self._infer([r for r in batch if r.rate == rate], rate)

    def _measure_lag(self, batch: list[_Request]) -> None:
        now = time.monotonic()
        self._lag, self._lag_at = now - min(request.queued for request in batch), now
        self.stats.lag_seconds = self._lag
        if self._lag > LAG_LIMIT and now - self._warned_at >= LAG_WARN_EVERY:
            self._warned_at = now
            log.warning(
                "the VAD is %.0f ms behind real time (%d windows waiting): this process "
                "takes no new calls until it catches up",
                self._lag * 1000,
                len(batch),
            )

    def _infer(self, batch: list[_Request], rate: int) -> None:
        started = time.perf_counter()
        try:
            audio = np.stack([request.audio for request in batch])
            state = np.stack([request.state for request in batch], axis=1)
            probabilities, states = self._session.run(
                None, {"input": audio, "state": state, "sr": np.array(rate, dtype=np.int64)}
            )
        except Exception as exc:  # every waiting call learns it; the thread goes on
            for request in batch:
                request.loop.call_soon_threadsafe(_fail, request.future, exc)
            return
        for index, request in enumerate(batch):
            result = (float(probabilities[index, 0]), states[:, index, :].copy())
            request.loop.call_soon_threadsafe(_settle, request.future, result)
        stats = self.stats
        stats.runs += 1
        stats.windows += len(batch)
        stats.largest = max(stats.largest, len(batch))
        stats.busy_seconds += time.perf_counter() - started


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class BatchedSileroVAD(vad.VAD):
    def __init__(
        self,
        options: SileroOptions,
        batcher: SileroBatcher | None = None,
        *,
        telephone_at_8k: bool = True,
    ) -> None:
        super().__init__(capabilities=vad.VADCapabilities(update_interval=0.032))
        self.options = options
        self.batcher = batcher or SileroBatcher.shared()
        # False: 8 kHz audio is resampled to 16 kHz first, as livekit's stream does
        self.telephone_at_8k = telephone_at_8k

    @property
    def model(self) -> str:
        return "silero"

    @property
    def provider(self) -> str:
        return "dialplan (batched)"

    @property
    def min_silence_duration(self) -> float:
        return self.options.min_silence_duration

    def stream(self) -> vad.VADStream:
        return BatchedSileroStream(self)


@dataclass
class _Decision:
    """livekit's speech rule, window by window."""

    options: SileroOptions
    speaking: bool = False
    speech: float = 0.0  # seconds over the threshold in a row
    silence: float = 0.0
    published_speech: float = 0.0

    @property
    def deactivation(self) -> float:
        return max(self.options.activation_threshold - 0.15, 0.01)

    def step(self, probability: float, seconds: float) -> str | None:
        """ "start", "end" or None for one window."""
        if probability >= self.options.activation_threshold or (
            self.speaking and probability > self.deactivation
        ):
            self.speech += seconds
            self.silence = 0.0
            if self.speaking:
                self.published_speech += seconds
            elif self.speech >= self.options.min_speech_duration:
                self.speaking = True
                self.published_speech = self.speech
                return "start"
            return None
        self.silence += seconds
        self.speech = 0.0
        if self.speaking and self.silence >= self.options.min_silence_duration:
            self.speaking = False
            return "end"
        return None


@dataclass
class _Audio:
    """The call's audio since the utterance began (or the prefix padding before it)."""

    rate: int
    padding: float
    frames: deque[rtc.AudioFrame] = field(default_factory=deque)
    seconds: float = 0.0

    def add(self, frame: rtc.AudioFrame, speaking: bool) -> None:
        self.frames.append(frame)
        self.seconds += frame.duration
        if not speaking:
            while self.frames and self.seconds - self.frames[0].duration >= self.padding:
                self.seconds -= self.frames.popleft().duration

    def take(self) -> rtc.AudioFrame:
        frame = rtc.combine_audio_frames(list(self.frames)) if self.frames else _empty(self.rate)
        self.frames, self.seconds = deque(), 0.0
        return frame


def _empty(rate: int) -> rtc.AudioFrame:
    return rtc.AudioFrame(b"", rate, 1, 0)


class BatchedSileroStream(vad.VADStream):
    def __init__(self, detector: BatchedSileroVAD) -> None:
        super().__init__(detector)
        self._detector = detector

    async def _main_task(self) -> None:
        options = self._detector.options
        batcher = self._detector.batcher
        decision = _Decision(options)
        rate = 0
        model_rate = 0
        window = context_size = 0
        resampler: rtc.AudioResampler | None = None
        pending = np.zeros(0, dtype=np.float32)  # model-rate samples not yet in a window
        context = np.zeros(0, dtype=np.float32)
        state = np.zeros(STATE_SHAPE, dtype=np.float32)
        audio: _Audio | None = None
        last_probability = 0.0
        skipped: deque[np.ndarray] = deque(maxlen=CATCH_UP_WINDOWS)
        samples = 0  # model-rate samples judged so far
        async for item in self._input_ch:
            if not isinstance(item, rtc.AudioFrame):  # a flush: a fresh segment starts
                decision = _Decision(options)
                if audio is not None:
                    audio.take()
                continue
            if not rate:
                rate = item.sample_rate
                native = rate == 16000 or (rate == 8000 and self._detector.telephone_at_8k)
                model_rate = rate if native else 16000
                window, context_size = WINDOWS[model_rate]
                context = np.zeros(context_size, dtype=np.float32)
                if model_rate != rate:
                    resampler = rtc.AudioResampler(rate, model_rate)
                audio = _Audio(rate, options.prefix_padding_duration)
            assert audio is not None
            audio.add(item, decision.speaking)
            frames = resampler.push(item) if resampler is not None else [item]
            for frame in frames:
                data = np.frombuffer(frame.data, dtype=np.int16).astype(np.float32) / 32768.0
                pending = np.concatenate([pending, data])
            while len(pending) >= window:
                chunk, pending = pending[:window], pending[window:]
                started = time.perf_counter()
                quiet = float(chunk @ chunk) / window < _SILENT_POWER
                if quiet and not decision.speaking and last_probability < decision.deactivation:
                    probability = 0.0
                    skipped.append(chunk)
                else:
                    # the model hears the last quiet windows it skipped first, so its state
                    # and context are what running on every window would have left
                    for earlier in [*skipped, chunk]:
                        model_input = np.concatenate([context, earlier])
                        probability, state = await batcher.infer(model_rate, model_input, state)
                        context = earlier[-context_size:]
                    skipped.clear()
                last_probability = probability
                seconds = window / model_rate
                samples += window
                change = decision.step(probability, seconds)
                timestamp = samples / model_rate
                self._event_ch.send_nowait(
                    vad.VADEvent(
                        type=vad.VADEventType.INFERENCE_DONE,
                        samples_index=samples,
                        timestamp=timestamp,
                        speech_duration=decision.published_speech,
                        silence_duration=decision.silence,
                        probability=probability,
                        inference_duration=time.perf_counter() - started,
                        frames=[item],
                        speaking=decision.speaking,
                        raw_accumulated_silence=decision.silence,
                        raw_accumulated_speech=decision.speech,
                    )
                )
                if change is None:
                    continue
                self._event_ch.send_nowait(
                    vad.VADEvent(
                        type=(
                            vad.VADEventType.START_OF_SPEECH
                            if change == "start"
                            else vad.VADEventType.END_OF_SPEECH
                        ),
                        samples_index=samples,
                        timestamp=timestamp,
                        speech_duration=decision.published_speech,
                        silence_duration=decision.silence,
                        frames=[audio.take()] if change == "end" else [_peek(audio)],
                        speaking=decision.speaking,
                    )
                )
                if change == "end":
                    # the next utterance counts from zero: a duration left standing would
                    # read as the caller talking over the bot (livekit interrupts on it)
                    decision.published_speech = 0.0


def _peek(audio: _Audio) -> rtc.AudioFrame:
    """The utterance so far (with its prefix padding), still being gathered."""
    return rtc.combine_audio_frames(list(audio.frames)) if audio.frames else _empty(audio.rate)
