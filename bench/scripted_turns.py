"""Scripted turns benchmark: 100 caller turns through a real text-mode AgentSession with the
shipped receptionist bot and its `rules` LLM (what `dialplan test` runs for every scenario).

Times (a) one call of 100 turns (`say_text` each: the turn, the rule, the reply, the
transcript and timeline bookkeeping) and (b) the same 100 turns as 20 scenarios of 5
turns each through the scenario runner (call set-up and teardown included).

Target: 100 turns under 2 s.

    uv run python bench/scripted_turns.py [--turns 100] [--reps 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

from bench_stats import machine, percentile

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

TARGET_S = 2.0
LINES = (
    "What are your opening hours?",
    "And where are you located?",
    "I'd like to book a cleaning.",
    "Tuesday would be great.",
    "Do you sell bicycles?",
)


async def one_call(snapshot: object, registry: object, turns: int) -> tuple[float, list[float]]:
    from runtime.call import CallRequest
    from runtime.resolve import plan_call
    from runtime.session import build_call_session

    started = time.perf_counter()
    plan = plan_call(snapshot, CallRequest(bot="receptionist"), registry)  # type: ignore[arg-type]
    call_session = build_call_session(plan)
    await call_session.start()
    await call_session.session.wait_for_idle()
    per_turn: list[float] = []
    for index in range(turns):
        turn_started = time.perf_counter()
        await call_session.say_text(LINES[index % len(LINES)])
        per_turn.append((time.perf_counter() - turn_started) * 1000)
    record = await call_session.close()
    assert len(record.transcript) == 1 + 2 * turns, len(record.transcript)
    return time.perf_counter() - started, per_turn


async def as_scenarios(snapshot: object, registry: object, turns: int) -> float:
    from runtime.scenario_file import Scenario, Turn
    from runtime.scenario_run import run_scenario

    per_scenario = 5
    scenarios = [
        Scenario(
            name=f"bench {n}",
            turns=[Turn(say=LINES[i % len(LINES)], expect_reply=".") for i in range(per_scenario)],
        )
        for n in range(turns // per_scenario)
    ]
    started = time.perf_counter()
    for scenario in scenarios:
        result = await run_scenario(snapshot, registry, "receptionist", scenario)  # type: ignore[arg-type]
        assert result.passed, result.mismatches
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.WARNING)

    from runtime.catalog import load_catalog
    from runtime.registry import load_registry

    registry = load_registry()
    snapshot = load_catalog(ROOT / "bots", registry)
    await one_call(snapshot, registry, 5)  # warm-up: first-use imports and compiles

    call_totals: list[float] = []
    turn_ms: list[float] = []
    scenario_totals: list[float] = []
    for _ in range(args.reps):
        total, per_turn = await one_call(snapshot, registry, args.turns)
        call_totals.append(total)
        turn_ms.extend(per_turn)
        scenario_totals.append(await as_scenarios(snapshot, registry, args.turns))

    median_call = statistics.median(call_totals)
    median_scenarios = statistics.median(scenario_totals)
    print(
        json.dumps(
            {
                "benchmark": "scripted_turns",
                "bot": "receptionist (rules LLM)",
                "turns": args.turns,
                "reps": args.reps,
                "one_call_total_s": {
                    "median": round(median_call, 3),
                    "max": round(max(call_totals), 3),
                },
                "per_turn_ms": {
                    "median": round(statistics.median(turn_ms), 3),
                    "p90": round(percentile(turn_ms, 90), 3),
                    "p99": round(percentile(turn_ms, 99), 3),
                },
                "as_scenarios_total_s": {
                    "median": round(median_scenarios, 3),
                    "scenarios": args.turns // 5,
                    "max": round(max(scenario_totals), 3),
                },
                "target_s": TARGET_S,
                "meets_target": max(median_call, median_scenarios) < TARGET_S,
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
