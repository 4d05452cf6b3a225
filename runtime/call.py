"""One call: what was asked for (`CallRequest`) and what is happening (`CallContext`).

The same request shape arrives from the terminal, a WebSocket transport and LiveKit job
metadata: ``{"bot": ..., "variables": {...}, "overrides": {...}}``.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from runtime.call_control import CallControl, SimulatedControl
from runtime.record import CallEvent, CallRecord, DisconnectedBy, TranscriptEntry

if TYPE_CHECKING:
    import asyncio

    from runtime.compiler import CompiledBot
    from runtime.speech_vocabulary import SpeechContext


class PromptOverrides(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    system: str | None = None
    context: str | None = None
    greeting: str | None = None
    greeting_mode: Literal["speak", "generate", "wait"] | None = None


class CallOverrides(BaseModel):
    """Per-call changes. A provider table with a different ``provider`` replaces the bot's
    table; with the same (or no) ``provider`` its keys are merged into the bot's options.
    Frozen, so every request without overrides shares one empty instance."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    stt: dict[str, Any] | None = None
    llm: dict[str, Any] | None = None
    tts: dict[str, Any] | None = None
    vad: dict[str, Any] | None = None
    prompt: PromptOverrides | None = None
    ignore_schedule: bool = Field(
        False, description="answer even outside the bot's opening hours (tests, demos, staff)"
    )


NO_OVERRIDES = CallOverrides()


def new_session_id() -> str:
    """128 random bits in hex, like ``uuid4().hex`` at a quarter of its cost."""
    return os.urandom(16).hex()


class CallRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bot: str
    # data, never objects a template could poke into (checked by pydantic-core, in Rust)
    variables: dict[str, JsonValue] = Field(default_factory=dict)
    # pydantic copies no default that is hashable: the frozen empty one is shared
    overrides: CallOverrides = NO_OVERRIDES
    session_id: str = Field(default_factory=new_session_id)
    transport: str = "text"
    direction: Literal["inbound", "outbound"] = "inbound"
    caller: str | None = None
    callee: str | None = None


@dataclass(frozen=True)
class RenderedPrompt:
    static: str  # identical bytes for every call of a bot version (cacheable)
    per_call: str
    greeting: str

    @property
    def instructions(self) -> str:
        return f"{self.static}\n\n{self.per_call}" if self.per_call else self.static


@dataclass
class EndRequest:
    disconnected_by: DisconnectedBy
    cause: str | None = None
    goodbye: str | None = None
    transfer_to: str | None = None  # hand the caller over after the goodbye


@dataclass
class CallContext:
    """Live state of one call, handed to provider and tool factories."""

    request: CallRequest
    bot: CompiledBot
    variables: dict[str, Any]
    prompt: RenderedPrompt
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    events: list[CallEvent] = field(default_factory=list)
    transcript: list[TranscriptEntry] = field(default_factory=list)
    end_request: EndRequest | None = None
    # the transport's hands on the line; text mode and tests simulate it
    control: CallControl = field(default_factory=SimulatedControl)
    transferred_to: str | None = None
    # which kinds of provider this call resolved ("stt", "vad", ...): a non-streaming STT
    # needs to know whether the session will have a VAD
    provider_kinds: frozenset[str] = frozenset()
    # live watchers of the timeline and transcript (a widget showing the call as it goes)
    observers: list[Callable[[str, dict[str, Any]], None]] = field(default_factory=list)
    # the flow: the step the call is in, the steps entered, the values captured so far
    # (captured values are data, like variables: templates read them, never run them)
    step: str | None = None
    steps: list[str] = field(default_factory=list)
    captured: dict[str, Any] = field(default_factory=dict)
    _clock_start: float = field(default_factory=time.monotonic)
    _ended: asyncio.Event | None = None

    @property
    def session_id(self) -> str:
        return self.request.session_id

    @property
    def bot_id(self) -> str:
        return self.bot.id

    @property
    def bot_version(self) -> str:
        return self.bot.version

    def elapsed(self) -> float:
        return round(time.monotonic() - self._clock_start, 4)

    def add_event(self, type: str, **data: Any) -> CallEvent:
        event = CallEvent(type=type, at=self.elapsed(), data=data)
        self.events.append(event)
        for observer in self.observers:
            observer("event", {"event": event.model_dump(mode="json")})
        return event

    def add_transcript(
        self, role: Literal["bot", "customer"], text: str, interrupted: bool = False
    ) -> None:
        entry = TranscriptEntry(role=role, text=text, at=self.elapsed(), interrupted=interrupted)
        self.transcript.append(entry)
        for observer in self.observers:
            observer("transcript", entry.model_dump(mode="json"))

    def capture(self, values: dict[str, Any], *, by: str) -> None:
        """Set captured values (a transition's, a tool's); ``by`` says where they came from."""
        if values:
            self.captured.update(values)
            self.add_event("captured", values=values, by=by)

    def enter_step(self, step: str, **data: Any) -> None:
        """The call is now in ``step``; ``data`` (from, reason, latency) goes on the timeline."""
        self.step = step
        self.steps.append(step)
        self.add_event("step_entered", step=step, **data)

    def transition_tool(self, to: str) -> str | None:
        """The tool the LLM calls to go from the current step to step ``to`` (None: the
        current step has no such transition). For LLM plugins that script transitions."""
        flow = self.bot.flow
        if flow is None or self.step is None:
            return None
        for transition in flow.steps[self.step].transitions:
            if transition.kind == "llm" and transition.to == to:
                return transition.tool
        return None

    def template_values(self) -> dict[str, Any]:
        """What a tool's templates read: the call's variables, `captured` and `step`."""
        return {**self.variables, "captured": dict(self.captured), "step": self.step}

    def speech_context(self) -> SpeechContext:
        """What callers are expected to say now (the bot's words in this step, names in
        the variables, the bot's last line): for STT providers that can be biased."""
        from runtime.speech_vocabulary import speech_context

        return speech_context(self)

    def resume(self) -> None:
        """Take back an end request whose hand-over failed (a transfer that did not
        connect, with a flow step to fall back to): the call goes on."""
        self.end_request = None
        self._ended = None

    def request_end(
        self,
        disconnected_by: DisconnectedBy,
        *,
        cause: str | None = None,
        goodbye: str | None = None,
        transfer_to: str | None = None,
    ) -> None:
        """Ask for the call to end. The first reason wins; transports tear down the line.
        With ``transfer_to`` the session says the goodbye, then transfers the caller."""
        if self.end_request is None:
            self.end_request = EndRequest(disconnected_by, cause, goodbye, transfer_to)
            self.add_event("end_requested", disconnected_by=disconnected_by.value, cause=cause)
        self.ended_event().set()

    def ended_event(self) -> asyncio.Event:
        import asyncio  # here, so loading and validating bots never imports asyncio

        if self._ended is None:
            self._ended = asyncio.Event()
        return self._ended

    def progress_record(self) -> CallRecord:
        """The record as far as the call got: no end, no reason yet (a checkpoint)."""
        record = self.to_record()
        record.ended_at = None
        record.disconnected_by = None
        record.cause = None
        record.duration = self.elapsed()
        return record

    def to_record(self, *, ended_at: dt.datetime | None = None) -> CallRecord:
        ended_at = ended_at or dt.datetime.now(dt.timezone.utc)
        end = self.end_request
        return CallRecord(
            session_id=self.session_id,
            bot_id=self.bot_id,
            bot_version=self.bot_version,
            transport=self.request.transport,
            direction=self.request.direction,
            caller=self.request.caller,
            callee=self.request.callee,
            variables=self.variables,
            started_at=self.started_at,
            answered_at=self.started_at,
            ended_at=ended_at,
            duration=round((ended_at - self.started_at).total_seconds(), 3),
            disconnected_by=end.disconnected_by if end else None,
            cause=end.cause if end else None,
            transferred_to=self.transferred_to,
            step=self.step,
            steps=list(self.steps),
            captured=dict(self.captured),
            transcript=list(self.transcript),
            events=list(self.events),
        )


def died_mid_call(record: CallRecord, now: dt.datetime) -> CallRecord:
    """A checkpoint of a call whose process stopped before it ended (killed, crashed),
    closed as `error` with the last state it reached."""
    last_known = record.started_at + dt.timedelta(seconds=record.duration)
    state = f"{len(record.transcript)} transcript entries"
    if record.step:
        state += f", in step {record.step!r}"
    return record.model_copy(
        update={
            "ended_at": last_known,
            "disconnected_by": DisconnectedBy.ERROR,
            "cause": (
                "the process serving this call stopped while it was in progress (killed or "
                f"crashed); last known state at {record.duration:.1f} s: {state}; closed at "
                f"{now.isoformat(timespec='seconds')}"
            ),
        }
    )


def unstarted_record(
    request: CallRequest, disconnected_by: DisconnectedBy, cause: str, bot_version: str = ""
) -> CallRecord:
    """The record of a call that never conversed (refused, or its set-up failed): the
    caller still has a record, and the reason is in it."""
    now = dt.datetime.now(dt.timezone.utc)
    return CallRecord(
        session_id=request.session_id,
        bot_id=request.bot,
        bot_version=bot_version,
        transport=request.transport,
        direction=request.direction,
        caller=request.caller,
        callee=request.callee,
        variables=request.variables,
        started_at=now,
        ended_at=now,
        disconnected_by=disconnected_by,
        cause=cause,
    )
