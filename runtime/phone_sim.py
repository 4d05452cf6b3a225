"""A simulated phone caller speaking Twilio Media Streams to a dialplan server.

It behaves like Twilio does for a real call: ``connected`` then ``start`` with custom
parameters, then 20 ms μ-law ``media`` messages in real time for the whole call (silence
when the caller is quiet), and it echoes each ``mark`` when its own playout of the bot's
audio reaches it, and drops buffered audio on ``clear``. The caller's lines are synthesized
speech; it waits for the bot to finish answering before saying the next one.

Used by `dialplan simulate`, `make demo`, the tests and the benchmarks.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from runtime.audio.mulaw import pcm16_to_ulaw, ulaw_to_pcm16
from runtime.call import CallOverrides

RATE = 8000
FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz
FRAME_SECONDS = 0.02
SILENCE = b"\xff" * FRAME_BYTES
WHOLE_LINE_SILENCE = 0.55  # seconds: longer than a comma's pause in synthesized speech
Synthesize = Callable[[str], Awaitable[bytes]]  # text -> 16-bit PCM at 8 kHz


@dataclass
class Turn:
    said: str
    spoke_seconds: float
    finished_speaking_at: float  # monotonic, the last frame of the line left
    first_reply_audio_at: float | None = None  # monotonic, first bot frame after that

    @property
    def reply_latency(self) -> float | None:
        """End of caller speech → first bot audio byte on the socket, as the caller sees it."""
        if self.first_reply_audio_at is None:
            return None
        return self.first_reply_audio_at - self.finished_speaking_at


@dataclass
class CallerReport:
    turns: list[Turn] = field(default_factory=list)
    bot_audio_seconds: float = 0.0
    marks_echoed: int = 0
    clears: int = 0
    close_code: int | None = None
    bot_audio: bytearray = field(default_factory=bytearray)  # 16-bit PCM, 8 kHz


class SimulatedCaller:
    def __init__(
        self,
        url: str,
        *,
        bot: str | None = None,
        variables: dict[str, str] | None = None,
        caller: str = "+15550001111",
        callee: str = "+15550002222",
        quiet_after_reply: float = 0.8,
        reply_timeout: float = 20.0,
        keep_bot_audio: bool = False,
        on_line: Callable[[str], None] | None = None,
        barge_in: float | None = None,
        call_sid: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """``call_sid`` and ``headers`` (a handshake's ``X-Twilio-Signature``) play the
        parts Twilio's own stream would have, for servers that check them."""
        self.url = url
        self.call_sid = call_sid or "CA" + uuid.uuid4().hex
        self.headers = headers or {}
        self.parameters = {"caller": caller, "callee": callee, **(variables or {})}
        if bot:
            self.parameters["bot"] = bot
        self.quiet_after_reply = quiet_after_reply
        self.reply_timeout = reply_timeout
        self.keep_bot_audio = keep_bot_audio
        self.on_line = on_line
        self.barge_in = barge_in  # speak this many seconds into the bot's audio, not after
        self.stream_sid = "MZ" + uuid.uuid4().hex
        self.report = CallerReport()
        self._outgoing: asyncio.Queue[bytes] = asyncio.Queue()
        self._playout_until = 0.0  # monotonic time our speaker finishes the bot's audio
        self._last_bot_audio = 0.0
        self._pending_marks: list[tuple[float, str]] = []
        self._current: Turn | None = None
        self._closed = asyncio.Event()

    async def call(self, lines: Sequence[str], synthesize: Synthesize) -> CallerReport:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(self.url, max_msg_size=1 << 22, headers=self.headers) as ws,
        ):
            await ws.send_str(json.dumps({"event": "connected", "protocol": "Call"}))
            await ws.send_str(json.dumps(self._start_message()))
            sender = asyncio.create_task(self._send_media(ws))
            receiver = asyncio.create_task(self._receive(ws))
            try:
                await self._wait_for_bot(first=True)
                for line in lines:
                    if self._closed.is_set():
                        break
                    pcm = await synthesize(line)
                    if self.on_line is not None:
                        self.on_line(line)
                    await self._speak(line, pcm)
                    await self._wait_for_bot()
                if not self._closed.is_set():
                    with contextlib.suppress(ConnectionError):
                        await ws.send_str(json.dumps(self._stop_message()))
                    await asyncio.wait_for(self._closed.wait(), 10)
            finally:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
                await ws.close()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(receiver, 5)
            self.report.close_code = ws.close_code
        return self.report

    # -- what Twilio would send --------------------------------------------------------

    def _start_message(self) -> dict[str, object]:
        return {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": self.stream_sid,
            "start": {
                "accountSid": "AC" + "0" * 32,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": self.parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }

    def _stop_message(self) -> dict[str, object]:
        return {"event": "stop", "streamSid": self.stream_sid, "stop": {"callSid": ""}}

    async def _send_media(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """20 ms frames on a fixed clock, speech when there is some, silence otherwise."""
        sequence, due = 2, time.monotonic()
        while not ws.closed:
            frame = SILENCE if self._outgoing.empty() else self._outgoing.get_nowait()
            message = {
                "event": "media",
                "sequenceNumber": str(sequence),
                "streamSid": self.stream_sid,
                "media": {"track": "inbound", "payload": base64.b64encode(frame).decode()},
            }
            try:
                await ws.send_str(json.dumps(message))
            except ConnectionError:
                return
            sequence += 1
            due += FRAME_SECONDS
            self._echo_due_marks(ws)
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    def _echo_due_marks(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        now = time.monotonic()
        while self._pending_marks and self._pending_marks[0][0] <= now:
            _, name = self._pending_marks.pop(0)
            self.report.marks_echoed += 1
            message = {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}}
            task = asyncio.ensure_future(ws.send_str(json.dumps(message)))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            await self._receive_until_closed(ws)
        finally:
            self._closed.set()

    async def _receive_until_closed(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            event = data.get("event")
            now = time.monotonic()
            if event == "media":
                ulaw = base64.b64decode(data["media"]["payload"])
                seconds = len(ulaw) / RATE
                self._playout_until = max(self._playout_until, now) + seconds
                self._last_bot_audio = now
                self.report.bot_audio_seconds += seconds
                if self.keep_bot_audio:
                    self.report.bot_audio.extend(ulaw_to_pcm16(ulaw))
                turn = self._current
                if turn is not None and turn.first_reply_audio_at is None:
                    turn.first_reply_audio_at = now
            elif event == "mark":
                self._pending_marks.append((max(self._playout_until, now), data["mark"]["name"]))
            elif event == "clear":
                self.report.clears += 1
                self._playout_until = now
                # Twilio echoes the marks of cleared audio at once
                self._pending_marks = [(now, name) for _, name in self._pending_marks]
        self._closed.set()

    # -- the caller's side of the conversation ----------------------------------------

    async def _speak(self, line: str, pcm16: bytes) -> None:
        ulaw = pcm16_to_ulaw(pcm16[: len(pcm16) // 2 * 2])
        frames = [ulaw[i : i + FRAME_BYTES] for i in range(0, len(ulaw), FRAME_BYTES)]
        frames[-1] = frames[-1].ljust(FRAME_BYTES, b"\xff")
        for frame in frames:
            self._outgoing.put_nowait(frame)
        while not self._outgoing.empty() and not self._closed.is_set():
            await asyncio.sleep(FRAME_SECONDS)
        turn = Turn(line, len(frames) * FRAME_SECONDS, time.monotonic())
        self.report.turns.append(turn)
        self._current = turn

    async def _wait_for_bot(self, *, first: bool = False) -> None:
        """Until the bot has answered and its audio has played out, then a short pause
        (with ``barge_in``: until the bot has been talking that long)."""
        deadline = time.monotonic() + self.reply_timeout
        started = self._last_bot_audio if not first else 0.0
        first_audio: float | None = None
        while time.monotonic() < deadline and not self._closed.is_set():
            now = time.monotonic()
            answered = self._last_bot_audio > started
            if answered and first_audio is None:
                first_audio = now
            if self.barge_in is not None and first_audio and now - first_audio >= self.barge_in:
                return
            quiet = now - max(self._playout_until, self._last_bot_audio)
            if answered and quiet >= self.quiet_after_reply:
                return
            await asyncio.sleep(0.05)


def exact_listening(lines: Sequence[str]) -> CallOverrides:
    """Per-call overrides that make pocketsphinx listen for exactly these lines (a JSGF
    grammar of them: words only, lower case), so a simulated call's transcript is exact.
    A grammar of whole lines needs whole lines: the VAD waits for a longer silence, so the
    pause at a comma ("Thanks, bye!") does not cut a line in two."""
    phrases = [" ".join(re.sub(r"[^\w' -]", " ", line).lower().split()) for line in lines]
    return CallOverrides(
        stt={"provider": "pocketsphinx", "grammar": phrases},
        vad={"provider": "silero", "min_silence_duration": WHOLE_LINE_SILENCE},
    )


def pcm_at_8k(pcm16: bytes, sample_rate: int) -> bytes:
    """Resample synthesized speech to the telephone line's 8 kHz."""
    if sample_rate == RATE:
        return pcm16
    from livekit import rtc

    resampler = rtc.AudioResampler(sample_rate, RATE, num_channels=1)
    frames = resampler.push(bytearray(pcm16)) + resampler.flush()
    return b"".join(bytes(frame.data) for frame in frames)
