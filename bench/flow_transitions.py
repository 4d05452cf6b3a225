"""Flow benchmark: what a transition costs beyond livekit's own handoff, and what a flow
adds to a call's set-up.

(a) Transition overhead. A real text-mode AgentSession ping-pongs between two steps: the
    caller says "go", the LLM calls the step's transition tool, the next step's agent
    takes over. Timed: from the transition tool being invoked to the next agent's
    ``on_enter`` (the handoff livekit performs, plus what dialplan does around it).
      dialplan: a flow bot (two steps, each a `when` transition with one captured value,
                context "keep"), the `rules` LLM taking the transition (`goto`); the time
                is the `latency_ms` of each `step_entered` event.
      by hand:  two livekit ``Agent`` subclasses whose function tool returns the other
                agent with the chat context copied (livekit's documented handoff), the
                same kind of scripted LLM; timed the same way.
    Overhead = dialplan's median minus livekit's. Also timed alone: dialplan's synchronous
    part of a transition (check the captures, record them, build the next step's agent)
    against constructing the hand-written agent.
(b) Per-call set-up: ``plan_call`` + ``build_call_session`` of a 6-step flow bot against a
    single-prompt bot with the same tools, LLM rules and prompts (interleaved, after a
    warm-up, ``gc.freeze()``d like a worker).

Targets: transition overhead median < 1 ms; flow set-up within 10 % of the flat bot.

    uv run python bench/flow_transitions.py [--transitions 400] [--setups 1500]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_stats import machine, summary
from livekit.agents import Agent, AgentSession, RunContext, function_tool, llm
from livekit.agents.llm import ChatChunk, ChoiceDelta, FunctionToolCall
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

TARGET_TRANSITION_MS = 1.0
TARGET_SETUP_PERCENT = 10.0

PING_PONG = """
description = "two steps, ping-pong"
[prompt]
system = "You are a test bot."
greeting = ""
greeting_mode = "wait"
[flow]
start = "ping"
[steps.ping]
instructions = "You are in ping."
[[steps.ping.next]]
to = "pong"
when = "the caller says go"
capture = { count = "number" }
[steps.pong]
instructions = "You are in pong."
[[steps.pong.next]]
to = "ping"
when = "the caller says go"
capture = { count = "number" }
[llm]
provider = "rules"
[[llm.rules]]
steps = ["ping"]
match = "go (?P<n>\\\\d+)"
goto = "pong"
capture = { count = "{{ match.n }}" }
[[llm.rules]]
steps = ["pong"]
match = "go (?P<n>\\\\d+)"
goto = "ping"
capture = { count = "{{ match.n }}" }
"""

TOOLS = """
[[tools]]
use = "end_call"
goodbye = "Bye!"
[[tools]]
use = "transfer_call"
to = "+15550100"
[[tools]]
use = "send_dtmf"
"""

STEPS = ["greet", "ask", "check", "offer", "confirm", "close"]


def flow_bot() -> str:
    """Six LLM steps in a chain (each may go back to the first), the three call-control
    tools offered in every step."""
    lines = [
        'description = "six-step flow"',
        "[prompt]",
        'system = "You are a test bot for {{ bot.id }}."',
        'greeting = "Hello {{ name }}."',
        "[variables]",
        'name = "there"',
        "[flow]",
        'start = "greet"',
        'global_tools = ["end_call", "transfer_call", "send_dtmf"]',
    ]
    for index, step in enumerate(STEPS):
        lines += [f"[steps.{step}]", f'instructions = "Step {step}: help the caller."']
        if index + 1 < len(STEPS):
            lines += [
                f"[[steps.{step}.next]]",
                f'to = "{STEPS[index + 1]}"',
                'when = "the caller is ready"',
                'capture = { answer = { type = "string", required = false } }',
            ]
        if index:
            lines += [f"[[steps.{step}.next]]", 'to = "greet"', 'when = "start over"']
    lines += ["[llm]", 'provider = "rules"', "[[llm.rules]]", 'match = "bye"', 'tool = "end_call"']
    return "\n".join(lines) + TOOLS


def flat_bot() -> str:
    return (
        "\n".join(
            [
                'description = "one prompt"',
                "[prompt]",
                'system = "You are a test bot for {{ bot.id }}."',
                'greeting = "Hello {{ name }}."',
                "[variables]",
                'name = "there"',
                "[llm]",
                'provider = "rules"',
                "[[llm.rules]]",
                'match = "bye"',
                'tool = "end_call"',
            ]
        )
        + TOOLS
    )


def write_bots(into: Path) -> Path:
    bots = into / "bots"
    bots.mkdir()
    (into / "prompts").mkdir()
    (bots / "pingpong.toml").write_text(PING_PONG)
    (bots / "flowbot.toml").write_text(flow_bot())
    (bots / "flatbot.toml").write_text(flat_bot())
    return bots


# -- (a) transitions ---------------------------------------------------------------------


async def dialplan_transitions(snapshot: Any, registry: Any, count: int) -> list[float]:
    from runtime.call import CallRequest
    from runtime.resolve import plan_call
    from runtime.session import build_call_session

    plan = plan_call(snapshot, CallRequest(bot="pingpong"), registry)
    call_session = build_call_session(plan)
    await call_session.start()
    for index in range(count):
        await call_session.say_text(f"go {index}")
    record = await call_session.close()
    latencies = [
        float(event.data["latency_ms"])
        for event in record.events
        if event.type == "step_entered" and "latency_ms" in event.data
    ]
    assert len(latencies) == count, (len(latencies), record.events[-5:])
    assert record.captured == {"count": count - 1}, record.captured
    return latencies


HAND_LATENCIES: list[float] = []
HAND_TRIGGERED: list[float] = []


class ScriptedLLM(llm.LLM):
    """Calls the one tool offered, with the number the caller said."""

    def chat(self, *, chat_ctx: llm.ChatContext, tools: Any = None, **kwargs: Any) -> Any:
        return ScriptedStream(self, chat_ctx=chat_ctx, tools=tools or [], **kwargs)


class ScriptedStream(llm.LLMStream):
    def __init__(self, owner: ScriptedLLM, **kwargs: Any) -> None:
        for unused in ("parallel_tool_calls", "tool_choice", "extra_kwargs"):
            kwargs.pop(unused, None)
        kwargs.setdefault("conn_options", DEFAULT_API_CONNECT_OPTIONS)
        super().__init__(owner, **kwargs)

    async def _run(self) -> None:
        last = self._chat_ctx.items[-1]
        if last.type != "message" or last.role != "user" or not self._tools:
            return
        number = (last.text_content or "0").split()[-1]
        call = FunctionToolCall(
            name=self._tools[0].info.name,
            arguments=json.dumps({"count": int(number)}),
            call_id=f"call_{number}",
        )
        self._event_ch.send_nowait(
            ChatChunk(id=number, delta=ChoiceDelta(role="assistant", tool_calls=[call]))
        )


class Ping(Agent):
    def __init__(self, chat_ctx: llm.ChatContext | None = None) -> None:
        super().__init__(instructions="You are in ping.", chat_ctx=chat_ctx)

    async def on_enter(self) -> None:
        if HAND_TRIGGERED:
            HAND_LATENCIES.append((time.perf_counter() - HAND_TRIGGERED.pop()) * 1000)

    @function_tool
    async def go_to_pong(self, context: RunContext, count: int) -> Agent:
        """Go to pong when the caller says go."""
        HAND_TRIGGERED.append(time.perf_counter())
        return Pong(chat_ctx=self.chat_ctx.copy())


class Pong(Agent):
    def __init__(self, chat_ctx: llm.ChatContext | None = None) -> None:
        super().__init__(instructions="You are in pong.", chat_ctx=chat_ctx)

    async def on_enter(self) -> None:
        if HAND_TRIGGERED:
            HAND_LATENCIES.append((time.perf_counter() - HAND_TRIGGERED.pop()) * 1000)

    @function_tool
    async def go_to_ping(self, context: RunContext, count: int) -> Agent:
        """Go to ping when the caller says go."""
        HAND_TRIGGERED.append(time.perf_counter())
        return Ping(chat_ctx=self.chat_ctx.copy())


async def hand_transitions(count: int) -> list[float]:
    """livekit's handoff as its docs write it: a tool returning the next agent."""
    HAND_LATENCIES.clear()
    session: AgentSession = AgentSession(
        llm=ScriptedLLM(), turn_handling={"turn_detection": "manual"}
    )
    await session.start(Ping())
    for index in range(count):
        await session.run(user_input=f"go {index}")
    await session.aclose()
    assert len(HAND_LATENCIES) == count, len(HAND_LATENCIES)
    return list(HAND_LATENCIES)


def synchronous_parts(snapshot: Any, registry: Any, rounds: int) -> dict[str, Any]:
    """dialplan's own synchronous work in a transition against building livekit's agent."""
    from runtime.call import CallRequest
    from runtime.flow.agents import FlowRunner
    from runtime.livekit_tools import call_tools
    from runtime.resolve import plan_call

    plan = plan_call(snapshot, CallRequest(bot="pingpong"), registry)
    call = plan.new_context()
    tools = call_tools(plan.bot, plan.tools, call)
    runner = FlowRunner(plan, call, {t.name: lk for t, lk in zip(plan.tools, tools, strict=True)})
    runner.first_agent()
    assert plan.bot.flow is not None
    transition = plan.bot.flow.steps["ping"].transitions[0]
    flow_times: list[float] = []
    hand_times: list[float] = []
    for index in range(rounds):
        started = time.perf_counter()
        runner.take_chosen(transition, {"count": index})
        flow_times.append((time.perf_counter() - started) * 1000)
        call.events.clear()
        started = time.perf_counter()
        Agent(instructions="You are in pong.", tools=[])
        hand_times.append((time.perf_counter() - started) * 1000)
    return {"dialplan_ms": summary(flow_times), "livekit_agent_ms": summary(hand_times)}


# -- (b) set-up --------------------------------------------------------------------------


async def setups(snapshot: Any, registry: Any, rounds: int) -> dict[str, list[float]]:
    from runtime.call import CallRequest
    from runtime.resolve import plan_call
    from runtime.session import build_call_session

    times: dict[str, list[float]] = {"flowbot": [], "flatbot": []}
    built: list[Any] = []

    def one(bot: str) -> float:
        started = time.perf_counter()
        plan = plan_call(snapshot, CallRequest(bot=bot, variables={"name": "Ann"}), registry)
        built.append(build_call_session(plan))
        return (time.perf_counter() - started) * 1000

    for _ in range(50):  # warm-up: every version's shared parts are worked out once
        one("flowbot"), one("flatbot")
    for session in built:
        await session.session.aclose()
    built.clear()
    gc.collect()
    gc.freeze()
    for index in range(rounds):
        order = ("flowbot", "flatbot") if index % 2 else ("flatbot", "flowbot")
        for bot in order:
            times[bot].append(one(bot))
        if len(built) >= 100:
            for session in built:
                await session.session.aclose()
            built.clear()
    for session in built:
        await session.session.aclose()
    return times


async def main(transitions: int, setup_rounds: int) -> dict[str, Any]:
    from runtime.catalog import load_catalog
    from runtime.registry import load_registry

    logging.disable(logging.WARNING)
    registry = load_registry()
    with tempfile.TemporaryDirectory() as tmp:
        bots = write_bots(Path(tmp))
        snapshot = load_catalog(bots, registry)
        assert not snapshot.problems, snapshot.problems
        await dialplan_transitions(snapshot, registry, 20)  # warm-up
        await hand_transitions(20)
        dialplan_runs: list[float] = []
        hand_runs: list[float] = []
        for _ in range(4):  # interleaved blocks: the machine's noise hits both alike
            dialplan_runs += await dialplan_transitions(snapshot, registry, transitions // 4)
            hand_runs += await hand_transitions(transitions // 4)
        sync = synchronous_parts(snapshot, registry, 2000)
        setup = await setups(snapshot, registry, setup_rounds)
    overhead = statistics.median(dialplan_runs) - statistics.median(hand_runs)
    flow_setup = statistics.median(setup["flowbot"])
    flat_setup = statistics.median(setup["flatbot"])
    relative = (flow_setup - flat_setup) / flat_setup * 100
    return {
        "benchmark": "flow_transitions",
        "machine": machine(),
        "transition": {
            "count": len(dialplan_runs),
            "dialplan_tool_to_on_enter_ms": summary(dialplan_runs),
            "livekit_handoff_tool_to_on_enter_ms": summary(hand_runs),
            "overhead_median_ms": round(overhead, 4),
            "target_ms": TARGET_TRANSITION_MS,
            "meets_target": overhead < TARGET_TRANSITION_MS,
            "synchronous_part": sync,
        },
        "setup": {
            "rounds": setup_rounds,
            "flow_bot_6_steps_ms": summary(setup["flowbot"]),
            "single_prompt_bot_ms": summary(setup["flatbot"]),
            "flow_over_single_percent": round(relative, 2),
            "target_percent": TARGET_SETUP_PERCENT,
            "meets_target": relative <= TARGET_SETUP_PERCENT,
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=400)
    parser.add_argument("--setups", type=int, default=1500)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.transitions, args.setups)), indent=2))
