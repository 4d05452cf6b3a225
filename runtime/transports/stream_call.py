"""One call over a media-stream WebSocket, whatever the protocol (see `wire.py`).

The socket's audio goes into a livekit-agents ``AgentSession`` through ``CallerAudioInput``
and comes back through ``PacedAudioOutput``: the same pipeline as in a LiveKit room. The
call ends when the caller leaves (``stop`` or the socket closes: ``customer``) or the bot
ends it (its goodbye is played out first, then the socket is closed: the line is down).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import WSMsgType, web

from runtime.call import CallContext
from runtime.call_checkpoints import Checkpoints, Save
from runtime.flow.graph import ending_tool_names, graph_json
from runtime.keypad import Keypad
from runtime.lifecycle import apology_possible
from runtime.record import CallEvent, CallRecord, DisconnectedBy, TranscriptEntry
from runtime.resolve import CallPlan
from runtime.transports.line_control import StreamControl
from runtime.transports.media import (
    CallerAudioInput,
    MediaSink,
    PacedAudioOutput,
    ignore_send_errors,
    speak_without_session,
)
from runtime.transports.recorder import StereoRecorder
from runtime.transports.wire import (
    Dtmf,
    Malformed,
    Mark,
    Media,
    Outbound,
    Start,
    Stop,
    Typed,
    Wire,
)

START_TIMEOUT = 10.0  # a client that never says `start` is not kept waiting for
MAX_MALFORMED = 50  # after this many unusable messages the call ends as `error`
REPORTED_MALFORMED = 5  # the timeline keeps the first few, then counts
APOLOGY_LIMIT = 15.0  # seconds: a TTS that hangs must not keep a failed call's line open


class StartFailed(Exception):
    """The socket closed or misbehaved before a usable ``start``."""


async def await_start(ws: web.WebSocketResponse, wire: Wire) -> Start:
    """Read until the protocol's ``start``; media before it is dropped, garbage reported."""

    async def read() -> Start:
        dropped = 0
        async for message in ws:
            if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break
            event = wire.decode(message.data)
            if isinstance(event, Start):
                return event
            if isinstance(event, Stop):
                raise StartFailed("the client stopped before `start`")
            if isinstance(event, Malformed):
                await send_error(ws, wire, event.reason)
            elif isinstance(event, Media):
                dropped += 1  # no call yet to give it to
        suffix = f" ({dropped} media messages before it were dropped)" if dropped else ""
        raise StartFailed("the socket closed before `start`" + suffix)

    try:
        return await asyncio.wait_for(read(), START_TIMEOUT)
    except asyncio.TimeoutError:
        raise StartFailed(f"no `start` message within {START_TIMEOUT:g} s") from None


async def send_error(ws: web.WebSocketResponse, wire: Wire, reason: str) -> None:
    notice = wire.notice("error", {"message": reason})
    if notice is not None and not ws.closed:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await _send(ws, notice)


async def _send(ws: web.WebSocketResponse, message: Outbound) -> None:
    if isinstance(message, bytes):
        await ws.send_bytes(message)
    else:
        await ws.send_str(message)


def flow_notice(plan: CallPlan, call: CallContext) -> dict[str, Any]:
    """What a client drawing the flow needs at the start: the graph of this bot version
    (worked out once per version), the step the call is in and what is captured so far.
    `step_entered` and `captured` events on the timeline follow it live."""
    bot = plan.bot
    graph = bot.derived(
        "flow_graph",
        lambda b: graph_json(b.flow, name=b.id, ending=ending_tool_names(b.bot)),
    )
    return {"graph": graph, "step": call.step, "captured": dict(call.captured)}


class StreamCall(MediaSink):
    def __init__(
        self,
        ws: web.WebSocketResponse,
        wire: Wire,
        plan: CallPlan,
        start: Start,
        *,
        record_audio: bool,
        observers: Sequence[Callable[[str, dict[str, Any]], None]] = (),
        checkpoint: Save | None = None,
    ) -> None:
        """``checkpoint`` stores the call's progress durably while it runs (see
        `runtime.call_checkpoints`)."""
        self.ws = ws
        self.checkpoint = checkpoint
        self.wire = wire
        self.plan = plan
        self.start_event = start
        self.recorder = StereoRecorder(start.sample_rate) if record_audio else None
        self.malformed = 0
        self.observers = list(observers)
        self.output: PacedAudioOutput | None = None
        self._speech_ended_at: float | None = None
        self.call: CallContext | None = None
        self.session: Any = None  # the call's AgentSession, once it runs

    # -- MediaSink: what the paced output sends ------------------------------------------

    async def send_audio(self, pcm16: bytes) -> None:
        message = self.wire.audio(pcm16)
        if message is not None:
            await _send(self.ws, message)

    async def send_mark(self, name: str) -> None:
        pending = self.wire.flush_audio()
        if pending is not None:
            await _send(self.ws, pending)
        mark = self.wire.mark(name)
        if mark is not None:
            await _send(self.ws, mark)

    async def send_clear(self) -> None:
        if self.recorder is not None:
            self.recorder.truncate_bot()
        clear = self.wire.clear()
        if clear is not None and not self.ws.closed:
            await _send(self.ws, clear)

    # -- the call ----------------------------------------------------------------------

    async def run(self) -> CallRecord:
        from runtime.session import build_call_session  # livekit: only when a call runs

        rate = self.start_event.sample_rate
        call_session = build_call_session(self.plan, text_only=False)
        call = self.call = call_session.call
        call.control = StreamControl(self.wire.transport, self.start_event, self)
        call.observers.append(self.notify)
        call.observers.extend(self.observers)
        audio_in = CallerAudioInput(rate)
        self.output = PacedAudioOutput(
            self,
            rate,
            echoes_marks=self.start_event.echoes_marks,
            tap=self.recorder.bot if self.recorder else None,
            on_segment_start=self._bot_started_speaking,
        )
        session = self.session = call_session.session
        keypad = Keypad(call, session)  # the caller's keys as turns
        session.input.audio = audio_in
        session.output.audio = self.output
        session.on("user_state_changed", self._user_state)
        self.notify(
            "started",
            {
                "session_id": call.session_id,
                "bot": call.bot_id,
                "bot_version": call.bot_version,
                "sample_rate": rate,
            },
        )
        if self.plan.bot.flow is not None:
            self.notify("flow", flow_notice(self.plan, call))
        call.add_event(
            "stream_started",
            transport=self.wire.transport,
            stream_id=self.start_event.stream_id,
            call_id=self.start_event.call_id,
            sample_rate=rate,
        )
        disconnected_by, cause = DisconnectedBy.CUSTOMER, None
        checkpoints = Checkpoints(call, self.checkpoint) if self.checkpoint else None
        if checkpoints is not None:
            checkpoints.start()
        reader = asyncio.create_task(self._read(audio_in, call_session.call, keypad))
        try:
            await call_session.start()
            bot_done = asyncio.create_task(call_session.finished.wait())
            done, _ = await asyncio.wait({reader, bot_done}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done:
                bot_done.cancel()
                disconnected_by, cause = reader.result()
            else:
                reader.cancel()
        except Exception as exc:  # the pipeline failed: end the call, keep the record
            disconnected_by, cause = DisconnectedBy.ERROR, f"{type(exc).__name__}: {exc}"
            reader.cancel()
        audio_in.close()
        keypad.close()
        if checkpoints is not None:
            await checkpoints.aclose()
        record = await call_session.close(disconnected_by, cause=cause)
        if record.disconnected_by == DisconnectedBy.ERROR.value and not self.ws.closed:
            await self._apologise(call_session.providers.get("tts"), call, record)
            # the call lasted until the apology was said, not until the error
            record.ended_at = dt.datetime.now(dt.timezone.utc)
            record.duration = round((record.ended_at - record.started_at).total_seconds(), 3)
        await self.output.aclose()
        record.events.append(
            CallEvent(type="audio_out", at=call.elapsed(), data=self.output.stats.summary())
        )
        await self._hang_up(record)
        return record

    async def _read(
        self, audio_in: CallerAudioInput, call: CallContext, keypad: Keypad
    ) -> tuple[DisconnectedBy, str]:
        """Feed the caller's audio until they leave; returns why the line closed."""
        assert self.output is not None
        async for message in self.ws:
            if message.type == WSMsgType.ERROR:  # e.g. a frame over the size limit (1009)
                return DisconnectedBy.ERROR, (
                    "the server refused a frame and closed the stream: "
                    f"{self.ws.exception() or 'a broken frame'}"
                )
            if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break
            event = self.wire.decode(message.data)
            if isinstance(event, Start):
                event = Malformed("a second `start` on a running call: ignored")
            if isinstance(event, Media):
                audio_in.push(event.pcm16)
                if self.recorder is not None:
                    self.recorder.caller(event.pcm16)
            elif isinstance(event, Mark):
                self.output.mark_played(event.name)
            elif isinstance(event, Dtmf):
                keypad.press(event.digit)  # the timeline's `dtmf` event, then a turn
            elif isinstance(event, Typed):
                self._typed(event.text)
            elif isinstance(event, Stop):
                return DisconnectedBy.CUSTOMER, event.reason
            elif isinstance(event, Malformed):
                self.malformed += 1
                if self.malformed <= REPORTED_MALFORMED:
                    call.add_event("transport_error", error=event.reason)
                await send_error(self.ws, self.wire, event.reason)
                if self.malformed >= MAX_MALFORMED:
                    return DisconnectedBy.ERROR, (
                        f"{self.malformed} malformed messages from the client; last: {event.reason}"
                    )
        code = self.ws.close_code
        return DisconnectedBy.CUSTOMER, f"the socket closed (code {code})"

    def _typed(self, text: str) -> None:
        """A typed line is a caller turn like a spoken one: it interrupts the bot (as
        speaking would) and the bot answers it."""
        if self.session is None:
            return
        with contextlib.suppress(RuntimeError):  # the session is closing
            self.session.interrupt()
            self.session.generate_reply(user_input=text)

    async def _apologise(self, tts: Any, call: CallContext, record: CallRecord) -> None:
        """The caller hears a short apology rather than a silent hang-up, when the voice
        still works (the session is closed by now, so it goes straight to the line)."""
        apology = self.plan.lines.apology
        if tts is None or not apology or not apology_possible(call) or self.output is None:
            return
        try:
            await asyncio.wait_for(speak_without_session(tts, self.output, apology), APOLOGY_LIMIT)
        except Exception as exc:  # the apology is a courtesy; the hang-up must happen
            record.events.append(
                CallEvent(type="apology_failed", at=call.elapsed(), data={"error": repr(exc)})
            )
        else:
            record.transcript.append(TranscriptEntry(role="bot", text=apology, at=call.elapsed()))

    async def _hang_up(self, record: CallRecord) -> None:
        """The line goes down: tell clients that listen why, then close the socket."""
        if self.ws.closed:
            return
        self.notify(
            "ended",
            {
                "session_id": record.session_id,
                "disconnected_by": record.disconnected_by,
                "cause": record.cause,
            },
        )
        await asyncio.sleep(0)  # let the notice leave before the close frame
        reason = f"call ended: {record.disconnected_by}".encode()[:120]
        code = 1011 if record.disconnected_by == DisconnectedBy.ERROR.value else 1000
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.close(code=code, message=reason)

    # -- live activity -----------------------------------------------------------------

    def notify(self, kind: str, data: dict[str, Any]) -> None:
        message = self.wire.notice(kind, data)
        if message is None or self.ws.closed:
            return
        task = asyncio.ensure_future(_send(self.ws, message))
        task.add_done_callback(ignore_send_errors)

    def _user_state(self, event: Any) -> None:
        if event.old_state == "speaking" and event.new_state != "speaking":
            self._speech_ended_at = time.monotonic()

    def _bot_started_speaking(self) -> None:
        """Voice-to-voice latency as the server sees it: VAD end of speech → first frame."""
        if self._speech_ended_at is None or self.output is None:
            return
        latency = time.monotonic() - self._speech_ended_at
        self._speech_ended_at = None
        if self.call is not None:
            self.call.add_event("bot_audio", latency_ms=round(latency * 1000, 1))
