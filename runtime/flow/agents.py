"""A flow on livekit-agents: one `Agent` per step, transitions as livekit handoffs.

A transition the LLM chooses is a function tool that returns the next step's agent (the
handoff livekit performs itself); a transition the runtime decides after a tool, a
capture or a failure returns that agent beside the tool's output. What each step needs
(its instructions when they are plain text, its transition tools) is prepared once per
bot version; a call only picks the prepared parts and renders what reads its own values.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from livekit.agents import AgentSession, RunContext, llm

from runtime.call import CallContext
from runtime.compiler import CompiledBot
from runtime.flow.captures import CaptureError, check_values, json_schema
from runtime.flow.compile import REMEMBER_TOOL, CompiledFlow, CompiledStep, CompiledTransition
from runtime.flow.schema import ANY_TOOL, CaptureSpec, ContextMode
from runtime.flow.summary import summarize
from runtime.livekit_tools import handing_over, record_tool_call
from runtime.record import DisconnectedBy
from runtime.resolve import CallPlan
from runtime.session import DialplanAgent
from runtime.tools import ToolDefinition, ToolFailure, ToolHandler

MAX_HOPS = 10  # condition transitions taken in a row before the flow is deemed looping
ARRIVAL_LIMIT = 30.0  # seconds a fallback step may take to begin (its line said)


@dataclass(frozen=True)
class Entry:
    """How a step was entered: for its timeline event and its context."""

    source: str | None  # the step left (None: the call starts here)
    reason: str
    transition: str | None  # its key in the bot file
    context: ContextMode
    started: float  # perf_counter() when the transition was triggered
    hops: int = 0  # condition transitions just taken in a row


@dataclass(frozen=True)
class PreparedStep:
    """What every call of a bot version shares for one step."""

    step: CompiledStep
    instructions: str | None  # static prompt + the step's plain instructions; None: render
    tools: tuple[llm.Tool, ...]  # its transition tools and `remember`


def prepared_steps(bot: CompiledBot) -> Mapping[str, PreparedStep]:
    return bot.derived("flow_steps", _prepare)


def _prepare(bot: CompiledBot) -> dict[str, PreparedStep]:
    assert bot.flow is not None
    prepared: dict[str, PreparedStep] = {}
    for name, step in bot.flow.steps.items():
        text: str | None = bot.static_prompt
        if step.instructions is not None:
            text = (
                f"{bot.static_prompt}\n\n{step.instructions.source.strip()}"
                if step.instructions.is_plain
                else None
            )
        tools: list[llm.Tool] = [_transition_tool(t) for t in step.taken("llm")]
        if step.captures:
            tools.append(_remember_tool(step))
        prepared[name] = PreparedStep(step, text, tuple(tools))
    return prepared


def _runner(context: RunContext) -> FlowRunner:
    agent = context.session.current_agent
    assert isinstance(agent, StepAgent), "a flow tool ran outside a flow step"
    return agent.runner


def _transition_tool(transition: CompiledTransition) -> llm.Tool:
    assert transition.tool is not None
    schema = {
        "name": transition.tool,
        "description": f"Go to the next step ({transition.to}) when {transition.description}.",
        "parameters": json_schema(transition.captures),
    }

    async def take(raw_arguments: dict[str, Any], context: RunContext) -> Any:
        return _runner(context).take_chosen(transition, raw_arguments)

    return llm.function_tool(take, raw_schema=schema)


def _remember_tool(step: CompiledStep) -> llm.Tool:
    names = ", ".join(step.captures)
    schema = {
        "name": REMEMBER_TOOL,
        "description": f"Record what the caller has told you ({names}) as soon as you know it.",
        "parameters": json_schema(_optional(step)),
    }

    async def remember(raw_arguments: dict[str, Any], context: RunContext) -> Any:
        return _runner(context).remember(step, raw_arguments)

    return llm.function_tool(remember, raw_schema=schema)


def _optional(step: CompiledStep) -> dict[str, CaptureSpec]:
    """A step's captures as `remember` takes them: any of them, whenever they are known."""
    return {
        name: spec.model_copy(update={"required": False}) for name, spec in step.captures.items()
    }


class StepAgent(DialplanAgent):
    """One step of a flow, as the livekit agent of the session while the call is in it."""

    def __init__(
        self,
        runner: FlowRunner,
        step: CompiledStep,
        instructions: str,
        tools: list[llm.Tool | llm.Toolset],
        entry: Entry | None,
    ) -> None:
        super().__init__(runner.plan, tools, instructions=instructions)
        self.runner = runner
        self.step = step
        self.entry = entry
        self.arrived = asyncio.Event()  # set once the step has begun (its line said)

    async def on_enter(self) -> None:
        try:
            await self.runner.entered(self)
        finally:
            self.arrived.set()


class FlowRunner:
    """One call's flow: builds each step's agent and takes the transitions."""

    def __init__(
        self,
        plan: CallPlan,
        call: CallContext,
        tools: Mapping[str, llm.Tool | llm.Toolset],
        handlers: Mapping[str, ToolHandler] | None = None,
    ) -> None:
        assert plan.bot.flow is not None
        self.plan = plan
        self.flow: CompiledFlow = plan.bot.flow
        self.call = call
        self.tools = tools  # the call's bound tools, by name
        self.handlers = handlers or {}
        self.prepared = prepared_steps(plan.bot)
        self.current: StepAgent | None = None
        self.previous: StepAgent | None = None

    # -- agents ------------------------------------------------------------------------

    def first_agent(self, step: str | None = None) -> StepAgent:
        """The agent a call starts with: the flow's start, or ``step`` (a scenario testing
        one step on its own, entered as if by a transition)."""
        if step is None:
            return self.agent(self.flow.start, None)
        entry = Entry(None, "the scenario starts here", None, "reset", time.perf_counter())
        return self.agent(step, entry)

    def agent(self, name: str, entry: Entry | None) -> StepAgent:
        prepared = self.prepared[name]
        step = prepared.step
        instructions = prepared.instructions
        if instructions is None:
            assert step.instructions is not None
            rendered = self.render(step.instructions, f"steps.{name}.instructions", name)
            instructions = f"{self.plan.bot.static_prompt}\n\n{rendered.strip()}"
        if self.plan.prompt.per_call:
            instructions = f"{instructions}\n\n{self.plan.prompt.per_call}"
        tools: list[llm.Tool | llm.Toolset] = [self.tools[t] for t in step.tools]
        tools.extend(prepared.tools)
        agent = StepAgent(self, step, instructions, tools, entry)
        if entry is None:
            self.call.enter_step(name, reason="the call starts here")
        return agent

    def render(self, template: Any, key: str, step: str) -> str:
        context = {
            **self.plan.template_context,
            "captured": dict(self.call.captured),
            "step": step,
        }
        try:
            text: str = template.render(context)
        except (jinja2.TemplateError, ValueError) as exc:
            self.call.add_event("flow_error", key=key, error=f"cannot render: {exc}")
            return ""
        return text

    # -- transitions -------------------------------------------------------------------

    def take(
        self, transition: CompiledTransition, reason: str, started: float, hops: int = 0
    ) -> StepAgent:
        entry = Entry(transition.source, reason, transition.key, transition.context, started, hops)
        return self.agent(transition.to, entry)

    def take_chosen(self, transition: CompiledTransition, arguments: dict[str, Any]) -> Any:
        """The LLM called a transition's tool: check its captures, then hand off."""
        started = time.perf_counter()
        if self.current is not None and self.current.step.name != transition.source:
            raise llm.ToolError(f"{transition.tool} belongs to step {transition.source!r}")
        try:
            values = check_values(transition.captures, arguments)
        except CaptureError as exc:
            self.call.add_event(
                "transition_refused", transition=transition.key, arguments=arguments, error=str(exc)
            )
            raise llm.ToolError(f"cannot go to {transition.to} yet: {exc}") from None
        self.call.capture(values, by=transition.key)
        return self.take(transition, f"chosen: {transition.description}", started)

    def remember(self, step: CompiledStep, arguments: dict[str, Any]) -> Any:
        started = time.perf_counter()
        try:
            values = check_values(_optional(step), arguments)
        except CaptureError as exc:
            raise llm.ToolError(f"not recorded: {exc}") from None
        self.call.capture(values, by=f"steps.{step.name}.capture")
        following = self.conditions(step, started)
        noted = "recorded " + ", ".join(f"{k}={v!r}" for k, v in values.items())
        return noted if following is None else handing_over(following, noted)

    def after_tool(self, name: str, result: Any) -> StepAgent | None:
        """A bound tool returned (its captures already set): an `after` transition whose
        condition holds, else a condition over the captured values."""
        started = time.perf_counter()
        step = self.current_step()
        for transition in step.taken("after"):
            if transition.tool == name and self.holds(transition, {"result": result}):
                return self.take(transition, transition.description, started)
        return self.conditions(step, started)

    def after_failure(self, name: str, error: str) -> StepAgent | None:
        started = time.perf_counter()
        step = self.current_step()
        for transition in step.taken("error"):
            if transition.tool in (name, ANY_TOOL):
                return self.take(transition, f"{name} failed: {error}", started)
        return None

    def conditions(self, step: CompiledStep, started: float, hops: int = 0) -> StepAgent | None:
        for transition in step.taken("condition"):
            if self.holds(transition, {}):
                return self.take(transition, f"condition: {transition.description}", started, hops)
        return None

    def holds(self, transition: CompiledTransition, extra: dict[str, Any]) -> bool:
        if transition.condition is None:
            return True
        context = {
            **self.plan.template_context,
            "captured": self.flow.conditions_context(self.call.captured),
            "step": self.call.step,
            **extra,
        }
        try:
            return bool(transition.condition(**context))
        except Exception as exc:  # a condition is data: it fails the check, never the call
            self.call.add_event(
                "flow_error",
                key=f"{transition.key}.if",
                error=f"cannot evaluate {transition.condition_text!r}: {exc}",
            )
            return False

    def current_step(self) -> CompiledStep:
        assert self.call.step is not None
        return self.flow.steps[self.call.step]

    def fallback_after_transfer(self, error: str) -> StepAgent | None:
        """A transfer did not connect: the current step's `on_error` way, if it has one."""
        step = self.current_step()
        for transition in step.taken("error"):
            tool = transition.tool
            if tool == ANY_TOOL or (tool is not None and tool in self._transfer_tools()):
                return self.take(transition, f"transfer failed: {error}", time.perf_counter())
        return None

    def _transfer_tools(self) -> set[str]:
        return {t.name for t in self.plan.tools if t.entry.name == "transfer_call"}

    # -- entering a step ---------------------------------------------------------------

    async def entered(self, agent: StepAgent) -> None:
        self.previous, self.current = self.current, agent
        entry = agent.entry
        if entry is None:  # the call starts: greeting (and voicemail screening) first
            await DialplanAgent.on_enter(agent)
            if self.plan.outside_hours or self.plan.rejected or agent.voicemail_screen:
                return
        else:
            await self.set_context(agent, entry)
            self.call.enter_step(
                agent.step.name,
                **{"from": entry.source},
                reason=entry.reason,
                transition=entry.transition,
                latency_ms=round((time.perf_counter() - entry.started) * 1000, 3),
            )
            hops = entry.hops + 1
            if hops > MAX_HOPS:
                self.call.add_event(
                    "flow_error",
                    key=f"steps.{agent.step.name}",
                    error=f"{MAX_HOPS} condition transitions in a row: the conditions loop",
                )
            else:
                following = self.conditions(agent.step, time.perf_counter(), hops)
                if following is not None:
                    agent.session.update_agent(following)
                    return
        step = agent.step
        if step.say is not None:
            text = self.render(step.say, f"steps.{step.name}.say", step.name).strip()
            if text:
                handle = agent.session.say(text)
                if step.then is not None:
                    await handle
        if step.then is not None:
            await self.then(agent, step)
        elif step.say is None and entry is not None and entry.source is not None:
            agent.session.generate_reply()  # the LLM opens the step it was moved to

    async def set_context(self, agent: StepAgent, entry: Entry) -> None:
        previous = self.previous
        if previous is None or entry.context == "reset":
            return
        if entry.context == "keep":
            await agent.update_chat_ctx(previous.chat_ctx.copy())
            return
        summary = await summarize(self.plan, self.call, previous.chat_ctx, agent.session.llm)
        context = llm.ChatContext.empty()
        context.add_message(role="system", content=f"Summary of the call so far: {summary}")
        await agent.update_chat_ctx(context)

    async def then(self, agent: StepAgent, step: CompiledStep) -> None:
        """After a fixed line: the next step, or a bound tool run with no arguments."""
        assert step.then is not None
        started = time.perf_counter()
        if step.then_is_step:
            entry = Entry(
                step.name,
                f"then {step.then}",
                f"steps.{step.name}.then",
                self.flow.steps[step.then].context,
                started,
            )
            agent.session.update_agent(self.agent(step.then, entry))
            return
        name = step.then
        try:
            await self.run_tool(name)
        except ToolFailure as exc:
            fallback = self.after_failure(name, str(exc))
            if fallback is not None:
                agent.session.update_agent(fallback)
                return
            self.call.request_end(
                DisconnectedBy.ERROR,
                cause=f"steps.{step.name}.then: {name} failed: {exc}",
                goodbye=self.plan.lines.apology or None,
            )

    async def run_tool(self, name: str) -> Any:
        resolved = next(t for t in self.plan.tools if t.name == name)
        handler = self.handlers.get(name)
        if handler is None:
            definition: ToolDefinition = resolved.entry.factory(
                resolved.options, self.call if resolved.entry.per_call else None
            )
            handler = definition.handler
        started = time.perf_counter()
        try:
            result = await handler({}, self.call)
        except ToolFailure as exc:
            record_tool_call(self.call, name, {}, started, error=str(exc))
            raise
        except Exception as exc:  # a bug in the tool: fail like a tool failure
            record_tool_call(self.call, name, {}, started, error=f"{type(exc).__name__}: {exc}")
            raise ToolFailure(f"the tool {name} failed") from None
        record_tool_call(self.call, name, {}, started, result=str(result))
        return result


async def resume_after_failed_transfer(
    session: AgentSession, call: CallContext, error: str
) -> bool:
    """A transfer failed after its goodbye: the call goes on in the current step's
    fallback, if it has one. Returns once that step has begun (its line said)."""
    agent = session.current_agent
    if not isinstance(agent, StepAgent):
        return False
    fallback = agent.runner.fallback_after_transfer(error)
    if fallback is None:
        return False
    call.resume()
    try:
        session.update_agent(fallback)
    except RuntimeError:  # the session is closing: the caller has gone
        return False
    with contextlib.suppress(asyncio.TimeoutError, RuntimeError):
        await asyncio.wait_for(fallback.arrived.wait(), ARRIVAL_LIMIT)
        await asyncio.wait_for(session.wait_for_idle(), ARRIVAL_LIMIT)
    return True
