"""A text-mode call in the terminal: a real livekit ``AgentSession`` with the bot's LLM and
tools, the caller typing (or a script speaking) instead of talking."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TextIO

from runtime.call import CallContext
from runtime.flow.narration import FLOW_EVENTS, flow_line
from runtime.record import CallRecord, DisconnectedBy
from runtime.resolve import CallPlan

QUIT_WORDS = frozenset({"/quit", "/exit", "/hangup"})


async def typed_lines(stream: TextIO = sys.stdin, prompt: str = "you> ") -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    while True:
        if stream.isatty():
            print(prompt, end="", flush=True)
        line = await loop.run_in_executor(None, stream.readline)
        if not line:
            return
        yield line.rstrip("\n")


async def scripted_lines(lines: Iterable[str], echo: Callable[[str], None]) -> AsyncIterator[str]:
    for line in lines:
        if line.strip() and not line.lstrip().startswith("#"):
            echo(line.strip())
            yield line.strip()


async def run_text_call(
    plan: CallPlan,
    lines: AsyncIterator[str],
    *,
    out: Callable[[str], None] = print,
) -> CallRecord:
    """Converse until the lines run out (the caller hangs up) or the bot ends the call."""
    from runtime.session import build_call_session

    call_session = build_call_session(plan, text_only=True)
    call = call_session.call
    shown_events = 0

    def show_new_activity() -> None:
        nonlocal shown_events
        for event in call.events[shown_events:]:
            if event.type == "tool_call":
                data = event.data
                outcome = f"failed: {data['error']}" if data.get("error") else data["outcome"]
                out(
                    f"  [tool] {data['name']}({json.dumps(data['arguments'])}) -> "
                    f"{outcome} ({data['latency_ms']:.1f} ms)"
                )
            elif event.type in ("transfer", "dtmf"):
                details = ", ".join(f"{k}={v}" for k, v in event.data.items())
                out(f"  [{event.type}] {details}")
            elif event.type in ("error", "turn_failed"):
                out(f"  [error] {event.data.get('error')}")
            elif event.type in FLOW_EVENTS:
                line = flow_line(event.type, event.data)
                if line is not None:
                    out(line)
        shown_events = len(call.events)

    shown_transcript = 0

    def show_bot_lines() -> None:
        nonlocal shown_transcript
        for entry in call.transcript[shown_transcript:]:
            if entry.role == "bot":
                out(f"bot> {entry.text}")
        shown_transcript = len(call.transcript)

    await call_session.start()
    await call_session.session.wait_for_idle()
    if call.end_request is not None:  # e.g. outside opening hours: the bot only says so
        await call_session.finished.wait()
    show_new_activity()
    show_bot_lines()
    disconnected_by = DisconnectedBy.CUSTOMER
    async for line in _until_ended(lines, call):
        if line.strip().lower() in QUIT_WORDS:
            break
        if not line.strip():
            continue
        await call_session.say_text(line)
        show_new_activity()
        show_bot_lines()
        if call.end_request is not None:
            break
    record = await call_session.close(disconnected_by, cause="caller left the chat")
    show_new_activity()
    show_bot_lines()
    return record


async def _until_ended(lines: AsyncIterator[str], call: CallContext) -> AsyncIterator[str]:
    """The caller's lines, until the call has ended (then none are read)."""
    if call.end_request is not None:
        return
    async for line in lines:
        yield line
