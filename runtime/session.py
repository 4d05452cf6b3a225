"""Build the livekit-agents pipeline for one call: providers, tools, agent, session.

This is where livekit is imported; loading and validating bots never comes here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from livekit.agents import Agent, AgentSession, llm
from livekit.agents.voice.events import ConversationItemAddedEvent, ErrorEvent
from livekit.agents.voice.run_result import RunResult

from runtime.call import CallContext
from runtime.record import CallRecord, DisconnectedBy, ProviderUsage
from runtime.resolve import CallPlan, ResolvedTool
from runtime.tools import ToolDefinition, ToolFailure, ToolHandler

TEXT_KINDS = ("llm",)  # a text-mode call builds only the LLM
VOICE_KINDS = ("stt", "llm", "tts", "vad")


class DialplanAgent(Agent):
    """The bot as a livekit ``Agent``: its instructions, its tools and its opening."""

    def __init__(self, plan: CallPlan, tools: list[llm.Tool | llm.Toolset]) -> None:
        super().__init__(instructions=plan.prompt.instructions, tools=tools)
        self.plan = plan

    async def on_enter(self) -> None:
        greeting = self.plan.prompt.greeting
        if self.plan.greeting_mode == "speak" and greeting:
            self.session.say(greeting)
        elif self.plan.greeting_mode == "generate":
            self.session.generate_reply(instructions=greeting or "Greet the caller.")


@dataclass
class CallSession:
    """One call's AgentSession, its CallContext and the glue that fills the call record."""

    call: CallContext
    session: AgentSession
    agent: DialplanAgent
    providers: dict[str, Any]
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    _watcher: asyncio.Task[None] | None = None

    async def start(self, **start_options: Any) -> RunResult | None:
        """Start the session; with ``capture_run=True`` the opening turn is returned."""
        self.call.add_event("call_started", bot_version=self.call.bot_version)
        result = await self.session.start(self.agent, **start_options)
        self._watcher = asyncio.create_task(self._end_when_requested(), name="dialplan.end_watch")
        return result

    async def say_text(self, text: str) -> RunResult:
        """A caller utterance in text mode; returns once the bot's reply is complete."""
        result: RunResult = await self.session.run(user_input=text)
        if self.call.end_request is not None:
            await self.finished.wait()
        return result

    async def _end_when_requested(self) -> None:
        await self.call.ended_event().wait()
        end = self.call.end_request
        if end is not None and end.goodbye:
            # RuntimeError: the session is already closing because the caller has gone
            with contextlib.suppress(RuntimeError):
                await self.session.say(end.goodbye, allow_interruptions=False)
        if end is not None and end.transfer_to:
            await self._transfer(end.transfer_to)
        self.finished.set()

    async def _transfer(self, target: str) -> None:
        started = time.perf_counter()
        try:
            await self.call.control.transfer(target)
        except Exception as exc:  # the line is still ours, but the bot has said goodbye
            self.call.add_event("transfer", target=target, outcome="error", error=str(exc))
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
    definitions = [(tool, tool.entry.factory(tool.options, call)) for tool in plan.tools]
    if tool_handlers:
        definitions = [
            (
                tool,
                replace(d, handler=tool_handlers[tool.name]) if tool.name in tool_handlers else d,
            )
            for tool, d in definitions
        ]
    tools: list[llm.Tool | llm.Toolset] = [
        livekit_tool(tool, definition, call) for tool, definition in definitions
    ]
    turn = plan.bot.bot.turn
    session: AgentSession = AgentSession(
        llm=providers["llm"],
        stt=providers.get("stt") or _not_given(),
        tts=providers.get("tts") or _not_given(),
        vad=providers.get("vad"),
        max_tool_steps=plan.bot.bot.limits.max_tool_steps,
        user_away_timeout=None,  # dead air is dialplan's watchdog, with its own reason
        aec_warmup_duration=echo_warmup,
        # a hung-up call waits this long for a last transcript; livekit's 2 s default
        # would hold every record and capacity slot that long after the caller left
        session_close_transcript_timeout=0.5,
        turn_handling={
            "turn_detection": "manual" if text_only else turn.detection,
            "endpointing": {
                "min_delay": turn.min_endpointing_delay,
                "max_delay": turn.max_endpointing_delay,
            },
            "interruption": {
                "enabled": turn.allow_interruptions,
                "min_duration": turn.min_interruption_duration,
            },
        },
    )
    _record_conversation(session, call)
    return CallSession(call, session, DialplanAgent(plan, tools), providers)


def _not_given() -> Any:
    from livekit.agents.types import NOT_GIVEN

    return NOT_GIVEN


def livekit_tool(resolved: ResolvedTool, definition: ToolDefinition, call: CallContext) -> llm.Tool:
    """Adapt a dialplan tool to a livekit raw function tool that records a timeline event."""
    schema = {**definition.schema(), "name": resolved.name}

    async def invoke(raw_arguments: dict[str, Any]) -> Any:
        started = time.perf_counter()
        try:
            result = await definition.handler(raw_arguments, call)
        except ToolFailure as exc:
            _tool_event(call, resolved.name, raw_arguments, started, error=str(exc))
            raise llm.ToolError(str(exc)) from None
        except Exception as exc:  # a bug in the tool: the LLM hears a generic failure
            error = f"{type(exc).__name__}: {exc}"
            _tool_event(call, resolved.name, raw_arguments, started, error=error)
            raise llm.ToolError(f"the tool {resolved.name} failed") from None
        output = result if isinstance(result, str) else json.dumps(result, default=str)
        _tool_event(call, resolved.name, raw_arguments, started, result=output)
        if definition.ends_turn:
            raise llm.StopResponse()
        return output

    return llm.function_tool(invoke, raw_schema=schema)


RESULT_EXCERPT_CHARS = 500  # a timeline is for reading, not a copy of every payload


def _tool_event(
    call: CallContext,
    name: str,
    arguments: dict[str, Any],
    started: float,
    *,
    error: str | None = None,
    result: str | None = None,
) -> None:
    if result is not None and len(result) > RESULT_EXCERPT_CHARS:
        result = result[:RESULT_EXCERPT_CHARS] + f"... ({len(result)} chars)"
    call.add_event(
        "tool_call",
        name=name,
        arguments=arguments,
        outcome="ok" if error is None else "error",
        error=error,
        result=result,
        latency_ms=round((time.perf_counter() - started) * 1000, 3),
    )


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
