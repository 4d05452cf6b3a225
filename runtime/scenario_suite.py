"""`dialplan test`: every scenario file beside the bots, run against one catalog snapshot."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from runtime.catalog import load_catalog
from runtime.errors import Problem, suggest
from runtime.registry import Registry
from runtime.scenario_file import bot_id_of, load_scenario_file, scenario_files
from runtime.scenario_report import print_result
from runtime.scenario_run import Hear, ScenarioResult, run_scenario

if TYPE_CHECKING:
    from livekit.agents import llm

    from runtime.call import CallContext


@dataclass
class SuiteOutcome:
    results: list[ScenarioResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # unreadable files, broken bots

    @property
    def passed(self) -> bool:
        return not self.problems and all(result.passed for result in self.results)


async def run_suite(
    bots_dir: Path,
    registry: Registry,
    *,
    bot_ids: list[str] | None = None,
    prompts_dir: Path | None = None,
    judge_model: str | None = None,
    out: Callable[[str], None] = print,
    caller: str | None = None,
    callee: str | None = None,
    scenarios: Path | None = None,
    hear: Hear | None = None,
) -> SuiteOutcome:
    """``caller``/``callee``: both ends of every scenario's line, unless it names its own.
    ``scenarios``: a scenario file, or a directory of them, instead of those beside the
    bots. ``hear``: what the bot hears of each caller line (`dialplan test --voice`)."""
    outcome = SuiteOutcome()
    snapshot = load_catalog(bots_dir, registry, prompts_dir=prompts_dir)
    if scenarios is not None and scenarios.is_file():
        files = [scenarios]
    else:
        files = scenario_files(scenarios or bots_dir, bot_ids)
    for bot_id in bot_ids or []:
        if not any(bot_id_of(path) == bot_id for path in files):
            outcome.problems.append(
                Problem(bots_dir / f"{bot_id}.scenarios.toml", "no scenario file for this bot")
            )
    judge = _judge(registry, judge_model) if judge_model else None
    for path in files:
        loaded = load_scenario_file(path)
        if isinstance(loaded, list):
            outcome.problems.extend(loaded)
            continue
        bot_id = loaded.bot or bot_id_of(path)
        if bot_id not in snapshot.bots:
            broken = [p for p in snapshot.problems if p.file and p.file.stem == bot_id]
            outcome.problems.extend(
                broken
                or [
                    Problem(
                        path,
                        f"no bot {bot_id!r} to test",
                        key="bot",
                        fix=suggest(bot_id, sorted(snapshot.bots), what="loaded bots"),
                    )
                ]
            )
            continue
        out(f"{path}")
        for scenario in loaded.scenarios:
            if scenario.caller is None and scenario.callee is None and (caller or callee):
                scenario = scenario.model_copy(update={"caller": caller, "callee": callee})
            result = await run_scenario(
                snapshot, registry, bot_id, scenario, judge=judge, hear=hear
            )
            print_result(result, out)
            outcome.results.append(result)
    return outcome


def _judge(registry: Registry, model: str) -> Callable[[CallContext], llm.LLM]:
    """Builds the LLM that judges `expect_intent`, with the litellm provider plugin (the
    model's credentials come from the environment, as for any bot)."""
    entry = registry.provider("llm", "litellm")
    options = entry.options.model_validate({"model": model, "temperature": 0})

    def build(call: CallContext) -> llm.LLM:
        judge: llm.LLM = entry.factory(options, call)
        return judge

    return build
