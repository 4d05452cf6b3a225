"""Scenario files and `dialplan test`: real text calls, mocked tools, readable failures."""

from __future__ import annotations

import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime import CallContext, RegisterTool, ToolDefinition, hookimpl
from runtime.catalog import load_catalog
from runtime.registry import Registry, load_registry
from runtime.scenario_file import load_scenario_file
from runtime.scenario_run import run_scenario
from runtime.scenario_suite import run_suite

from ..cli_run import run_dialplan

SHOP_BOT = """
[prompt]
system = "You sell shoes."
greeting = "Shoe shop, {{ caller_name }} speaking to you."
[variables]
caller_name = "friend"
[llm]
provider = "rules"
default = "Pardon?"
[[llm.rules]]
match = "size (?P<size>\\\\d+)"
tool = "stock"
arguments = { size = "{{ match.size }}" }
reply = "We have {{ result.pairs }} pairs in size {{ match.size }}."
on_error = "Our stock system is down, sorry."
[[llm.rules]]
match = "bye"
tool = "end_call"
[[tools]]
use = "stock"
[[tools]]
use = "end_call"
goodbye = "Bye {{ caller_name }}!"
"""


class StockPlugin:
    """A tool that must never run in scenarios: every scenario mocks it."""

    @staticmethod
    @hookimpl
    def register_tools(register: RegisterTool) -> None:
        def create(options: Any, call: CallContext) -> ToolDefinition:
            async def stock(arguments: dict[str, Any], call: CallContext) -> Any:
                raise AssertionError("the real stock tool ran inside a scenario")

            return ToolDefinition(
                name="stock",
                description="pairs in stock",
                handler=stock,
                parameters={
                    "type": "object",
                    "properties": {"size": {"type": "string"}},
                    "required": ["size"],
                },
            )

        register(name="stock", factory=create)


def shop(bot_dir: Callable[..., Path], scenarios: str) -> Path:
    bots = bot_dir("shop", SHOP_BOT)
    (bots / "shop.scenarios.toml").write_text(textwrap.dedent(scenarios), encoding="utf-8")
    return bots


PASSING = """
[[scenarios]]
name = "stock answer from a mock"
variables = { caller_name = "Kim" }
expect_greeting = "Kim speaking"
[scenarios.mocks.stock]
result = { pairs = 3 }
[[scenarios.turns]]
say = "do you have size 42?"
expect_tool = { name = "stock", arguments = { size = "42" } }
expect_reply = "We have 3 pairs in size 42"
[[scenarios.turns]]
say = "bye"
expect_tool = "end_call"
expect_reply = "Bye Kim!"
expect_end = "bot"

[[scenarios]]
name = "a tool error is recovered from"
[scenarios.mocks.stock]
error = "database unreachable"
[[scenarios.turns]]
say = "size 40 please"
expect_reply = "stock system is down"
"""


async def test_passing_scenarios_with_mocked_tools(bot_dir: Callable[..., Path]) -> None:
    registry = load_registry(extra_plugins=[("stock", StockPlugin())])
    outcome = await run_suite(shop(bot_dir, PASSING), registry, out=lambda line: None)
    assert not outcome.problems
    assert [r.name for r in outcome.results] == [
        "stock answer from a mock",
        "a tool error is recovered from",
    ]
    assert outcome.passed, [r.mismatches for r in outcome.results]
    first, second = outcome.results
    assert first.record is not None and first.record.disconnected_by == "bot"
    tool_events = [e.data for e in first.record.events if e.type == "tool_call"]
    assert tool_events[0]["name"] == "stock" and tool_events[0]["arguments"] == {"size": "42"}
    assert second.record is not None
    error = next(e.data for e in second.record.events if e.type == "tool_call")
    assert error["outcome"] == "error" and error["error"] == "database unreachable"


FAILING = """
[[scenarios]]
name = "wrong expectations"
[scenarios.mocks.stock]
result = { pairs = 0 }
[[scenarios.turns]]
say = "size 39?"
expect_reply = "sold out"
expect_tool = { name = "stock", arguments = { size = "40" } }
[[scenarios.turns]]
say = "never reached"
expect_reply = "x"

[[scenarios]]
name = "expects an end that does not come"
[[scenarios.turns]]
say = "hello"
expect_end = "bot"
"""


async def test_failures_say_what_was_expected_and_what_came(
    bot_dir: Callable[..., Path],
) -> None:
    registry = load_registry(extra_plugins=[("stock", StockPlugin())])
    lines: list[str] = []
    outcome = await run_suite(shop(bot_dir, FAILING), registry, out=lines.append)
    assert not outcome.passed
    wrong, no_end = outcome.results
    assert wrong.turns_run == 1  # stops at the failing turn
    assert [(m.where, m.expected, m.got) for m in wrong.mismatches] == [
        ("turn 1", "a reply matching /sold out/", "We have 0 pairs in size 39."),
        ("turn 1", 'a call of stock{"size": "40"}', 'stock({"size": "39"})'),
    ]
    assert [(m.expected, m.got) for m in no_end.mismatches] == [
        ("the call ended (disconnected_by = bot)", "the call still going")
    ]
    report = "\n".join(lines)
    assert "FAIL  shop: wrong expectations" in report
    assert "caller said: 'size 39?'" in report
    assert "got:      We have 0 pairs in size 39." in report


def test_cli_exit_codes_report_and_junit(bot_dir: Callable[..., Path], tmp_path: Path) -> None:
    bots = bot_dir(
        "plain",
        """
        [prompt]
        system = "x"
        greeting = "Hello."
        [llm]
        provider = "rules"
        default = "I only say this."
        """,
    )
    scenario = """
    [[scenarios]]
    name = "{name}"
    [[scenarios.turns]]
    say = "hi"
    expect_reply = "{pattern}"
    """
    path = bots / "plain.scenarios.toml"
    path.write_text(textwrap.dedent(scenario.format(name="ok", pattern="only say")))
    junit = tmp_path / "out" / "junit.xml"
    passed = run_dialplan("test", "--bots", str(bots), "--junit", str(junit), cwd=tmp_path)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "1 passed, 0 failed" in passed.stderr

    path.write_text(textwrap.dedent(scenario.format(name="bad", pattern="goodbye")))
    failed = run_dialplan("test", "plain", "--bots", str(bots), "--junit", str(junit), cwd=tmp_path)
    assert failed.returncode == 1
    assert "expected: a reply matching /goodbye/" in failed.stdout
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    failure = suite.find("testcase/failure")
    assert failure is not None and "goodbye" in (failure.get("message") or "")

    missing = run_dialplan("test", "nobody", "--bots", str(bots), cwd=tmp_path)
    assert missing.returncode == 1 and "no scenario file for this bot" in missing.stdout


def test_a_turn_failing_on_a_template_is_a_clean_fail_with_junit(
    bot_dir: Callable[..., Path], tmp_path: Path
) -> None:
    bots = bot_dir(
        "pizza",
        """
        [prompt]
        system = "x"
        [llm]
        provider = "rules"
        [[llm.rules]]
        match = "pizza"
        tool = "send_dtmf"
        reply = "Ready in {{ result.eta_minutes }} minutes."
        [[tools]]
        use = "send_dtmf"
        """,
    )
    (bots / "pizza.scenarios.toml").write_text(
        textwrap.dedent(
            """
            [[scenarios]]
            name = "orders"
            mocks = { send_dtmf = { result = { ok = true } } }
            turns = [ { say = "a pizza", expect_reply = "Ready" } ]
            [[scenarios]]
            name = "later scenarios still run"
            turns = [ { say = "hello", expect_reply = "catch" } ]
            """
        )
    )
    junit = tmp_path / "junit.xml"
    run = run_dialplan("test", "--bots", str(bots), "--junit", str(junit), cwd=tmp_path)
    assert run.returncode == 1
    assert "Traceback" not in run.stdout + run.stderr  # livekit's log stays out of the report
    assert "FAIL  pizza: orders" in run.stdout and "PASS  pizza: later scenarios" in run.stdout
    assert "[the turn failed: APIError: llm.rules[0].reply: cannot render" in run.stdout
    assert "1 passed, 1 failed" in run.stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures")) == ("2", "1")


def test_broken_scenario_files_are_located(bot_dir: Callable[..., Path]) -> None:
    bots = bot_dir("shop", SHOP_BOT)
    broken = bots / "shop.scenarios.toml"
    broken.write_text('[[scenarios]]\nname = "x"\nturns = [ { say = "hi", expect_reply = "(" } ]\n')
    problems = load_scenario_file(broken)
    assert isinstance(problems, list)
    assert "scenarios[0].turns[0].expect_reply" in str(problems[0])
    assert "invalid regular expression" in str(problems[0])

    broken.write_text('[[scenarios]]\nname = "x"\nturns = [ { say = "hi", expect_rply = "a" } ]\n')
    problems = load_scenario_file(broken)
    assert isinstance(problems, list) and "did you mean `expect_reply`" in str(problems[0])

    broken.write_text("[[scenarios]\n")
    problems = load_scenario_file(broken)
    assert isinstance(problems, list) and problems[0].line == 1

    broken.write_text(
        '[[scenarios]]\nname = "x"\n'
        'turns = [ { say = "bye", expect_end = "bot" }, { say = "still here?" } ]\n'
    )
    problems = load_scenario_file(broken)
    assert isinstance(problems, list) and "move `expect_end` to the last turn" in str(problems[0])


async def test_mocking_a_tool_the_bot_does_not_bind(bot_dir: Callable[..., Path]) -> None:
    registry = load_registry(extra_plugins=[("stock", StockPlugin())])
    bots = shop(
        bot_dir,
        """
        [[scenarios]]
        name = "typo"
        mocks = { stok = { result = 1 } }
        turns = [ { say = "hi" } ]
        """,
    )
    loaded = load_scenario_file(bots / "shop.scenarios.toml")
    assert not isinstance(loaded, list)
    snapshot = load_catalog(bots, registry)
    result = await run_scenario(snapshot, registry, "shop", loaded.scenarios[0])
    assert not result.passed
    assert result.mismatches[0].where == "setup"
    assert "binds no tool 'stok'" in result.mismatches[0].got
    assert "did you mean `stock`?" in result.mismatches[0].got


async def test_shipped_bots_scenarios_pass(registry: Registry) -> None:
    from ..conftest import REPO

    outcome = await run_suite(REPO / "bots", registry, out=lambda line: None)
    assert not outcome.problems
    assert {r.bot_id for r in outcome.results} >= {"receptionist", "reminder"}
    assert outcome.passed, [(r.name, r.mismatches) for r in outcome.results if not r.passed]


async def test_intents_are_judged_by_the_judge_llm(registry: Registry) -> None:
    """The judge is any livekit LLM; here a `rules` one that approves only replies that
    promise a confirmation, so both verdicts are exercised without a cloud model."""
    from plugins.llm.rules import RulesEngine, RulesOptions
    from plugins.llm.rules_llm import RulesLLM

    from ..conftest import REPO

    verdicts = RulesOptions.model_validate(
        {
            "rules": [
                {
                    "match": "Message:\\s+\\w+ works\\. .*confirm",
                    "tool": "check_intent",
                    "arguments": {"success": True, "reason": "it confirms"},
                },
                {
                    "match": ".",
                    "tool": "check_intent",
                    "arguments": {"success": False, "reason": "no confirmation promised"},
                },
            ]
        }
    )
    scenario_file = load_scenario_file(REPO / "bots" / "receptionist.scenarios.toml")
    assert not isinstance(scenario_file, list)
    booking = next(s for s in scenario_file.scenarios if s.name.startswith("takes a booking"))
    snapshot = load_catalog(REPO / "bots", registry)

    def judge(call: CallContext) -> Any:
        return RulesLLM(RulesEngine(verdicts, {}))

    result = await run_scenario(snapshot, registry, "receptionist", booking, judge=judge)
    assert result.passed and not result.skipped, result.mismatches

    strict = booking.model_copy(
        update={"turns": [booking.turns[0].model_copy(update={"expect_intent": "confirms"})]}
    )
    result = await run_scenario(snapshot, registry, "receptionist", strict, judge=judge)
    assert [(m.where, m.expected) for m in result.mismatches] == [("turn 1", "intent: confirms")]
    assert "no confirmation promised" in result.mismatches[0].got


def test_the_callers_number_reaches_templates_from_the_command_line(
    bot_dir: Callable[..., Path], tmp_path: Path
) -> None:
    bots = bot_dir(
        "line",
        """
        [prompt]
        system = "x"
        greeting = "Hello {{ call.caller or 'stranger' }}, you called {{ call.callee }}."
        [llm]
        provider = "rules"
        """,
    )
    (bots / "line.scenarios.toml").write_text(
        '[[scenarios]]\nname = "greets by number"\nexpect_greeting = "Hello \\\\+15550142, '
        'you called \\\\+15550100"\nturns = [ { say = "hi" } ]\n'
    )
    run = run_dialplan(
        "test",
        "--bots",
        str(bots),
        "--caller",
        "+15550142",
        "--called",
        "+15550100",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    chat = run_dialplan(
        "chat",
        "line",
        "--bots",
        str(bots),
        "--caller",
        "+15550142",
        "--called",
        "+15550100",
        "--say",
        "hi",
        cwd=tmp_path,
    )
    assert "bot> Hello +15550142, you called +15550100." in chat.stdout
