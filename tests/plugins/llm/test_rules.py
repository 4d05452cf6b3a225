from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from plugins.llm.rules import RulesEngine, RulesOptions
from runtime.catalog import load_catalog
from runtime.registry import Registry


def engine(**options: object) -> RulesEngine:
    return RulesEngine(RulesOptions.model_validate(options), {"clinic": "Bright"})


def test_first_matching_rule_wins_case_insensitively() -> None:
    rules = engine(
        rules=[
            {"match": "hours", "reply": "9 to 5 at {{ clinic }}"},
            {"match": "hours|open", "reply": "second"},
        ]
    )
    assert rules.respond("What are your HOURS?").text == "9 to 5 at Bright"
    assert rules.respond("are you open").text == "second"


def test_default_and_opening() -> None:
    rules = engine(default="Pardon: {{ utterance }}?", opening="Hello from {{ clinic }}")
    assert rules.respond("mumble").text == "Pardon: mumble?"
    assert rules.opening().text == "Hello from Bright"


def test_tool_rule_renders_arguments_from_match_groups() -> None:
    rules = engine(
        rules=[
            {
                "match": r"(?P<day>monday|friday)",
                "tool": "book",
                "arguments": {"day": "{{ match.day }}", "slots": 2},
                "reply": "Booked {{ result.day }}",
            }
        ]
    )
    reply = rules.respond("Friday please")
    assert (reply.tool, reply.arguments, reply.rule_index) == (
        "book",
        {"day": "Friday", "slots": 2},
        0,
    )
    assert rules.after_tool(0, '{"day": "Friday"}', is_error=False).text == "Booked Friday"


def test_tool_error_uses_on_error_then_default() -> None:
    rules = engine(
        default="Sorry.",
        rules=[
            {"match": "a", "tool": "t", "on_error": "Could not: {{ error }}"},
            {"match": "b", "tool": "t"},
        ],
    )
    assert rules.after_tool(0, "timeout", is_error=True).text == "Could not: timeout"
    assert rules.after_tool(1, "timeout", is_error=True).text == "Sorry."


def test_variables_render_as_data() -> None:
    rules = RulesEngine(RulesOptions(default="{{ name }}"), {"name": "{{ 7*7 }}"})
    assert rules.respond("x").text == "{{ 7*7 }}"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rules": [{"match": "(unclosed"}]}, "invalid regular expression"),
        ({"rules": [{"match": "x", "reply": "{% if %}"}]}, "template syntax error"),
        ({"rules": [{"match": "x", "answer": "y"}]}, "Extra inputs are not permitted"),
        ({"defualt": "x"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RulesOptions.model_validate(options)


def test_referenced_tools_for_validation() -> None:
    options = RulesOptions.model_validate(
        {"rules": [{"match": "a", "reply": "x"}, {"match": "b", "tool": "end_call"}]}
    )
    assert options.referenced_tools() == {"rules[1].tool": "end_call"}


def test_replies_may_only_read_declared_variables(
    registry: Registry, bot_dir: Callable[..., Path]
) -> None:
    bots = bot_dir(
        "typo",
        """
        [prompt]
        system = "x"
        [variables]
        clinic = "Bright Smile"
        [llm]
        provider = "rules"
        default = "This is {{ clinc }}."
        [[llm.rules]]
        match = "(?P<day>monday)"
        reply = "{{ match.day }} at {{ clinic }}, {{ utterance }}"
        [[llm.rules]]
        match = "bye"
        tool = "end_call"
        arguments = { reason = "{{ mood }}" }
        [[tools]]
        use = "end_call"
        goodbye = "Bye from {{ clnic }}!"
        """,
    )
    problems = sorted(str(p).split(": ", 1)[1] for p in load_catalog(bots, registry).problems)
    assert problems == [
        "llm.default: uses undefined variable `clinc` "
        "(declare it under [variables]; did you mean `clinic`? declared: clinic)",
        "llm.rules[1].arguments.reason: uses undefined variable `mood` "
        "(declare it under [variables]; declared: clinic)",
        "tools[0].goodbye: uses undefined variable `clnic` "
        "(declare it under [variables]; did you mean `clinic`? "
        "declared: clinic)",
    ]


# -- templates that fail: found at validation where the pattern says, else per turn -----


def test_a_match_group_the_pattern_does_not_have_is_a_validation_error() -> None:
    with pytest.raises(ValidationError) as failure:
        RulesOptions.model_validate(
            {
                "rules": [
                    {
                        "match": "(?P<topping>pepperoni|cheese)",
                        "tool": "order",
                        "arguments": {"topping": "{{ match.toping }}"},
                    }
                ]
            }
        )
    message = str(failure.value)
    assert "arguments.topping reads match.toping" in message
    assert "no group named 'toping' (its named groups: topping" in message


def test_match_text_and_the_patterns_groups_are_fine() -> None:
    RulesOptions.model_validate(
        {"rules": [{"match": "(?P<day>mon)", "reply": "{{ match.day }} / {{ match['text'] }}"}]}
    )


def test_a_reply_reading_result_without_a_tool_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="reply reads `result`, which only a rule that"):
        RulesOptions.model_validate({"rules": [{"match": "hours", "reply": "{{ result.x }}"}]})


def test_a_reply_failing_on_the_tools_result_says_on_error_instead() -> None:
    rules = engine(
        rules=[
            {
                "match": "pizza",
                "tool": "order",
                "reply": "Ready in {{ result.eta_minutes }} minutes.",
                "on_error": "Ordered, but I cannot say when ({{ error }}).",
            }
        ]
    )
    rules.respond("a pizza")
    said = rules.after_tool(0, '{"ok": true}', is_error=False).text
    assert said.startswith("Ordered, but I cannot say when (llm.rules[0].reply: cannot render")
    assert "has no attribute 'eta_minutes'" in said


def test_a_reply_failing_with_no_on_error_fails_the_turn_with_its_cause() -> None:
    from plugins.llm.rules import RuleFailed

    rules = engine(rules=[{"match": "pizza", "tool": "order", "reply": "{{ result.eta }}"}])
    rules.respond("a pizza")
    with pytest.raises(RuleFailed, match=r"llm\.rules\[0\]\.reply: cannot render"):
        rules.after_tool(0, '{"ok": true}', is_error=False)


async def test_a_failing_rule_fails_its_turn_and_the_scenario_suite_goes_on(
    bot_dir: Callable[..., Path], registry: Registry, tmp_path: Path
) -> None:
    from runtime.scenario_suite import run_suite

    bots = bot_dir(
        "pizza",
        """
        [prompt]
        system = "Pizza."
        [llm]
        provider = "rules"
        [[llm.rules]]
        match = "pizza"
        tool = "order"
        reply = "Ready in {{ result.eta_minutes }} minutes."
        [[llm.rules]]
        match = "hours"
        reply = "Noon to midnight."
        [[tools]]
        use = "send_dtmf"
        name = "order"
        """,
    )
    (bots / "pizza.scenarios.toml").write_text(
        """
[[scenarios]]
name = "orders"
[scenarios.mocks.order]
result = { ok = true }
[[scenarios.turns]]
say = "a pizza please"
expect_reply = "Ready"

[[scenarios]]
name = "hours"
[[scenarios.turns]]
say = "hours?"
expect_reply = "Noon"
"""
    )
    lines: list[str] = []
    outcome = await run_suite(bots, registry, out=lines.append)
    failed, passed = outcome.results
    assert (failed.passed, passed.passed) == (False, True)
    [mismatch] = failed.mismatches
    assert mismatch.got.startswith("(nothing) [the turn failed: ")
    assert "llm.rules[0].reply: cannot render" in mismatch.got
    assert failed.record is not None
    assert any(e.type == "turn_failed" for e in failed.record.events)
