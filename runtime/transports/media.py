"""The audio I/O that connects a socket to a livekit-agents ``AgentSession``.

``CallerAudioInput`` is what the session hears: PCM the transport decoded, as 20 ms
``rtc.AudioFrame``s. ``PacedAudioOutput`` is what the session says: livekit resamples the
TTS audio to the output's ``sample_rate`` (the line's rate), and this class cuts it into
20 ms frames and sends them in real time, a little ahead of playout, so that a barge-in
(``clear_buffer``) stops the caller hearing the bot within ``LEAD`` seconds and outbound
jitter stays measurable. Playout is confirmed by the far end echoing a mark after each
segment (Twilio, Exotel, the widget); without echoes it is the clock that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from livekit import rtc
from livekit.agents.utils.audio import AudioByteStream
from livekit.agents.voice import io

FRAME_SECONDS = 0.02  # bot audio leaves in 20 ms frames, as telephony expects
INPUT_FRAME_SECONDS = 0.04
LEAD = 0.1  # how far ahead of playout frames are sent: the far end's jitter buffer
SEND_SLACK = 0.02  # a frame due this soon goes now: one wake-up sends two frames, not one
MARK_GRACE = 2.0  # a far end that never echoes a mark is not waited on forever
MAX_QUEUED_FRAMES = 3000  # a minute of audio: a caller that stops reading is not buffered


class CallerAudioInput(io.AudioInput):
    """The caller's audio, pushed by the transport, read by the session.

    Frames are 40 ms, not the wire's 20: every frame costs the pipeline (VAD, STT buffer,
    several channels) a fixed amount of work, and 20 ms more of granularity is below what
    endpointing can notice, so this halves per-call CPU for free.
    """

    def __init__(self, sample_rate: int) -> None:
        super().__init__(label="dialplan.caller")
        self.sample_rate = sample_rate
        self._frames: asyncio.Queue[rtc.AudioFrame | None] = asyncio.Queue()
        self._frame_bytes = int(sample_rate * INPUT_FRAME_SECONDS) * 2
        self._pending = bytearray()
        self._closed = False

    def push(self, pcm16: bytes) -> None:
        if self._closed:
            return
        self._pending += pcm16
        size = self._frame_bytes
        while len(self._pending) >= size:
            chunk = bytes(self._pending[:size])
            del self._pending[:size]
            frame = rtc.AudioFrame(chunk, self.sample_rate, 1, size // 2)
            self._frames.put_nowait(frame)

    def close(self) -> None:
        """The caller is gone: the session's audio stream ends."""
        if not self._closed:
            self._closed = True
            self._frames.put_nowait(None)

    async def __anext__(self) -> rtc.AudioFrame:
        frame = await self._frames.get()
        if frame is None:
            self._frames.put_nowait(None)  # every later read ends too
            raise StopAsyncIteration
        return frame


@dataclass
class OutboundStats:
    """Send-time lateness of every bot frame against its schedule (the jitter figure)."""

    frames: int = 0
    lateness_ms: deque[float] = field(default_factory=lambda: deque(maxlen=5000))

    def summary(self) -> dict[str, float | int]:
        """Frames sent and how late they left against the real-time schedule (ms)."""
        late = sorted(self.lateness_ms)
        if not late:
            return {"frames": self.frames}
        return {
            "frames": self.frames,
            "lateness_p50_ms": round(late[len(late) // 2], 2),
            "lateness_p99_ms": round(late[min(len(late) - 1, int(len(late) * 0.99))], 2),
            "lateness_max_ms": round(late[-1], 2),
        }


class MediaSink:
    """What the output needs from a transport; every method may be a no-op."""

    async def send_audio(self, pcm16: bytes) -> None:
        raise NotImplementedError

    async def send_mark(self, name: str) -> None:
        return None

    async def send_clear(self) -> None:
        return None


BotAudioTap = Callable[[bytes, float], None]  # (pcm16, playout time) for the recorder


class PacedAudioOutput(io.AudioOutput):
    """Bot audio to the socket, paced in real time, with playout tracked per segment."""

    def __init__(
        self,
        sink: MediaSink,
        sample_rate: int,
        *,
        echoes_marks: bool,
        tap: BotAudioTap | None = None,
        on_segment_start: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(
            label="dialplan.socket",
            capabilities=io.AudioOutputCapabilities(pause=True),
            sample_rate=sample_rate,
        )
        self.stats = OutboundStats()
        self._sink = sink
        self._rate = sample_rate
        self._echoes_marks = echoes_marks
        self._tap = tap
        self._on_segment_start = on_segment_start
        self._chunker = AudioByteStream(sample_rate, 1, samples_per_channel=sample_rate // 50)
        self._queue: asyncio.Queue[bytes | str] = asyncio.Queue(MAX_QUEUED_FRAMES)
        self._sender = asyncio.create_task(self._send_loop(), name="dialplan.paced_output")
        self._play_clock = 0.0  # monotonic time at which everything sent so far has played
        self._segment: int = 0
        self._segment_started: float | None = None
        self._segment_seconds = 0.0
        self._pending_marks: dict[str, asyncio.TimerHandle] = {}
        self._capturing = False
        self._closed = False
        self._playing = asyncio.Event()  # cleared while livekit pauses us (a false barge-in)
        self._playing.set()
        self._generation = 0  # counts clears

    # -- AudioOutput -------------------------------------------------------------------

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await super().capture_frame(frame)
        self._capturing = True
        for chunk in self._chunker.push(frame.data):
            await self._queue.put(bytes(chunk.data))

    def flush(self) -> None:
        super().flush()
        if not self._capturing:
            return  # nothing was captured since the last flush: no segment to close
        self._capturing = False
        for chunk in self._chunker.flush():
            data = bytes(chunk.data)
            padding = self._rate // 50 * 2 - len(data)  # a whole frame: Exotel needs 320 bytes
            self._queue.put_nowait(data + b"\x00" * max(padding, 0))
        self._segment += 1
        self._queue.put_nowait(f"seg-{self._segment}")

    def clear_buffer(self) -> None:
        self._generation += 1
        self._playing.set()
        self._chunker.clear()
        while not self._queue.empty():
            self._queue.get_nowait()
        self._capturing = False
        open_segments = self._pending_playback_count
        if open_segments <= 0:
            return
        now = time.monotonic()
        played = self._segment_seconds
        if self._segment_started is not None:
            played = min(self._segment_seconds, max(0.0, now - self._segment_started))
        for timer in self._pending_marks.values():
            timer.cancel()
        self._pending_marks.clear()
        self._segment_started = None
        self._segment_seconds = 0.0
        self._play_clock = now
        task = asyncio.ensure_future(self._sink.send_clear())
        task.add_done_callback(ignore_send_errors)
        for _ in range(open_segments):
            self.on_playback_finished(playback_position=played, interrupted=True)

    def pause(self) -> None:
        super().pause()
        self._playing.clear()

    def resume(self) -> None:
        super().resume()
        self._playing.set()

    # -- the far end -------------------------------------------------------------------

    def mark_played(self, name: str) -> None:
        """The far end echoed a mark: the segment it closes has been heard."""
        timer = self._pending_marks.pop(name, None)
        if timer is not None:
            timer.cancel()
            self._finish_segment()

    async def aclose(self) -> None:
        self._closed = True
        for timer in self._pending_marks.values():
            timer.cancel()
        self._pending_marks.clear()
        self._sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sender

    # -- sending -----------------------------------------------------------------------

    async def _send_loop(self) -> None:
        frame_seconds = FRAME_SECONDS
        while True:
            item = await self._queue.get()
            generation = self._generation
            if not self._playing.is_set():
                await self._playing.wait()
                if generation != self._generation:
                    continue  # cleared while paused: this frame belongs to dropped speech
            if isinstance(item, str):
                await self._end_segment(item)
                continue
            now = time.monotonic()
            if self._play_clock < now:  # the line ran dry: this frame plays right away
                self._play_clock = now
            if self._segment_started is None:
                self._segment_started = self._play_clock
                self._segment_seconds = 0.0
                self.on_playback_started(created_at=time.time())
                if self._on_segment_start is not None:
                    self._on_segment_start()
            # due: LEAD before it plays, but never before it was ready to go
            due = max(self._play_clock - LEAD, now)
            if due > now + SEND_SLACK:
                await asyncio.sleep(due - now)
                now = time.monotonic()
                if generation != self._generation:
                    continue  # cleared while this frame waited for its turn
            self.stats.frames += 1
            self.stats.lateness_ms.append(max(0.0, now - due) * 1000)
            if self._tap is not None:
                self._tap(item, self._play_clock)
            try:
                await self._sink.send_audio(item)
            except (ConnectionError, RuntimeError):
                return  # the socket is gone; the call is ending
            self._play_clock += frame_seconds
            self._segment_seconds += frame_seconds

    async def _end_segment(self, name: str) -> None:
        if self._segment_started is None:
            # nothing was sent for this segment (cleared or empty): it is over already
            self._finish_segment()
            return
        remaining = max(0.0, self._play_clock - time.monotonic())
        loop = asyncio.get_running_loop()
        if self._echoes_marks:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._sink.send_mark(name)
            delay = remaining + MARK_GRACE
        else:
            delay = remaining
        self._pending_marks[name] = loop.call_later(delay, self._mark_timeout, name)

    def _mark_timeout(self, name: str) -> None:
        if self._pending_marks.pop(name, None) is not None:
            self._finish_segment()

    def _finish_segment(self) -> None:
        played = self._segment_seconds
        self._segment_started = None
        self._segment_seconds = 0.0
        if not self._closed:
            self.on_playback_finished(playback_position=played, interrupted=False)


def ignore_send_errors(task: asyncio.Future[None]) -> None:
    """For sends nobody awaits: a failure means the socket is closing, nothing to do."""
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it


async def speak_without_session(tts: Any, output: PacedAudioOutput, text: str) -> None:
    """Say ``text`` straight through ``tts`` into ``output`` and wait until it has played:
    the last words of a call whose session has already closed (an apology after a
    provider failed). livekit resamples for the session; here it is done by hand."""
    resampler: rtc.AudioResampler | None = None
    rate = output.sample_rate or 0
    async with tts.synthesize(text) as stream:
        async for chunk in stream:
            frame: rtc.AudioFrame = chunk.frame
            if frame.sample_rate != rate:
                resampler = resampler or rtc.AudioResampler(frame.sample_rate, rate)
                for resampled in resampler.push(frame):
                    await output.capture_frame(resampled)
            else:
                await output.capture_frame(frame)
    if resampler is not None:
        for resampled in resampler.flush():
            await output.capture_frame(resampled)
    output.flush()
    await output.wait_for_playout()
