"""Captured values in a flow: their declarations (types, one name with two types), the
conditions over them, a tool's `capture` expressions, and the runtime's own check of what
a transition or `remember` accepts from the LLM (`check_values`)."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.catalog import load_catalog
from runtime.flow.captures import (
    CaptureError,
    LazyExpression,
    check_values,
)
from runtime.flow.schema import CaptureSpec
from runtime.registry import Registry
from tests.runtime.flow_bots import LOOKUP, TOOLS, BotDir, bot, only, problems, valid

# -- captures ----------------------------------------------------------------------------

CAPTURE_FLOW = """
[flow]
start = "triage"
global_tools = ["end_call"]
[steps.triage]
instructions = "Ask what the caller needs."
[[steps.triage.next]]
to = "triage"
when = "the caller says when"
capture = {{ {captures} }}
"""


@pytest.mark.parametrize(
    ("captures", "key", "message"),
    [
        (
            'day = { type = "date" }',
            "day.type",
            '\'date\' is not a capture type: use "string", "number", "bool", "list" or a list '
            'of allowed values (e.g. ["morning", "afternoon"])',
        ),
        (
            "slot = []",
            "slot.type",
            "an empty list of allowed values allows nothing: list the values the LLM may give "
            '(e.g. ["morning", "afternoon"]), or use type = "string"',
        ),
        (
            'slot = ["morning", "evening", "morning"]',
            "slot.type",
            "'morning' is listed twice: list each allowed value once",
        ),
        (
            "count = 3",
            "count.type",
            '3 is not a capture type: use "string", "number", "bool", "list" or a list of '
            'allowed values (e.g. ["morning", "afternoon"])',
        ),
        (
            '"first name" = "string"',
            "",
            "'first name' is not a valid capture name (letters, digits, _)",
        ),
    ],
)
def test_invalid_capture_declarations(
    bot_dir: BotDir, registry: Registry, captures: str, key: str, message: str
) -> None:
    problem = only(problems(bot_dir, registry, bot(CAPTURE_FLOW.format(captures=captures))))
    assert problem.key == "steps.triage.next[0].capture" + (f".{key}" if key else "")
    assert problem.message == message


def test_invalid_capture_type_in_a_step_capture(bot_dir: BotDir, registry: Registry) -> None:
    flow = """
    [flow]
    start = "triage"
    global_tools = ["end_call"]
    [steps.triage]
    instructions = "Take a number."
    capture = { callback = "phone" }
    """
    problem = only(problems(bot_dir, registry, bot(flow)))
    assert problem.key == "steps.triage.capture.callback.type"
    assert problem.message.startswith("'phone' is not a capture type: use \"string\"")


def test_one_capture_name_with_two_types(bot_dir: BotDir, registry: Registry) -> None:
    flow = """
    [flow]
    start = "triage"
    global_tools = ["end_call"]
    [steps.triage]
    instructions = "Ask how many people come."
    capture = { party = "number" }
    [[steps.triage.next]]
    to = "triage"
    when = "the caller names the party"
    capture = { party = "string" }
    """
    problem = only(problems(bot_dir, registry, bot(flow)))
    assert problem.key == "steps.triage.next[0].capture.party"
    assert problem.message == (
        "captures 'party' as 'string', but steps.triage.capture.party captures it as 'number'"
    )
    assert problem.fix == "give one value one type (or rename one of them)"


def test_one_capture_name_with_the_same_allowed_values_in_another_order(
    bot_dir: BotDir, registry: Registry
) -> None:
    flow = """
    [flow]
    start = "triage"
    global_tools = ["end_call"]
    [steps.triage]
    instructions = "Ask for a time of day."
    capture = { slot = ["morning", "afternoon"] }
    [[steps.triage.next]]
    to = "triage"
    when = "the caller names a time of day"
    capture = { slot = ["afternoon", "morning"] }
    """
    valid(bot_dir, registry, bot(flow))


# -- conditions --------------------------------------------------------------------------

CONDITION_FLOW = """
[flow]
start = "triage"
global_tools = ["end_call", "lookup"]
[steps.triage]
instructions = "Look the caller up."
capture = {{ name = "string" }}
[[steps.triage.next]]
to = "triage"
{trigger}
"""


@pytest.mark.parametrize(
    ("trigger", "message", "fix"),
    [
        (
            'if = "captured.name =="',
            "invalid condition 'captured.name ==': unexpected 'end of template'",
            "write a Jinja expression",
        ),
        (
            "if = \"captured.name }} {{ 'x'\"",
            "invalid condition \"captured.name }} {{ 'x'\": chunk after expression",
            "write a Jinja expression",
        ),
        (
            'if = "capturd.name"',
            "unknown name `capturd` in 'capturd.name'",
            "did you mean `captured`? names a condition can read: captured, step",
        ),
        (
            'if = "result.found"',  # `result` is a tool's answer: only `after` one
            "unknown name `result` in 'result.found'",
            "names a condition can read: captured, step",
        ),
        (
            'after = "lookup"\nif = "reslt.found"',
            "unknown name `reslt` in 'reslt.found'",
            "did you mean `result`? names a condition can read: captured, result, step",
        ),
        (
            'if = "captured.name | lenght > 2"',
            "invalid condition 'captured.name | lenght > 2': no filter named 'lenght'",
            "did you mean `length`? available filters: ",
        ),
    ],
    ids=[
        "syntax",
        "chunk-after",
        "unknown-name",
        "result-without-after",
        "after-typo",
        "unknown-filter",
    ],
)
def test_bad_conditions(
    bot_dir: BotDir, registry: Registry, trigger: str, message: str, fix: str
) -> None:
    flow = CONDITION_FLOW.format(trigger=trigger)
    problem = only(problems(bot_dir, registry, bot(flow, tools=TOOLS + LOOKUP)))
    assert problem.key == "steps.triage.next[0].if"
    assert problem.message == message
    assert problem.fix.startswith(fix)


def test_conditions_over_variables_and_tool_results(bot_dir: BotDir, registry: Registry) -> None:
    flow = CONDITION_FLOW.format(
        trigger='after = "lookup"\nif = "result.found and result.score > min_score"'
    )
    toml = bot(flow, tools=TOOLS + LOOKUP).replace(
        "[llm]", '[variables]\nmin_score = { default = "0.5" }\n[llm]'
    )
    compiled = valid(bot_dir, registry, toml)
    assert compiled.flow is not None
    condition = compiled.flow.steps["triage"].transitions[0].condition
    assert condition(result={"found": True, "score": 0.9}, min_score=0.5) is True
    assert condition(result={"found": True, "score": 0.1}, min_score=0.5) is False


def test_conditions_generate_their_code_on_first_use_unless_validating(
    bot_dir: BotDir, registry: Registry
) -> None:
    """A serving catalog leaves a condition's code for its first evaluation; `dialplan
    validate` (eager) generates it now. Both evaluate alike."""
    flow = CONDITION_FLOW.format(trigger="if = \"captured.name == 'Ann'\"")
    bots = bot_dir("b", bot(flow, tools=TOOLS + LOOKUP))
    lazy = load_catalog(bots, registry).get("b").flow
    eager = load_catalog(bots, registry, eager=True).get("b").flow
    assert lazy is not None and eager is not None
    lazy_condition = lazy.steps["triage"].transitions[0].condition
    eager_condition = eager.steps["triage"].transitions[0].condition
    assert isinstance(lazy_condition, LazyExpression)
    assert not isinstance(eager_condition, LazyExpression)
    for captured in ({"name": "Ann"}, {"name": "Bo"}, {"name": None}):
        assert lazy_condition(captured=captured) is eager_condition(captured=captured)


def test_conditions_see_values_only_a_tool_captures_as_none(
    bot_dir: BotDir, registry: Registry
) -> None:
    """Before the lookup ran, `captured.account` is None to a condition (and to the rules
    LLM's replies), as a declared value is: not an undefined value that fails it."""
    flow = """
    [flow]
    start = "look_up"
    global_tools = ["end_call"]
    [steps.look_up]
    instructions = "Look the caller up."
    tools = ["lookup"]
    capture = { name = "string" }
    [[steps.look_up.next]]
    to = "known"
    if = "captured.account"
    [steps.known]
    say = "Welcome back."
    then = "end_call"
    """
    compiled = valid(bot_dir, registry, bot(flow, tools=TOOLS + LOOKUP))
    assert compiled.flow is not None
    context = compiled.flow.conditions_context({"name": "Ann"})
    assert context == {"name": "Ann", "account": None, "tier": None}
    condition = compiled.flow.steps["look_up"].transitions[0].condition
    assert not condition(captured=context)
    assert condition(captured=compiled.flow.conditions_context({"account": "A-1"}))


# -- a tool's `capture` ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message", "fix"),
    [
        (
            "result.account ===",
            "invalid capture expression 'result.account ===': unexpected '='",
            "write a Jinja expression over the tool's answer `result`, e.g. result.reference",
        ),
        (
            "reslt.account",
            "unknown name `reslt` in 'reslt.account'",
            "read the tool's answer as `result`, e.g. result.reference; did you mean "
            "`result`? names a capture expression can read: captured, result, step",
        ),
    ],
)
def test_bad_tool_capture_expressions(
    bot_dir: BotDir, registry: Registry, expression: str, message: str, fix: str
) -> None:
    tools = TOOLS + LOOKUP.replace('"result.account"', repr(expression).replace("'", '"'))
    toml = bot('[flow]\nstart = "a"\n[steps.a]\nsay = "Hi."\nthen = "end_call"\n', tools=tools)
    problem = only(problems(bot_dir, registry, toml))
    assert (problem.key, problem.message, problem.fix) == (
        "tools[2].capture.account",
        message,
        fix,
    )


# -- the runtime's capture checks ------------------------------------------------------------


def spec(kind: Any = "string", **more: Any) -> CaptureSpec:
    return CaptureSpec.model_validate({"type": kind, **more})


@pytest.mark.parametrize(
    ("kind", "given", "kept"),
    [
        ("string", "  Ann Lee ", "Ann Lee"),
        ("number", 3, 3),
        ("number", 2.5, 2.5),
        ("number", "4", 4),  # numbers given as text are read as numbers
        ("number", " 2.50 ", 2.5),
        ("number", "4.0", 4),
        ("bool", True, True),
        ("bool", "yes", True),
        ("bool", "False", False),
        ("list", ["a", "b"], ["a", "b"]),
        (["Morning", "Afternoon"], "morning", "Morning"),  # the declared spelling is kept
        (["Morning", "Afternoon"], " AFTERNOON ", "Afternoon"),
    ],
)
def test_check_values_reads_each_type(kind: Any, given: Any, kept: Any) -> None:
    values = check_values({"value": spec(kind)}, {"value": given})
    assert values == {"value": kept}
    assert type(values["value"]) is type(kept)


@pytest.mark.parametrize(
    ("kind", "given", "problem"),
    [
        ("number", "four", "value: expected a number, got 'four'"),
        ("number", True, "value: expected a number, got True"),
        ("bool", "maybe", "value: expected true or false, got 'maybe'"),
        ("string", 42, "value: expected a string, got 42"),
        ("list", "a, b", "value: expected a list of strings, got 'a, b'"),
        ("list", ["a", 1], "value: expected a list of strings, got ['a', 1]"),
        (
            ["morning", "afternoon"],
            "evening",
            "value: expected one of 'morning', 'afternoon', got 'evening'",
        ),
    ],
)
def test_check_values_refuses_values_of_the_wrong_type(kind: Any, given: Any, problem: str) -> None:
    with pytest.raises(CaptureError) as raised:
        check_values({"value": spec(kind)}, {"value": given})
    assert raised.value.problems == (problem,)


def test_check_values_names_every_missing_and_unknown_value() -> None:
    specs = {
        "name": spec(description="the caller's name"),
        "day": spec(["monday", "tuesday"]),
        "note": spec(required=False),
    }
    with pytest.raises(CaptureError) as raised:
        check_values(specs, {"nmae": "Ann", "day": "", "extra": 1})
    assert raised.value.problems == (
        "extra: not a value this step captures (name, day, note)",
        "nmae: not a value this step captures (name, day, note)",
        "name: required (the caller's name)",
        "day: required (one of 'monday', 'tuesday')",
    )
    assert str(raised.value).startswith("extra: not a value this step captures")


def test_check_values_leaves_out_optional_values_not_given() -> None:
    specs = {"name": spec(), "note": spec(required=False)}
    assert check_values(specs, {"name": "Ann", "note": None}) == {"name": "Ann"}
    assert check_values(specs, {"name": "Ann", "note": ""}) == {"name": "Ann"}
    with pytest.raises(CaptureError, match="not a value this step captures \\(none\\)"):
        check_values({}, {"name": "Ann"})
