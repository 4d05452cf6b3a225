"""Scenario files checked against their bot before anything runs (`dialplan validate`):
a mock or an `expect_tool` naming a tool the bot does not have, arguments its tool does
not take, steps and captured values its flow does not know. Every problem is reported,
each with the file, the key path and a fix, like a bot file's."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from runtime.call_defaults import call_defaults
from runtime.catalog import CatalogSnapshot
from runtime.compiler import CompiledBot
from runtime.errors import Problem, suggest
from runtime.flow.compile import REMEMBER_TOOL
from runtime.registry import Registry
from runtime.scenario_file import Scenario, ScenarioFile, bot_id_of, load_scenario_file
from runtime.toml_problems import with_positions
from runtime.warmup import idle_call


def check_scenario_file(
    path: Path, snapshot: CatalogSnapshot, registry: Registry
) -> tuple[ScenarioFile | None, list[Problem]]:
    loaded, problems = _check(path, snapshot, registry)
    if problems and path.is_file():
        problems = with_positions(problems, path.read_text(encoding="utf-8", errors="replace"))
    return loaded, problems


def _check(
    path: Path, snapshot: CatalogSnapshot, registry: Registry
) -> tuple[ScenarioFile | None, list[Problem]]:
    loaded = load_scenario_file(path)
    if isinstance(loaded, list):
        return None, loaded
    bot_id = loaded.bot or bot_id_of(path)
    bot = snapshot.bots.get(bot_id)
    if bot is None:
        if any(p.file is not None and p.file.stem == bot_id for p in snapshot.problems):
            return loaded, []  # the bot's own problems are reported already
        return loaded, [
            Problem(
                path,
                f"no bot {bot_id!r} to test",
                key="bot",
                fix=suggest(bot_id, sorted(snapshot.bots), what="loaded bots"),
            )
        ]
    tools = _tool_parameters(bot, registry)
    problems: list[Problem] = []
    for index, scenario in enumerate(loaded.scenarios):
        problems += _ScenarioCheck(path, f"scenarios[{index}]", bot, tools).run(scenario)
    return loaded, problems


def _tool_parameters(bot: CompiledBot, registry: Registry) -> dict[str, set[str] | None]:
    """Every tool the LLM may call in some call of this bot, with the arguments it takes
    (None: it takes any)."""
    found: dict[str, set[str] | None] = {}
    call = idle_call(bot)
    for resolved in call_defaults(bot, registry).tools:
        try:
            definition = resolved.entry.factory(
                resolved.options, call if resolved.entry.per_call else None
            )
            properties = definition.parameters.get("properties")
            found[resolved.name] = set(properties) if isinstance(properties, dict) else None
        except Exception:  # a factory that needs a live call: its arguments go unchecked
            found[resolved.name] = None
    if bot.flow is not None:  # one name may be several steps' tools: any of their arguments
        for step in bot.flow.steps.values():
            flow_tools = [(t.tool, t.captures) for t in step.taken("llm") if t.tool]
            if step.captures:
                flow_tools.append((REMEMBER_TOOL, step.captures))
            for name, captures in flow_tools:
                found[name] = (found.get(name) or set()) | set(captures)
    return found


class _ScenarioCheck:
    def __init__(
        self, path: Path, key: str, bot: CompiledBot, tools: dict[str, set[str] | None]
    ) -> None:
        self.path = path
        self.key = key
        self.bot = bot
        self.tools = tools
        self.problems: list[Problem] = []
        flow = bot.flow
        self.steps = list(flow.steps) if flow is not None else []
        self.captures = set(flow.captures) if flow is not None else set()
        self.captures |= {name for tool in bot.tools for name, _ in tool.captures}

    def problem(self, key: str, message: str, fix: str = "") -> None:
        self.problems.append(Problem(self.path, message, key=f"{self.key}.{key}", fix=fix))

    def run(self, scenario: Scenario) -> list[Problem]:
        bound = sorted(tool.name for tool in self.bot.tools)
        for name in scenario.mocks:
            if name not in bound:
                self.problem(
                    f"mocks.{name}",
                    f"bot {self.bot.id!r} binds no tool {name!r}",
                    suggest(name, bound, what="bound tools"),
                )
        if scenario.start_step is not None:
            self.step("start_step", scenario.start_step)
        self.captured("captured", scenario.captured)
        for number, turn in enumerate(scenario.turns):
            where = f"turns[{number}]"
            if turn.expect_tool is not None:
                self.expected_tool(
                    f"{where}.expect_tool", turn.expect_tool.name, turn.expect_tool.arguments
                )
            if turn.expect_step is not None:
                self.step(f"{where}.expect_step", turn.expect_step)
            self.captured(f"{where}.expect_captured", turn.expect_captured or {})
        return self.problems

    def step(self, key: str, name: str) -> None:
        if not self.steps:
            self.problem(
                key, f"bot {self.bot.id!r} has no flow", "drop it, or give the bot a [flow]"
            )
        elif name not in self.steps:
            self.problem(key, f"no step named {name!r}", suggest(name, self.steps, what="steps"))

    def captured(self, key: str, values: dict[str, Any]) -> None:
        for name in values:
            if name not in self.captures:
                self.problem(
                    f"{key}.{name}",
                    f"bot {self.bot.id!r} captures no value {name!r}",
                    suggest(name, sorted(self.captures), what="captured values"),
                )

    def expected_tool(self, key: str, name: str, arguments: dict[str, Any] | None) -> None:
        if name not in self.tools:
            self.problem(
                f"{key}.name",
                f"bot {self.bot.id!r} has no tool {name!r}",
                suggest(name, sorted(self.tools), what="its tools"),
            )
            return
        takes = self.tools[name]
        if takes is None:
            return  # a tool that takes any arguments
        for argument in sorted(set(arguments or {}) - takes):
            self.problem(
                f"{key}.arguments.{argument}",
                f"tool {name!r} takes no argument {argument!r}",
                suggest(argument, sorted(takes), what="its arguments"),
            )


def scenario_files_in(paths: Iterable[Path]) -> list[Path]:
    """Scenario files named by PATHs: given as files, or beside the bots in directories."""
    from runtime.catalog import SCENARIO_SUFFIX

    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(path.glob(f"*{SCENARIO_SUFFIX}"))
        elif path.name.endswith(SCENARIO_SUFFIX):
            found.append(path)
    return found
