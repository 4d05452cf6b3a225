"""Per-call setup benchmark: dialplan's call building versus the same AgentSession by hand.

(a) dialplan: ``CallRequest(bot="receptionist", variables=...)`` + ``plan_call(...)`` +
    ``build_call_session(plan)``: request validation, providers, tools, rendered prompts,
    ending lines, the opening-hours check, Agent, AgentSession and the listeners that keep
    the call record.
(b) by hand, the same session: what a livekit-agents developer writes for this bot without
    dialplan. Per call: the variables merged over the bot's defaults, the opening-hours
    check (zoneinfo), the prompt and greeting rendered from the bot's Jinja templates
    (plain ``jinja2.Environment``, compiled once), ``RulesLLM(RulesEngine(...))``, the two
    tools the bot binds (``end_call`` and ``transfer_call``, as raw function tools), the
    ``Agent`` and ``AgentSession`` with the bot's turn settings, and a transcript listener.
    The targets compare (a) with (b).
(c) by hand, minimal: one tool, the prompt rendered once up front, no schedule check and
    no listener: not the same session (the bot has two tools and per-call variables), kept
    as the floor livekit-agents itself sets.

The bots are a copy of bots/ whose receptionist is open around the clock, so the call is
answered (and greets) whatever day and hour the benchmark runs; its schedule check still
runs on every call. All variants run interleaved (rotating order) inside a running asyncio
loop, after a warm-up; only the synchronous construction is timed; sessions are closed
outside the timed region. After warm-up the long-lived heap (livekit, catalog) is frozen
with ``gc.freeze()``, as a production worker does. Also reported: ``plan_call`` alone, and
"start the session and get the greeting" (``await cs.start()`` + ``wait_for_idle()``).

Targets: dialplan's overhead over the same session by hand <= 10 % and < 5 ms at the median.

    uv run python bench/call_setup.py [--iterations 1500] [--start-iterations 300]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import logging
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
import warnings
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_stats import percentile, summary

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

BOT = "receptionist"
VARIABLES: dict[str, Any] = {"caller_name": "Alex", "clinic_hours": "Mon-Sat, 8 am to 6 pm"}
TARGET_RELATIVE = 10.0  # percent
TARGET_ABSOLUTE_MS = 5.0


def rss_mib() -> float:
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError):
        return float("nan")


OPEN_ALL_WEEK = '"mon-sun" = "00:00-24:00"'


def open_bots(into: Path) -> Path:
    """A copy of bots/ and prompts/ whose receptionist is open at any hour."""
    shutil.copytree(ROOT / "prompts", into / "prompts")
    shutil.copytree(ROOT / "bots", into / "bots")
    path = into / "bots" / f"{BOT}.toml"
    text = path.read_text()
    hours = re.compile(r"^hours = \{.*\}$", re.MULTILINE)
    assert hours.search(text), "the receptionist's [schedule] hours line moved"
    path.write_text(hours.sub(f"hours = {{ {OPEN_ALL_WEEK} }}", text))
    return into / "bots"


class Bench:
    """The ways of building one call, sharing the registry, snapshot and options."""

    def __init__(self, bots: Path) -> None:
        from livekit.agents import Agent, AgentSession, llm

        from plugins.llm.rules import RulesEngine, RulesOptions
        from plugins.llm.rules_llm import RulesLLM
        from runtime.call import CallRequest
        from runtime.catalog import load_catalog
        from runtime.registry import load_registry
        from runtime.resolve import plan_call
        from runtime.session import build_call_session

        self.registry = load_registry()
        self.snapshot = load_catalog(bots, self.registry)
        assert not self.snapshot.problems, self.snapshot.problems
        self.CallRequest = CallRequest
        self.plan_call = plan_call
        self.build_call_session = build_call_session
        self.Agent, self.AgentSession, self.llm = Agent, AgentSession, llm
        self.RulesEngine, self.RulesLLM = RulesEngine, RulesLLM

        # what a hand-written agent would hard-code: the same rules, prompt and turn options
        plan = self.new_plan()
        assert plan.outside_hours is None, plan.outside_hours
        bot = plan.bot.bot
        self.rules_options = RulesOptions.model_validate(bot.llm.options())
        self.instructions = plan.prompt.instructions
        self.greeting = plan.prompt.greeting
        self.defaults = bot.defaults()
        self.variables = dict(plan.variables)
        self.max_tool_steps = bot.limits.max_tool_steps
        assert bot.schedule is not None
        self.zone = zoneinfo.ZoneInfo(bot.schedule.timezone)
        self.open_hours = (dt.time(0, 0), dt.time.max)
        turn = bot.turn
        self.turn_handling: dict[str, Any] = {
            "turn_detection": "manual",
            "endpointing": {
                "min_delay": turn.min_endpointing_delay,
                "max_delay": turn.max_endpointing_delay,
            },
            "interruption": {
                "enabled": turn.allow_interruptions,
                "min_duration": turn.min_interruption_duration,
            },
        }
        self.end_call_schema = {
            "name": "end_call",
            "description": "End the call. Use it when the caller says goodbye or the "
            "conversation is finished.",
            "parameters": {
                "type": "object",
                "properties": {"reason": {"type": "string", "description": "why the call ends"}},
                "required": [],
            },
        }
        self.transfer_schema = {
            "name": "transfer_call",
            "description": "Transfer the caller to a person.",
            "parameters": {"type": "object", "properties": {}, "required": []},
        }
        # the bot's own templates, in a plain Jinja environment, compiled once
        import jinja2

        from runtime.templates import is_file_reference

        plain = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(bots.parent / "prompts")),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            autoescape=False,
        )

        def template(value: str) -> jinja2.Template:
            if is_file_reference(value):
                return plain.get_template(value.strip())
            return plain.from_string(value)

        self.static_prompt = plan.prompt.static
        self.context_template = template(bot.prompt.context)
        self.greeting_template = template(bot.prompt.greeting)
        self.bot_info = plan.bot.bot_info()
        rendered = self.render_prompt(self.variables)
        assert rendered == (self.instructions, self.greeting), rendered

        class HandAgent(Agent):
            def __init__(self, *, instructions: str, tools: list[Any], greeting: str) -> None:
                super().__init__(instructions=instructions, tools=tools)
                self.greeting = greeting

            async def on_enter(self) -> None:
                self.session.say(self.greeting)

        self.HandAgent = HandAgent
        same = self.hand_call()[0]
        assert sorted(t.id for t in same.tools) == sorted(t.name for t in plan.tools), same.tools

    # -- (a) dialplan ------------------------------------------------------------------
    def new_plan(self) -> Any:
        request = self.CallRequest(bot=BOT, variables=VARIABLES)
        return self.plan_call(self.snapshot, request, self.registry)

    def dialplan_call(self) -> Any:
        return self.build_call_session(self.new_plan())

    # -- (b) by hand, the same session ---------------------------------------------------
    def render_prompt(self, variables: dict[str, Any]) -> tuple[str, str]:
        call = {"transport": "text", "now": dt.datetime.now(dt.timezone.utc).isoformat()}
        context = {**variables, "bot": self.bot_info, "call": call}
        per_call = self.context_template.render(context).strip()
        instructions = f"{self.static_prompt}\n\n{per_call}" if per_call else self.static_prompt
        return instructions, self.greeting_template.render(context).strip()

    def hand_call(self) -> tuple[Any, Any]:
        llm = self.llm
        variables = {**self.defaults, **VARIABLES}
        now = dt.datetime.now(self.zone).time()
        opens, closes = self.open_hours
        if not opens <= now < closes:
            raise RuntimeError("closed")  # the bench's receptionist never is
        instructions, greeting = self.render_prompt(variables)
        rules_llm = self.RulesLLM(self.RulesEngine(self.rules_options, variables))
        outcome: dict[str, Any] = {}

        async def end_call(raw_arguments: dict[str, Any]) -> Any:
            outcome["ended"] = raw_arguments.get("reason")
            raise llm.StopResponse()

        async def transfer_call(raw_arguments: dict[str, Any]) -> Any:
            outcome["transfer_to"] = variables["front_desk"]
            raise llm.StopResponse()

        tools = [
            llm.function_tool(end_call, raw_schema=self.end_call_schema),
            llm.function_tool(transfer_call, raw_schema=self.transfer_schema),
        ]
        agent = self.HandAgent(instructions=instructions, tools=tools, greeting=greeting)
        session = self.hand_session(rules_llm)
        transcript: list[tuple[str, str]] = []

        def on_item(event: Any) -> None:
            if isinstance(event.item, llm.ChatMessage):
                transcript.append((event.item.role, event.item.text_content or ""))

        session.on("conversation_item_added", on_item)
        return agent, session

    def hand_session(self, rules_llm: Any) -> Any:
        """The AgentSession both hand-written variants construct, with the bot's settings."""
        return self.AgentSession(
            llm=rules_llm,
            vad=None,
            user_away_timeout=None,
            turn_handling=self.turn_handling,  # type: ignore[arg-type]
            max_tool_steps=self.max_tool_steps,
        )

    # -- (c) by hand, minimal -------------------------------------------------------------
    def minimal_call(self) -> tuple[Any, Any]:
        llm = self.llm
        rules_llm = self.RulesLLM(self.RulesEngine(self.rules_options, dict(self.variables)))
        ended: dict[str, Any] = {}

        async def end_call(raw_arguments: dict[str, Any]) -> Any:
            ended["reason"] = raw_arguments.get("reason")
            raise llm.StopResponse()

        tool = llm.function_tool(end_call, raw_schema=self.end_call_schema)
        agent = self.HandAgent(instructions=self.instructions, tools=[tool], greeting=self.greeting)
        session = self.hand_session(rules_llm)
        return agent, session


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return (time.perf_counter() - started) * 1000, result


async def construction(bench: Bench, iterations: int, warmup: int) -> dict[str, Any]:
    builders: dict[str, Callable[[], Any]] = {
        "dialplan": bench.dialplan_call,
        "hand": bench.hand_call,
        "minimal": bench.minimal_call,
    }
    samples: dict[str, list[float]] = {name: [] for name in builders}
    names = list(builders)
    rss_before = 0.0
    for index in range(warmup + iterations):
        if index == warmup:
            gc.collect()
            gc.freeze()  # the long-lived heap (livekit, catalog) out of GC scans, as in prod
            rss_before = rss_mib()
        shift = index % len(names)  # rotate the order so no variant always runs first
        for name in names[shift:] + names[:shift]:
            elapsed, built = timed(builders[name])
            session = built.session if name == "dialplan" else built[1]
            await session.aclose()  # never started: returns at once; outside the timing
            if index >= warmup:
                samples[name].append(elapsed)
        if index % 100 == 99:
            gc.collect()  # outside the timed regions; keeps the heap from drifting
    gc.collect()
    rss_after = rss_mib()
    dialplan = statistics.median(samples["dialplan"])
    hand = statistics.median(samples["hand"])
    minimal = statistics.median(samples["minimal"])
    overhead = dialplan - hand
    relative = 100 * overhead / hand
    return {
        "iterations_each": iterations,
        "warmup_each": warmup,
        "dialplan_plan_and_build_ms": summary(samples["dialplan"]),
        "hand_written_same_session_ms": summary(samples["hand"]),
        "hand_written_minimal_ms": summary(samples["minimal"]),
        "overhead_ms_median": round(overhead, 4),
        "overhead_pct_median": round(relative, 1),
        "overhead_ms_p90": round(
            percentile(samples["dialplan"], 90) - percentile(samples["hand"], 90), 4
        ),
        "overhead_vs_minimal_ms_median": round(dialplan - minimal, 4),
        "overhead_vs_minimal_pct_median": round(100 * (dialplan - minimal) / minimal, 1),
        "meets_target": overhead < TARGET_ABSOLUTE_MS and relative <= TARGET_RELATIVE,
        "meets_absolute_target": overhead < TARGET_ABSOLUTE_MS,
        "meets_relative_target": relative <= TARGET_RELATIVE,
        "rss_mib_before_after": [rss_before, rss_after],
    }


def plan_only(bench: Bench, iterations: int) -> dict[str, Any]:
    for _ in range(50):
        bench.new_plan()
    samples = [timed(bench.new_plan)[0] for _ in range(iterations)]
    build_samples: list[float] = []
    plans = [bench.new_plan() for _ in range(200)]
    for plan in plans:
        elapsed, _ = timed(lambda plan=plan: bench.build_call_session(plan))
        build_samples.append(elapsed)
    return {
        "plan_call_ms": summary(samples),
        "build_call_session_ms": summary(build_samples),
    }


async def start_and_greet(bench: Bench, iterations: int, warmup: int) -> dict[str, Any]:
    dialplan_ms: list[float] = []
    hand_ms: list[float] = []
    greeted = True
    for index in range(warmup + iterations):
        order = ("dialplan", "hand") if index % 2 == 0 else ("hand", "dialplan")
        for which in order:
            if which == "dialplan":
                started = time.perf_counter()
                call_session = bench.dialplan_call()
                await call_session.start()
                await call_session.session.wait_for_idle()
                elapsed = (time.perf_counter() - started) * 1000
                greeted = greeted and any(e.role == "bot" for e in call_session.call.transcript)
                await call_session.close()
                if index >= warmup:
                    dialplan_ms.append(elapsed)
            else:
                started = time.perf_counter()
                agent, session = bench.hand_call()
                await session.start(agent)
                await session.wait_for_idle()
                elapsed = (time.perf_counter() - started) * 1000
                await session.aclose()
                if index >= warmup:
                    hand_ms.append(elapsed)
        if index % 20 == 19:
            gc.collect()
    dialplan = statistics.median(dialplan_ms)
    hand = statistics.median(hand_ms)
    return {
        "iterations_each": iterations,
        "dialplan_build_start_greet_ms": summary(dialplan_ms),
        "hand_written_build_start_greet_ms": summary(hand_ms),
        "overhead_ms_median": round(dialplan - hand, 3),
        "overhead_pct_median": round(100 * (dialplan - hand) / hand, 1),
        "greeting_in_transcript": greeted,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="call_setup_") as scratch:
        bench = Bench(open_bots(Path(scratch)))
    setup_ms = (time.perf_counter() - started) * 1000
    result: dict[str, Any] = {
        "benchmark": "call_setup",
        "bot": BOT,
        "setup_ms_imports_registry_catalog": round(setup_ms, 1),
    }
    result["construction"] = await construction(bench, args.iterations, args.warmup)
    result["components"] = plan_only(bench, args.iterations)
    result["start_and_greeting"] = await start_and_greet(bench, args.start_iterations, warmup=10)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--start-iterations", type=int, default=300)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # livekit logs a line per session start/close
    warnings.simplefilter("ignore")
    started = time.perf_counter()
    result = asyncio.run(run(args))
    result["targets"] = {"overhead_pct_max": TARGET_RELATIVE, "overhead_ms_max": TARGET_ABSOLUTE_MS}
    result["total_s"] = round(time.perf_counter() - started, 1)
    result["machine"] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
