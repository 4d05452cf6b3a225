"""Build the livekit-agents pipeline for one call: providers, tools, agent, session.

This is where livekit is imported; loading and validating bots never comes here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from livekit.agents import Agent, AgentSession, llm
from livekit.agents.types import NOT_GIVEN
from livekit.agents.voice.agent_session import SessionConnectOptions
from livekit.agents.voice.events import ConversationItemAddedEvent, ErrorEvent
from livekit.agents.voice.run_result import RunResult

from runtime.call import CallContext
from runtime.compiler import CompiledBot
from runtime.errors import CallSetupError, suggest
from runtime.lifecycle import Watchdogs
from runtime.livekit_tools import call_tools
from runtime.record import CallRecord, DisconnectedBy, ProviderUsage
from runtime.resolve import CallPlan
from runtime.tools import ToolHandler
from runtime.voicemail import PhraseClassifier, VoicemailScreen

GOODBYE_LIMIT = 10.0  # seconds, plus 0.1 s per character, for the last words of a call
TEXT_KINDS = ("llm",)  # a text-mode call builds only the LLM
VOICE_KINDS = ("stt", "llm", "tts", "vad")


class DialplanAgent(Agent):
    """The bot as a livekit ``Agent``: its instructions, its tools and its opening.

    livekit scans every member of an Agent for function tools on each construction (one
    per call), so helpers live outside the class rather than as extra methods."""

    def __init__(
        self,
        plan: CallPlan,
        tools: list[llm.Tool | llm.Toolset],
        *,
        instructions: str | None = None,
    ) -> None:
        super().__init__(instructions=instructions or plan.prompt.instructions, tools=tools)
        self.plan = plan
        self.voicemail_screen: VoicemailScreen | None = None
        self._screening: asyncio.Task[None] | None = None
        self._answering_with_greeting = False

    async def on_enter(self) -> None:
        if self.plan.outside_hours or self.plan.rejected:
            return  # the closed (or refusal) message is the whole call
        if self.voicemail_screen is None:
            _greet(self)
            return
        # an outbound call: AMD listens first; a person's "hello?" is answered by the
        # greeting (not by a reply to "hello?"), a machine never hears it
        self._answering_with_greeting = True
        await self.voicemail_screen.start()
        self._screening = asyncio.create_task(_screen_then_greet(self), name="dialplan.amd")

    async def on_user_turn_completed(
        self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage
    ) -> None:
        if self._answering_with_greeting:
            raise llm.StopResponse()


async def _screen_then_greet(agent: DialplanAgent) -> None:
    assert agent.voicemail_screen is not None
    try:
        if not await agent.voicemail_screen.verdict():
            # the "hello?" that made AMD decide ends its turn around now; a greeting the
            # turn could interrupt would be lost to a reply to "hello?"
            _greet(agent, allow_interruptions=False)
    finally:
        agent._answering_with_greeting = False


def _greet(agent: DialplanAgent, allow_interruptions: bool | None = None) -> None:
    """Say (or generate) the opening; None keeps the bot's turn settings."""
    interruptible = NOT_GIVEN if allow_interruptions is None else allow_interruptions
    plan = agent.plan
    greeting = plan.prompt.greeting
    if plan.greeting_mode == "speak" and greeting:
        agent.session.say(greeting, allow_interruptions=interruptible)
    elif plan.greeting_mode == "generate":
        agent.session.generate_reply(
            instructions=greeting or "Greet the caller.", allow_interruptions=interruptible
        )


@dataclass
class CallSession:
    """One call's AgentSession, its CallContext and the glue that fills the call record."""

    call: CallContext
    session: AgentSession
    agent: DialplanAgent
    providers: dict[str, Any]
    text_only: bool = True
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    # set when an end request has played out: the call finished, or it went on in a flow
    _end_settled: asyncio.Event = field(default_factory=asyncio.Event)
    _watcher: asyncio.Task[None] | None = None
    _watchdogs: Watchdogs | None = None

    async def start(self, **start_options: Any) -> RunResult | None:
        """Start the session; with ``capture_run=True`` the opening turn is returned.

        Voice calls get their watchdogs (max duration, dead air); a text chat has no line
        to watch, only the provider-error one. Outside the bot's opening hours the closed
        message is said instead of the greeting and the call ends."""
        plan = self.agent.plan
        self.call.add_event("call_started", bot_version=self.call.bot_version)
        result = await self.session.start(self.agent, **start_options)
        self._watchdogs = Watchdogs(
            self.session,
            self.call,
            plan.bot.bot.limits,
            plan.lines,
            timers=not self.text_only,
        )
        self._watchdogs.start()
        self._watcher = asyncio.create_task(self._end_when_requested(), name="dialplan.end_watch")
        if plan.rejected:
            self.call.request_end(
                DisconnectedBy.REJECTED, cause=plan.rejected, goodbye=plan.lines.rejected or None
            )
        elif plan.outside_hours:
            self.call.request_end(
                DisconnectedBy.OUTSIDE_HOURS,
                cause=plan.outside_hours,
                goodbye=plan.lines.closed or None,
            )
        return result

    async def say_text(self, text: str) -> RunResult:
        """A caller utterance in text mode; returns once the bot's reply is complete."""
        result: RunResult = self.session.run(user_input=text)
        try:
            await result
        except Exception as exc:
            # the turn failed as a provider's would (the session's error handling decides
            # whether the call goes on); the caller's side only sees no reply
            self.call.add_event("turn_failed", error=f"{type(exc).__name__}: {exc}")
        # the call ends (or a failed transfer falls back to a flow step: then the
        # fallback's opening is part of this turn)
        end = self.call.end_request
        while end is not None and self.call.end_request is end and not self.finished.is_set():
            self._end_settled.clear()
            await self._end_settled.wait()
        return result

    async def _end_when_requested(self) -> None:
        await self.call.ended_event().wait()
        end = self.call.end_request
        if end is not None and end.goodbye:
            # RuntimeError: the session is already closing because the caller has gone;
            # TimeoutError: a stuck TTS must not keep the line (and its slot) forever
            with contextlib.suppress(RuntimeError, asyncio.TimeoutError):
                await asyncio.wait_for(
                    self._say_goodbye(end.goodbye), GOODBYE_LIMIT + len(end.goodbye) / 10
                )
        if end is not None and end.transfer_to:
            await self._transfer(end.transfer_to)
            if self.call.end_request is None:  # a flow fell back: the call goes on
                self._end_settled.set()
                return
        self.finished.set()
        self._end_settled.set()

    async def _fall_back(self, error: str) -> bool:
        """A flow step with a way out for a failed transfer takes it: the call goes on
        (the end request is taken back and watched for again)."""
        if self.call.bot.flow is None:
            return False
        from runtime.flow.agents import resume_after_failed_transfer

        if not await resume_after_failed_transfer(self.session, self.call, error):
            return False
        self._watcher = asyncio.create_task(self._end_when_requested(), name="dialplan.end_watch")
        return True

    async def _say_goodbye(self, text: str) -> None:
        await self.session.say(text, allow_interruptions=False)

    async def _transfer(self, target: str) -> None:
        started = time.perf_counter()
        try:
            await self.call.control.transfer(target)
        except Exception as exc:  # the line is still ours, but the bot has said goodbye
            self.call.add_event("transfer", target=target, outcome="error", error=str(exc))
            if await self._fall_back(str(exc)):
                return
            assert self.call.end_request is not None
            self.call.end_request.disconnected_by = DisconnectedBy.ERROR
            self.call.end_request.cause = f"transfer to {target} failed: {exc}"
            return
        self.call.transferred_to = target
        self.call.add_event(
            "transfer",
            target=target,
            outcome="ok",
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    async def close(
        self, disconnected_by: DisconnectedBy = DisconnectedBy.CUSTOMER, cause: str | None = None
    ) -> CallRecord:
        """Tear the session down and return the call record. ``disconnected_by`` applies
        only if nothing ended the call before (first reason wins)."""
        if self.call.end_request is None:
            self.call.request_end(disconnected_by, cause=cause)
        if self._watchdogs is not None:
            self._watchdogs.close()
        if self._watcher is not None:
            await self._watcher
        await self.session.aclose()
        record = self.call.to_record()
        record.usage = collect_usage(self.session, self.providers)
        return record


def build_call_session(
    plan: CallPlan,
    *,
    text_only: bool = True,
    tool_handlers: Mapping[str, ToolHandler] | None = None,
    echo_warmup: float | None = None,
    start_step: str | None = None,
    start_captured: Mapping[str, Any] | None = None,
) -> CallSession:
    """The call's AgentSession. ``tool_handlers`` replace tools' handlers by tool name
    (scenario mocks): the LLM still sees the real tool, and the timeline still records it.
    ``echo_warmup``: seconds after the bot starts talking in which the caller cannot
    interrupt (livekit's AEC warm-up, for rooms whose echo canceller needs it; telephony
    and socket transports hear no echo of the bot, so by default the caller can barge in
    from the first word)."""
    call = plan.new_context()
    kinds = TEXT_KINDS if text_only else VOICE_KINDS
    providers = {
        kind: resolved.entry.factory(resolved.options, call)
        for kind, resolved in plan.providers.items()
        if kind in kinds
    }
    tools = call_tools(plan.bot, plan.tools, call, tool_handlers)
    if start_step is not None or start_captured:
        if plan.bot.flow is None:
            raise CallSetupError(f"bot {plan.bot.id!r} has no [flow] to start in a step")
        call.captured.update(start_captured or {})
    session: AgentSession = AgentSession(
        llm=providers["llm"],
        stt=providers.get("stt") or NOT_GIVEN,
        tts=providers.get("tts") or NOT_GIVEN,
        vad=providers.get("vad"),
        aec_warmup_duration=echo_warmup,
        userdata=call,  # how tools shared by every call of the bot find this one
        **plan.bot.derived(
            "session_options.text" if text_only else "session_options.voice",
            functools.partial(_session_options, text_only=text_only),
        ),
    )
    _record_conversation(session, call)
    agent = _first_agent(plan, call, tools, tool_handlers, start_step)
    voicemail = plan.bot.bot.voicemail
    if not text_only and plan.request.direction == "outbound" and voicemail and voicemail.detect:
        agent.voicemail_screen = VoicemailScreen(
            session, call, voicemail, _voicemail_classifier(plan, call), plan.lines.voicemail
        )
    return CallSession(call, session, agent, providers, text_only=text_only)


def _first_agent(
    plan: CallPlan,
    call: CallContext,
    tools: list[llm.Tool | llm.Toolset],
    handlers: Mapping[str, ToolHandler] | None,
    start_step: str | None,
) -> DialplanAgent:
    """The bot's one agent, or the first step's when it has a flow."""
    if plan.bot.flow is None:
        return DialplanAgent(plan, tools)
    from runtime.flow.agents import FlowRunner

    by_name = {resolved.name: tool for resolved, tool in zip(plan.tools, tools, strict=True)}
    if start_step is not None and start_step not in plan.bot.flow.steps:
        raise CallSetupError(
            f"bot {plan.bot.id!r} has no step {start_step!r}; "
            + suggest(start_step, list(plan.bot.flow.steps), what="steps")
        )
    return FlowRunner(plan, call, by_name, handlers).first_agent(start_step)


def _session_options(bot: CompiledBot, *, text_only: bool) -> dict[str, Any]:
    """The AgentSession options that follow from the bot version alone (livekit copies
    what it keeps, so every call of the version can share them)."""
    turn = bot.bot.turn
    limits = bot.bot.limits
    return {
        "max_tool_steps": limits.max_tool_steps,
        "conn_options": SessionConnectOptions(max_unrecoverable_errors=limits.max_provider_errors),
        "user_away_timeout": None,  # dead air is dialplan's watchdog, with its own reason
        # a hung-up call waits this long for a last transcript; livekit's 2 s default
        # would hold every record and capacity slot that long after the caller left
        "session_close_transcript_timeout": 0.5,
        "turn_handling": {
            "turn_detection": _turn_detection(turn.detection, text_only=text_only),
            "endpointing": {
                "min_delay": turn.min_endpointing_delay,
                "max_delay": turn.max_endpointing_delay,
            },
            "interruption": {
                "enabled": turn.allow_interruptions,
                "min_duration": turn.min_interruption_duration,
            },
        },
    }


def _turn_detection(detection: str, *, text_only: bool) -> Any:
    if text_only:
        return "manual"
    if detection == "transcript":
        from runtime.turn_ending import TranscriptTurnDetector

        return TranscriptTurnDetector()
    return detection


def _voicemail_classifier(plan: CallPlan, call: CallContext) -> llm.LLM | None:
    """The LLM that tells a machine's greeting from a person's: `[voicemail.llm]`, else
    the bot's own model (None), except that the offline `rules` engine cannot read free
    text, so it gets the phrase matcher."""
    configured = plan.providers.get("voicemail.llm")
    if configured is not None:
        instance: llm.LLM = configured.entry.factory(configured.options, call)
        return instance
    if plan.providers["llm"].entry.name == "rules":
        return PhraseClassifier()
    return None


def _record_conversation(session: AgentSession, call: CallContext) -> None:
    def on_item(event: ConversationItemAddedEvent) -> None:
        item = event.item
        if not isinstance(item, llm.ChatMessage) or item.role not in ("user", "assistant"):
            return
        text = item.text_content or ""
        role: Literal["bot", "customer"] = "customer" if item.role == "user" else "bot"
        call.add_transcript(role, text, interrupted=item.interrupted)
        metrics = {
            k: v
            for k, v in (item.metrics or {}).items()
            if isinstance(v, int | float) and k.endswith(("ttft", "ttfb", "delay", "latency"))
        }
        call.add_event("turn", role=role, chars=len(text), **metrics)

    def on_error(event: ErrorEvent) -> None:
        call.add_event("error", source=type(event.source).__name__, error=str(event.error))

    session.on("conversation_item_added", on_item)
    session.on("error", on_error)


def collect_usage(session: AgentSession, providers: dict[str, Any]) -> list[ProviderUsage]:
    usage: list[ProviderUsage] = []
    for model_usage in session.usage.model_usage:
        data = model_usage.model_dump()
        usage.append(
            ProviderUsage(
                provider=data.get("provider", ""),
                model=data.get("model", ""),
                prompt_tokens=data.get("input_tokens", 0),
                completion_tokens=data.get("output_tokens", 0),
                cached_tokens=data.get("input_cached_tokens", 0),
                audio_seconds=data.get("audio_duration", 0.0),
                characters=data.get("characters_count", 0),
            )
        )
    costs = provider_costs(providers.values())
    for entry in usage:
        entry.cost_usd = costs.get(entry.model, entry.cost_usd)
    return usage


def provider_costs(instances: Iterable[Any]) -> dict[str, float]:
    """Estimated cost per model, from providers that track it: a provider may expose
    ``usages``, a list of objects with ``model`` and ``cost_usd`` (see plugins/llm/litellm)."""
    costs: dict[str, float] = {}
    for instance in instances:
        for tracked in getattr(instance, "usages", None) or []:
            cost = getattr(tracked, "cost_usd", None)
            if cost is not None:
                costs[tracked.model] = costs.get(tracked.model, 0.0) + cost
    return costs
