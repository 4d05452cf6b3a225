"""A bot's tools as livekit function tools that record every call in the timeline.

The livekit tool finds its call through ``RunContext`` (the session's ``userdata`` is the
CallContext), so a tool whose plugin registered it with ``per_call=False`` is adapted once
per bot version and shared by every call of that version, instead of being rebuilt (the
plugin's definition, its schema and livekit's wrapper) on each call set-up.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from livekit.agents import RunContext, llm

from runtime.call import CallContext
from runtime.compiler import CompiledBot
from runtime.resolve import ResolvedTool
from runtime.tools import ToolDefinition, ToolFailure, ToolHandler

RESULT_EXCERPT_CHARS = 500  # a timeline is for reading, not a copy of every payload


def call_tools(
    bot: CompiledBot,
    tools: tuple[ResolvedTool, ...],
    call: CallContext,
    handlers: Mapping[str, ToolHandler] | None = None,
) -> list[llm.Tool | llm.Toolset]:
    """The livekit tools for one call. ``handlers`` replace tools' handlers by tool name
    (scenario mocks); a replaced tool is built for this call only."""
    shared: dict[int, tuple[ResolvedTool, llm.Tool]] = bot.derived("livekit_tools", _no_tools)
    built: list[llm.Tool | llm.Toolset] = []
    for resolved in tools:
        handler = handlers.get(resolved.name) if handlers else None
        if handler is None and not resolved.entry.per_call:
            known = shared.get(id(resolved))
            if known is None or known[0] is not resolved:  # keyed by id: check it is ours
                known = (resolved, livekit_tool(resolved, _definition(resolved, None)))
                shared[id(resolved)] = known
            built.append(known[1])
            continue
        definition = _definition(resolved, call)
        if handler is not None:
            definition = replace(definition, handler=handler)
        built.append(livekit_tool(resolved, definition))
    return built


def _no_tools(bot: CompiledBot) -> dict[int, tuple[ResolvedTool, llm.Tool]]:
    return {}


def _definition(resolved: ResolvedTool, call: CallContext | None) -> ToolDefinition:
    definition: ToolDefinition = resolved.entry.factory(resolved.options, call)
    return definition


def livekit_tool(resolved: ResolvedTool, definition: ToolDefinition) -> llm.Tool:
    """Adapt a dialplan tool to a livekit raw function tool that records a timeline event
    in the call of the session running it."""
    schema = definition.schema()
    if schema["name"] != resolved.name:  # the name the bot binds it under wins
        schema = {**schema, "name": resolved.name}

    async def invoke(raw_arguments: dict[str, Any], context: RunContext) -> Any:
        call: CallContext = context.session.userdata
        started = time.perf_counter()
        try:
            result = await definition.handler(raw_arguments, call)
        except ToolFailure as exc:
            record_tool_call(call, resolved.name, raw_arguments, started, error=str(exc))
            fallback = _step_agent_hook(context, "after_failure", resolved.name, str(exc))
            if fallback is not None:  # the flow has a way out for this failure
                return handing_over(fallback, f"failed: {exc}")
            raise llm.ToolError(str(exc)) from None
        except Exception as exc:  # a bug in the tool: the LLM hears a generic failure
            error = f"{type(exc).__name__}: {exc}"
            record_tool_call(call, resolved.name, raw_arguments, started, error=error)
            fallback = _step_agent_hook(context, "after_failure", resolved.name, error)
            if fallback is not None:
                return handing_over(fallback, f"failed: {error}")
            raise llm.ToolError(f"the tool {resolved.name} failed") from None
        output = result if isinstance(result, str) else json.dumps(result, default=str)
        record_tool_call(call, resolved.name, raw_arguments, started, result=output)
        if resolved.captures:
            call.capture(_captures(call, resolved, result), by=resolved.name)
        following = _step_agent_hook(context, "after_tool", resolved.name, result)
        if definition.ends_turn:
            raise llm.StopResponse()
        return output if following is None else handing_over(following, output)

    return llm.function_tool(invoke, raw_schema=schema)


def handing_over(agent: Any, output: str) -> tuple[Any, llm.ToolResult]:
    """A tool's answer when the flow moves on: the output stays in the conversation, and
    the next step speaks (the step that ran the tool does not answer it first)."""
    return agent, llm.ToolResult(output, reply_required=False)


def _step_agent_hook(context: RunContext, hook: str, name: str, value: Any) -> Any:
    """Ask the flow step running this tool where the call goes next (None: it stays).
    Bots without a flow have no step agent, and nothing to ask."""
    runner = getattr(context.session.current_agent, "runner", None)
    return None if runner is None else getattr(runner, hook)(name, value)


def _captures(call: CallContext, resolved: ResolvedTool, result: Any) -> dict[str, Any]:
    """The values a tool's `capture` expressions read from its result. One that fails to
    evaluate is left out and logged: a capture is data, it never fails the tool."""
    context = {**call.template_values(), "result": result}
    values: dict[str, Any] = {}
    for name, expression in resolved.captures:
        try:
            value = expression(**context)
        except Exception as exc:
            call.add_event("flow_error", key=f"{resolved.name}.capture.{name}", error=str(exc))
            continue
        if value is not None and not _is_undefined(value):
            values[name] = value
    return values


def _is_undefined(value: Any) -> bool:
    import jinja2

    return isinstance(value, jinja2.Undefined)


def record_tool_call(
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
