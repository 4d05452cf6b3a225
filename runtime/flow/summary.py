"""The summary a step entered with `context = "summary"` starts from.

`[flow] summary` (a template over the call's values and `captured`) when the bot gives
one; otherwise the bot's own LLM condenses the conversation, except the offline `rules`
engine, which cannot, and lists the captured values instead. A summary that fails (a
provider error, a timeout) falls back to that list: a transition never fails for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import jinja2
from livekit.agents import llm

from runtime.call import CallContext
from runtime.resolve import CallPlan

SUMMARY_TIMEOUT = 10.0  # seconds: the caller is waiting for the next step
INSTRUCTION = (
    "Summarize this phone conversation in at most three sentences for the agent who takes "
    "over: who the caller is, what they want, and what was decided or is still open. "
    "Keep names, numbers, dates and times exactly."
)


async def summarize(plan: CallPlan, call: CallContext, history: llm.ChatContext, model: Any) -> str:
    flow = plan.bot.flow
    assert flow is not None
    if flow.summary is not None:
        try:
            text: str = flow.summary.render(
                {**plan.template_context, "captured": dict(call.captured), "step": call.step}
            )
            return text.strip()
        except (jinja2.TemplateError, ValueError) as exc:
            call.add_event("flow_error", key="flow.summary", error=f"cannot render: {exc}")
            return captured_summary(call)
    if plan.providers["llm"].entry.name == "rules" or not isinstance(model, llm.LLM):
        return captured_summary(call)
    try:
        return await asyncio.wait_for(_ask(model, history), SUMMARY_TIMEOUT) or captured_summary(
            call
        )
    except Exception as exc:  # the provider failed: the transition goes on without it
        call.add_event("flow_error", key="flow.summary", error=f"summary failed: {exc}")
        return captured_summary(call)


def captured_summary(call: CallContext) -> str:
    if not call.captured:
        return "nothing has been captured yet."
    return "; ".join(f"{name}: {value}" for name, value in call.captured.items())


async def _ask(model: llm.LLM, history: llm.ChatContext) -> str:
    lines = [
        f"{item.role}: {item.text_content}"
        for item in history.items
        if isinstance(item, llm.ChatMessage)
        and item.role in ("user", "assistant")
        and (item.text_content or "").strip()
    ]
    if not lines:
        return ""
    request = llm.ChatContext.empty()
    request.add_message(role="system", content=INSTRUCTION)
    request.add_message(role="user", content="\n".join(lines))
    chunks: list[str] = []
    async with model.chat(chat_ctx=request) as stream:
        async for chunk in stream:
            if chunk.delta and chunk.delta.content:
                chunks.append(chunk.delta.content)
    return "".join(chunks).strip()
