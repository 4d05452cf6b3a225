"""Validating a conversation flow: every mistake is one located problem (its key path, its
cause, a fix), and the valid counterparts load. Bots are written to a temporary bots/
directory and loaded as the catalog (and `dialplan validate`) load them.

Also the runtime's own capture checks: `check_values` (what a transition or `remember`
accepts from the LLM) and `captured_reads` (which `captured.*` a template reads, and
whether a missing value would fail it)."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runtime.catalog import CatalogSnapshot, load_catalog
from runtime.compiler import CompiledBot
from runtime.errors import Problem
from runtime.flow.captures import (
    CapturedReads,
    CaptureError,
    LazyExpression,
    captured_reads,
    check_values,
    conjunction_reads,
)
from runtime.flow.schema import CaptureSpec
from runtime.registry import Registry
from runtime.templates import PromptEnvironment
from tests.cli_run import run_dialplan

from ..conftest import MINIMAL_BOT, REPO

BotDir = Callable[..., Path]

HEAD = """
[prompt]
system = "You are a test bot."
[llm]
provider = "rules"
"""

TOOLS = """
[[tools]]
use = "end_call"
[[tools]]
use = "transfer_call"
to = "+15550100"
"""

# a tool whose answer sets captured values
LOOKUP = """
[[tools]]
use = "http"
name = "lookup"
description = "look the caller's account up"
url = "https://crm.example.com/accounts"
capture = { account = "result.account", tier = "result.tier" }
"""


def bot(flow: str, *, llm: str = "", tools: str = TOOLS) -> str:
    """A bot: the head, ``llm`` lines for its `rules` LLM, its ``flow`` tables, ``tools``."""
    return HEAD + textwrap.dedent(llm) + textwrap.dedent(flow) + tools


def load(bot_dir: BotDir, registry: Registry, toml: str, **templates: str) -> CatalogSnapshot:
    """Load ``toml`` as bots/b.toml (``templates``: files under prompts/, `/` as `__`)."""
    files = {name.replace("__", "/"): text for name, text in templates.items()}
    return load_catalog(bot_dir("b", toml, files), registry)


def problems(bot_dir: BotDir, registry: Registry, toml: str, **templates: str) -> list[Problem]:
    return list(load(bot_dir, registry, toml, **templates).problems)


def only(found: list[Problem]) -> Problem:
    assert len(found) == 1, "\n".join(str(p) for p in found)
    return found[0]


def valid(bot_dir: BotDir, registry: Registry, toml: str, **templates: str) -> CompiledBot:
    snapshot = load(bot_dir, registry, toml, **templates)
    assert snapshot.problems == (), "\n".join(str(p) for p in snapshot.problems)
    return snapshot.get("b")


# -- steps and the graph ---------------------------------------------------------------


def test_unknown_step_in_a_transition_suggests_the_closest(
    bot_dir: BotDir, registry: Registry
) -> None:
    flow = """
    [flow]
    start = "triage"
    global_tools = ["end_call"]
    [steps.triage]
    instructions = "Ask what the caller needs."
    [[steps.triage.next]]
    to = "bookng"
    when = "the caller wants an appointment"
    [steps.booking]
    instructions = "Book it."
    """
    problem = only(problems(bot_dir, registry, bot(flow)))
    assert problem.key == "steps.triage.next[0].to"
    assert problem.message == "no step named 'bookng'"
    assert problem.fix == "did you mean `booking`? steps: triage, booking"
    assert str(problem).endswith(
        f"b.toml:{problem.line}:1: steps.triage.next[0].to: no step named 'bookng' "
        "(did you mean `booking`? steps: triage, booking)"
    )
    written = (bot_dir("b", bot(flow)) / "b.toml").read_text().splitlines()
    assert problem.line is not None and written[problem.line - 1].strip() == 'to = "bookng"'


def test_steps_without_a_flow_table_have_no_start(bot_dir: BotDir, registry: Registry) -> None:
    flow = """
    [steps.triage]
    say = "Hello."
    then = "end_call"
    """
    problem = only(problems(bot_dir, registry, bot(flow)))
    # raised by the Bot model as a whole (runtime/schema.py), so it names no key
    assert problem.key == ""
    assert problem.message == (
        "the bot has steps but no start step: add [flow] with start = 'triage'"
    )


def test_flow_start_names_a_missing_step(bot_dir: BotDir, registry: Registry) -> None:
    flow = """
    [flow]
    start = "triag"
    [steps.triage]
    say = "Hello."
    then = "end_call"
    """
    problem = only(problems(bot_dir, registry, bot(flow)))
    assert problem.key == "flow.start"
    assert problem.message == "no step named 'triag' to start in"
    assert problem.fix == "did you mean `triage`? steps: triage"


def test_flow_without_steps(bot_dir: BotDir, registry: Registry) -> None:
    problem = only(problems(bot_dir, registry, bot('[flow]\nstart = "triage"\n')))
    assert problem.key == ""  # a model-level check, like the one above
    assert problem.message == "[flow] needs steps: declare them as [steps.<name>] tables"


def test_flow_without_a_start(bot_dir: BotDir, registry: Registry) -> None:
    flow = """
    [flow]
    context = "keep"
    [steps.triage]
    say = "Hello."
    then = "end_call"
    """
    problem = only(problems(bot_dir, registry, bot(flow)))
    assert (problem.key, problem.message, problem.fix) == (
        "flow.start",
        "is required but missing",
        "add it",
    )


def test_unreachable_step(bot_dir: BotDir, registry: Registry) -> None:
    flow = """
    [flow]
    start = "triage"
    global_tools = ["end_call"]
    [steps.triage]
    instructions = "Ask what the caller needs."
    [steps.orphan]
    instructions = "Nobody comes here."
    [[steps.orphan.next]]
    to = "triage"
    when = "always"
    """
    problem = only(problems(bot_dir, registry, bot(flow)))
    assert problem.key == "steps.orphan"
    assert problem.message == "step 'orphan' is unreachable from the start step 'triage'"
    assert problem.fix == "add a transition to it (`to = 'orphan'`) or remove the step"


def test_step_with_no_way_out(bot_dir: BotDir, registry: Registry) -> None:
    flow = """
    [flow]
    start = "triage"
    [steps.triage]
    instructions = "Ask what the caller needs."
    [[steps.triage.next]]
    to = "stuck"
    when = "the caller wants to talk"
    [steps.stuck]
    instructions = "Chat."
    """
    problem = only(problems(bot_dir, registry, bot(flow)))
    assert problem.key == "steps.stuck"
    assert problem.message == (
        "step 'stuck' has no way out: no transition, and it can neither end nor transfer the call"
    )
    assert problem.fix == (
        "add a [[steps.stuck.next]] transition, or offer end_call (in its `tools` or in "
        "flow.global_tools)"
    )


def test_step_whose_only_way_out_is_a_failure(bot_dir: BotDir, registry: Registry) -> None:
    """An `on_error` way is taken only when a tool fails: when the lookup succeeds the
    call would stay in the step for good."""
    flow = """
    [flow]
    start = "look_up"
    [steps.look_up]
    instructions = "Look the caller up."
    tools = ["lookup"]
    [[steps.look_up.next]]
    to = "sorry"
    on_error = "lookup"
    [steps.sorry]
    say = "Sorry, that did not work."
    then = "end_call"
    """
    problem = only(problems(bot_dir, registry, bot(flow, tools=TOOLS + LOOKUP)))
    assert problem.key == "steps.look_up"
    assert problem.message == (
        "step 'look_up' has no way out: its only transitions are taken when a tool fails, "
        "and it can neither end nor transfer the call"
    )
    assert "offer end_call" in problem.fix


@pytest.mark.parametrize(
    "way_out",
    [
        'tools = ["end_call"]',  # it can end the call
        'tools = ["transfer_call"]',  # or hand it over
        '[[steps.chat.next]]\nto = "triage"\nwhen = "the caller has another question"',
    ],
)
def test_a_step_with_a_way_out_is_no_dead_end(
    bot_dir: BotDir, registry: Registry, way_out: str
) -> None:
    flow = f"""
[flow]
start = "triage"
[steps.triage]
instructions = "Ask what the caller needs."
[[steps.triage.next]]
to = "chat"
when = "the caller wants to talk"
[steps.chat]
instructions = "Chat."
{way_out}
"""
    valid(bot_dir, registry, bot(flow))


def test_a_flow_with_cycles_is_valid(bot_dir: BotDir, registry: Registry) -> None:
    flow = """
    [flow]
    start = "menu"
    global_tools = ["end_call"]
    [steps.menu]
    instructions = "Offer hours or prices."
    [[steps.menu.next]]
    to = "hours"
    when = "the caller asks for the opening hours"
    [[steps.menu.next]]
    to = "prices"
    when = "the caller asks for prices"
    [steps.hours]
    say = "We're open nine to five."
    then = "menu"
    [steps.prices]
    instructions = "Tell the prices."
    [[steps.prices.next]]
    to = "menu"
    when = "the caller wants something else"
    [[steps.prices.next]]
    to = "prices"
    when = "the caller asks again"
    name = "repeat_prices"
    """
    compiled = valid(bot_dir, registry, bot(flow))
    assert compiled.flow is not None
    assert set(compiled.flow.steps) == {"menu", "hours", "prices"}


def test_bots_without_a_flow_validate_unchanged(bot_dir: BotDir, registry: Registry) -> None:
    bots = bot_dir("plain", MINIMAL_BOT)
    snapshot = load_catalog(bots, registry)
    assert snapshot.problems == ()
    assert snapshot.get("plain").flow is None
    shipped = load_catalog(REPO / "bots", registry)
    assert shipped.problems == ()
    assert shipped.get("receptionist").flow is None
    assert shipped.get("reminder").flow is None
    dentist = shipped.get("dentist").flow
    assert dentist is not None and dentist.start == "triage"


# -- tools ---------------------------------------------------------------------------


def test_step_names_a_tool_the_bot_does_not_bind(bot_dir: BotDir, registry: Registry) -> None:
    flow = """
    [flow]
    start = "triage"
    global_tools = ["end_call"]
    [steps.triage]
    instructions = "Ask what the caller needs."
    tools = ["transfer"]
    """
    problem = only(problems(bot_dir, registry, bot(flow)))
    assert problem.key == "steps.triage.tools[0]"
    assert problem.message == "names tool 'transfer', which this bot does not bind"
    assert problem.fix == (
        "add it under [[tools]]; did you mean `transfer_call`? bound tools: end_call, transfer_call"
    )


def test_global_tools_name_a_tool_the_bot_does_not_bind(
    bot_dir: BotDir, registry: Registry
) -> None:
    flow = """
    [flow]
    start = "triage"
    global_tools = ["end_call", "hang_up"]
    [steps.triage]
    instructions = "Ask what the caller needs."
    """
    problem = only(problems(bot_dir, registry, bot(flow)))
    assert problem.key == "flow.global_tools[1]"
    assert problem.message == "names tool 'hang_up', which this bot does not bind"
    assert problem.fix.startswith("add it under [[tools]]; ")
    assert problem.fix.endswith("bound tools: end_call, transfer_call")


@pytest.mark.parametrize(
    ("trigger", "key", "message", "fix"),
    [
        (
            'after = "calendar_book"',
            "after",
            "watches tool 'calendar_book', which this bot does not bind",
            "add it under [[tools]]; bound tools: end_call, lookup, transfer_call",
        ),
        (
            'on_error = "lookups"',
            "on_error",
            "watches tool 'lookups', which this bot does not bind",
            "add it under [[tools]]; did you mean `lookup`? bound tools: end_call, lookup, "
            "transfer_call",
        ),
        (
            'after = "transfer_call"',
            "after",
            "watches tool 'transfer_call', which step 'triage' neither offers nor runs",
            "add 'transfer_call' to steps.triage.tools (or to flow.global_tools)",
        ),
        (
            'on_error = "transfer_call"',
            "on_error",
            "watches tool 'transfer_call', which step 'triage' neither offers nor runs",
            "add 'transfer_call' to steps.triage.tools (or to flow.global_tools)",
        ),
    ],
)
def test_a_transition_watches_a_tool_the_step_cannot_run(
    bot_dir: BotDir, registry: Registry, trigger: str, key: str, message: str, fix: str
) -> None:
    flow = f"""
[flow]
start = "triage"
global_tools = ["end_call"]
[steps.triage]
instructions = "Look the caller up."
tools = ["lookup"]
[[steps.triage.next]]
to = "done"
{trigger}
[steps.done]
say = "Done."
then = "end_call"
"""
    problem = only(problems(bot_dir, registry, bot(flow, tools=TOOLS + LOOKUP)))
    assert (problem.key, problem.message, problem.fix) == (
        f"steps.triage.next[0].{key}",
        message,
        fix,
    )


def test_watching_offered_tools_the_then_tool_and_any_tool(
    bot_dir: BotDir, registry: Registry
) -> None:
    flow = """
    [flow]
    start = "triage"
    global_tools = ["end_call"]
    [steps.triage]
    instructions = "Look the caller up."
    tools = ["lookup"]
    [[steps.triage.next]]
    to = "human"
    after = "lookup"
    if = "result.found"
    [[steps.triage.next]]
    to = "human"
    on_error = "*"
    [steps.human]
    say = "Putting you through."
    then = "transfer_call"
    [[steps.human.next]]
    to = "sorry"
    on_error = "transfer_call"
    [steps.sorry]
    say = "Nobody answered."
    then = "end_call"
    """
    valid(bot_dir, registry, bot(flow, tools=TOOLS + LOOKUP))


def test_then_names_neither_a_step_nor_a_tool(bot_dir: BotDir, registry: Registry) -> None:
    flow = """
    [flow]
    start = "bye"
    [steps.bye]
    say = "Goodbye."
    then = "end_cal"
    """
    problem = only(problems(bot_dir, registry, bot(flow)))
    assert problem.key == "steps.bye.then"
    assert problem.message == "'end_cal' is neither a step nor a tool this bot binds"
    assert problem.fix == ("did you mean `end_call`? steps and tools: bye, end_call, transfer_call")


def test_duplicate_transition_tool_names_in_one_step(bot_dir: BotDir, registry: Registry) -> None:
    flow = """
    [flow]
    start = "triage"
    global_tools = ["end_call"]
    [steps.triage]
    instructions = "Ask what the caller needs."
    [[steps.triage.next]]
    to = "booking"
    when = "the caller wants an appointment"
    [[steps.triage.next]]
    to = "booking"
    when = "the caller wants to move an appointment"
    [[steps.triage.next]]
    to = "booking"
    when = "the caller is done"
    name = "end_call"
    [steps.booking]
    say = "Let's book."
    then = "end_call"
    """
    found = problems(bot_dir, registry, bot(flow))
    assert [(p.key, p.message, p.fix) for p in found] == [
        (
            "steps.triage.next[1].to",
            "the tool name 'go_to_booking' is already used in step 'triage' by "
            "steps.triage.next[0]",
            "give this transition a distinct `name`, the tool the LLM calls to take it",
        ),
        (
            "steps.triage.next[2].name",
            "the tool name 'end_call' is already used in step 'triage' by the bound tool "
            "'end_call'",
            "give this transition a distinct `name`, the tool the LLM calls to take it",
        ),
    ]


def test_distinct_names_for_two_ways_to_one_step(bot_dir: BotDir, registry: Registry) -> None:
    flow = """
    [flow]
    start = "triage"
    global_tools = ["end_call"]
    [steps.triage]
    instructions = "Ask what the caller needs."
    [[steps.triage.next]]
    to = "booking"
    when = "the caller wants an appointment"
    [[steps.triage.next]]
    to = "booking"
    when = "the caller wants to move an appointment"
    name = "move_appointment"
    [steps.booking]
    say = "Let's book."
    then = "end_call"
    """
    compiled = valid(bot_dir, registry, bot(flow))
    assert compiled.flow is not None
    tools = [t.tool for t in compiled.flow.steps["triage"].transitions]
    assert tools == ["go_to_booking", "move_appointment"]


# -- transitions' own shape (the schema) ---------------------------------------------------


def test_two_triggers_on_one_transition(bot_dir: BotDir, registry: Registry) -> None:
    flow = """
    [flow]
    start = "triage"
    global_tools = ["end_call"]
    [steps.triage]
    instructions = "Ask what the caller needs."
    [[steps.triage.next]]
    to = "triage"
    when = "the caller repeats"
    after = "end_call"
    """
    problem = only(problems(bot_dir, registry, bot(flow)))
    assert problem.key == "steps.triage.next[0]"
    assert problem.message.startswith("give one trigger, not when and after: ")
    assert "`when` (the LLM chooses), `after` a tool" in problem.message


def test_capture_on_a_transition_the_llm_does_not_choose(
    bot_dir: BotDir, registry: Registry
) -> None:
    flow = """
    [flow]
    start = "triage"
    global_tools = ["end_call", "lookup"]
    [steps.triage]
    instructions = "Look the caller up."
    [[steps.triage.next]]
    to = "triage"
    after = "lookup"
    capture = { account = "string" }
    """
    problem = only(problems(bot_dir, registry, bot(flow, tools=TOOLS + LOOKUP)))
    assert problem.key == "steps.triage.next[0]"
    assert problem.message == (
        "only a `when` transition captures values (the LLM gives them); a tool sets values "
        "with `capture` on its [[tools]] entry"
    )


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


# -- templates reading captured values --------------------------------------------------

# triage -> booking two ways: only one of them captures `name`
TWO_WAYS = """
[flow]
start = "triage"
global_tools = ["end_call"]
[steps.triage]
instructions = "Ask for the caller's name."
[[steps.triage.next]]
to = "booking"
when = "the caller gave their name"
capture = {{ name = {{ type = "string", description = "the caller's name" }} }}
[[steps.triage.next]]
to = "booking"
when = "the caller does not want to say their name"
name = "anonymous"
[steps.booking]
{step}
"""

NOT_EVERY_PATH = (
    "reads captured.name, which is not captured on every path into step 'booking' "
    "(e.g. triage -> booking (by steps.triage.next[1]))"
)
READ_FIX = (
    "capture it (required) on the way in, give it a `default`, or write "
    "`captured.name | default('')`"
)


@pytest.mark.parametrize(
    ("step", "templates", "key"),
    [
        ('instructions = "Book a visit for {{ captured.name }}."', {}, "instructions"),
        ('instructions = "flow/booking.j2"', {"flow/booking.j2": "For {{ captured.name }}."}, ""),
        (
            'instructions = "flow/booking.j2"',
            {
                "flow/booking.j2": "Book a visit.\n{% include 'flow/who.j2' %}",
                "flow/who.j2": "The caller is {{ captured.name | title }}.",
            },
            "instructions",
        ),
        ('say = "Hello {{ captured.name }}."\nthen = "end_call"', {}, "say"),
        (
            'instructions = "{% if captured.name %}Hi {{ captured.name }}.{% endif %}"',
            {},
            "instructions",
        ),
    ],
    ids=["inline", "file", "included-file", "say", "if-reads-it-too"],
)
def test_template_reads_a_value_not_captured_on_every_path(
    bot_dir: BotDir, registry: Registry, step: str, templates: dict[str, str], key: str
) -> None:
    files = {name.replace("/", "__"): text for name, text in templates.items()}
    found = problems(bot_dir, registry, bot(TWO_WAYS.format(step=step)), **files)
    problem = only(found)
    assert problem.key == f"steps.booking.{key or 'instructions'}"
    assert problem.message == NOT_EVERY_PATH
    assert problem.fix == READ_FIX


def test_the_path_named_is_one_that_never_captures(bot_dir: BotDir, registry: Registry) -> None:
    flow = """
    [flow]
    start = "triage"
    global_tools = ["end_call"]
    [steps.triage]
    instructions = "Ask what the caller needs."
    [[steps.triage.next]]
    to = "details"
    when = "the caller wants to book"
    [[steps.triage.next]]
    to = "confirm"
    when = "the caller gave their name already"
    capture = { name = "string" }
    [steps.details]
    instructions = "Ask for details."
    [[steps.details.next]]
    to = "confirm"
    when = "the caller gave the details"
    [steps.confirm]
    say = "Thanks, {{ captured.name }}."
    then = "end_call"
    """
    problem = only(problems(bot_dir, registry, bot(flow)))
    assert problem.key == "steps.confirm.say"
    assert problem.message == (
        "reads captured.name, which is not captured on every path into step 'confirm' "
        "(e.g. triage -> details (by steps.triage.next[0]) -> confirm (by "
        "steps.details.next[0]))"
    )


def test_the_start_step_reads_a_value_only_captured_later(
    bot_dir: BotDir, registry: Registry
) -> None:
    flow = """
    [flow]
    start = "triage"
    global_tools = ["end_call"]
    [steps.triage]
    instructions = "Hello {{ captured.name }}."
    [[steps.triage.next]]
    to = "triage"
    when = "the caller gives their name"
    capture = { name = "string" }
    """
    problem = only(problems(bot_dir, registry, bot(flow)))
    assert problem.key == "steps.triage.instructions"
    assert problem.message == (
        "reads captured.name, which is not captured on every path into step 'triage' "
        "(a call starts there)"
    )


@pytest.mark.parametrize(
    "flow",
    [
        # a required capture on every `when` way in
        """
        [flow]
        start = "triage"
        global_tools = ["end_call"]
        [steps.triage]
        instructions = "Ask for the caller's name."
        [[steps.triage.next]]
        to = "booking"
        when = "the caller wants to book"
        capture = { name = "string" }
        [[steps.triage.next]]
        to = "booking"
        when = "the caller wants to move a booking"
        name = "move"
        capture = { name = "string", booking = "string" }
        [steps.booking]
        instructions = "Book a visit for {{ captured.name }}."
        [[steps.booking.next]]
        to = "triage"
        when = "the caller wants something else"
        """,
        # a tool's `capture`, on the way taken after it
        """
        [flow]
        start = "look_up"
        global_tools = ["end_call"]
        [steps.look_up]
        instructions = "Look the caller up."
        tools = ["lookup"]
        [[steps.look_up.next]]
        to = "account"
        after = "lookup"
        if = "result.found"
        [steps.account]
        say = "Your account is {{ captured.account }} ({{ captured.tier }})."
        then = "end_call"
        """,
        # a condition that needs both values to hold
        """
        [flow]
        start = "collect"
        global_tools = ["end_call"]
        [steps.collect]
        instructions = "Ask for the caller's name and a day."
        capture = { name = "string", day = "string" }
        [[steps.collect.next]]
        to = "confirm"
        if = "captured.name and captured.day"
        [steps.confirm]
        say = "{{ captured.name }}, see you on {{ captured.day }}."
        then = "end_call"
        """,
        # a comparison that cannot hold while the value is missing
        """
        [flow]
        start = "collect"
        global_tools = ["end_call"]
        [steps.collect]
        instructions = "Ask how many people come."
        capture = { party = "number" }
        [[steps.collect.next]]
        to = "group"
        if = "captured.party > 6"
        [steps.group]
        say = "A table for {{ captured.party }}: I'll call the manager."
        then = "end_call"
        """,
        # a default
        """
        [flow]
        start = "triage"
        global_tools = ["end_call"]
        [steps.triage]
        instructions = "Ask for the caller's name."
        [[steps.triage.next]]
        to = "booking"
        when = "the caller wants to book"
        capture = { name = { type = "string", required = false, default = "there" } }
        [steps.booking]
        instructions = "Hello {{ captured.name }}."
        """,
        # guarded reads: a default filter, an `is defined` test, `get`
        """
        [flow]
        start = "triage"
        global_tools = ["end_call"]
        [steps.triage]
        instructions = "Ask for the caller's name."
        [[steps.triage.next]]
        to = "booking"
        when = "the caller wants to book"
        capture = { name = { type = "string", required = false } }
        [steps.booking]
        instructions = '''
        Hello {{ captured.name | default('') }}.
        {% if captured.name is defined %}Use {{ captured.name | title }}.{% endif %}
        {{ captured.get('name', 'caller') }}
        {% if captured.name | default(none) %}{{ captured.name }}{% endif %}
        '''
        """,
    ],
    ids=[
        "required-on-every-way",
        "tool-capture-after",
        "condition",
        "comparison",
        "default",
        "guarded",
    ],
)
def test_reads_that_every_path_provides(bot_dir: BotDir, registry: Registry, flow: str) -> None:
    valid(bot_dir, registry, bot(flow, tools=TOOLS + LOOKUP))


def test_a_condition_that_holds_without_the_value_does_not_provide_it(
    bot_dir: BotDir, registry: Registry
) -> None:
    flow = """
    [flow]
    start = "collect"
    global_tools = ["end_call"]
    [steps.collect]
    instructions = "Ask which service the caller wants."
    capture = { service = ["cleaning", "filling"] }
    [[steps.collect.next]]
    to = "confirm"
    if = "captured.service != 'cleaning'"
    [steps.confirm]
    say = "A {{ captured.service }} then."
    then = "end_call"
    """
    problem = only(problems(bot_dir, registry, bot(flow)))
    assert problem.key == "steps.confirm.say"
    assert "reads captured.service, which is not captured on every path" in problem.message


def test_template_reads_a_value_nothing_captures(bot_dir: BotDir, registry: Registry) -> None:
    flow = """
    [flow]
    start = "triage"
    global_tools = ["end_call"]
    [steps.triage]
    instructions = "Hello {{ captured.nmae | default('') }}."
    [[steps.triage.next]]
    to = "triage"
    when = "the caller gives their name"
    capture = { name = "string" }
    """
    problem = only(problems(bot_dir, registry, bot(flow)))
    assert problem.key == "steps.triage.instructions"
    assert problem.message == "reads captured.nmae, which no transition, step or tool captures"
    assert problem.fix == (
        "did you mean `name`? captured values: name; declare it in a `capture` table"
    )


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


# -- the rules LLM's steps and gotos ------------------------------------------------------

RULES_FLOW = """
[flow]
start = "triage"
global_tools = ["end_call"]
[steps.triage]
instructions = "Ask what the caller needs."
[[steps.triage.next]]
to = "booking"
when = "the caller wants an appointment"
capture = { service = { type = ["cleaning", "filling"], required = false } }
[steps.booking]
instructions = "Book it."
[[steps.booking.next]]
to = "bye"
when = "the caller is done"
[steps.bye]
say = "Goodbye."
then = "end_call"
"""


@pytest.mark.parametrize(
    ("rule", "key", "message", "fix"),
    [
        (
            'match = "book"\ngoto = "bookng"',
            "llm.rules[0].goto",
            "names step 'bookng', which this bot does not have",
            "did you mean `booking`? steps: triage, booking, bye",
        ),
        (
            'steps = ["triage", "boking"]\nmatch = "book"',
            "llm.rules[0].steps[1]",
            "names step 'boking', which this bot does not have",
            "did you mean `booking`? steps: triage, booking, bye",
        ),
        (
            'steps = ["triage"]\nmatch = "bye"\ngoto = "bye"',
            "llm.rules[0].goto",
            "goes to step 'bye', but step 'triage' has no `when` transition to it",
            "add [[steps.<step>.next]] with to = 'bye' and `when`, or take those steps out "
            "of the rule's `steps`",
        ),
        (
            'steps = ["triage", "booking"]\nmatch = "bye"\ngoto = "bye"',
            "llm.rules[0].goto",
            "goes to step 'bye', but step 'triage' has no `when` transition to it",
            "add [[steps.<step>.next]] with to = 'bye' and `when`, or take those steps out "
            "of the rule's `steps`",
        ),
        (
            'steps = ["triage", "booking"]\nmatch = "again"\ngoto = "triage"',
            "llm.rules[0].goto",
            "goes to step 'triage', but steps 'triage', 'booking' have no `when` transition to it",
            "add [[steps.<step>.next]] with to = 'triage' and `when`, or take those steps "
            "out of the rule's `steps`",
        ),
        (
            'match = "hello"\ngoto = "triage"',  # active everywhere: no step goes there
            "llm.rules[0].goto",
            "goes to step 'triage', but no step has a `when` transition to it",
            "add [[steps.<step>.next]] with to = 'triage' and `when`",
        ),
    ],
    ids=[
        "unknown-goto",
        "unknown-scope",
        "no-way-from-scope",
        "no-way-from-one-of-scope",
        "no-way-from-two",
        "no-way-at-all",
    ],
)
def test_rules_llm_steps_and_gotos(
    bot_dir: BotDir, registry: Registry, rule: str, key: str, message: str, fix: str
) -> None:
    toml = bot(RULES_FLOW, llm=f"[[llm.rules]]\n{rule}\n")
    problem = only(problems(bot_dir, registry, toml))
    assert (problem.key, problem.message, problem.fix) == (key, message, fix)


def test_rules_llm_gotos_along_when_transitions_are_valid(
    bot_dir: BotDir, registry: Registry
) -> None:
    rules = """
    [[llm.rules]]
    steps = ["triage"]
    match = "cleaning"
    goto = "booking"
    capture = { service = "cleaning" }
    [[llm.rules]]
    match = "bye"
    goto = "bye"
    """
    valid(bot_dir, registry, bot(RULES_FLOW, llm=textwrap.dedent(rules)))


def test_rules_llm_steps_in_a_bot_without_a_flow(bot_dir: BotDir, registry: Registry) -> None:
    toml = bot("", llm='[[llm.rules]]\nsteps = ["triage"]\nmatch = "x"\nreply = "y"\n')
    problem = only(problems(bot_dir, registry, toml))
    assert problem.key == "llm.rules[0].steps[0]"
    assert problem.message == "names step 'triage', which this bot does not have"
    assert problem.fix == "declare the flow's steps as [steps.<name>] tables"


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


# -- `dialplan validate` ----------------------------------------------------------------


def test_validate_prints_each_flow_problem_as_file_key_message_fix(
    bot_dir: BotDir, registry: Registry, tmp_path: Path
) -> None:
    flow = TWO_WAYS.format(step='say = "Hello {{ captured.name }}."\nthen = "end_call"')
    bot_dir("b", bot(flow))
    run = run_dialplan("validate", "bots", cwd=tmp_path)
    assert run.returncode == 1
    [line] = run.lines
    location, rest = line.split(": ", 1)
    assert rest == f"steps.booking.say: {NOT_EVERY_PATH} ({READ_FIX})"
    number = int(location.split(":")[1])  # bots/b.toml:LINE:COL, at the `say` key
    written = (tmp_path / "bots" / "b.toml").read_text().splitlines()
    assert written[number - 1].lstrip().startswith("say = ")


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


def reads(*sources: str) -> CapturedReads:
    env = PromptEnvironment(None).env
    return captured_reads(env, [(source, None) for source in sources])


@pytest.mark.parametrize(
    ("source", "unguarded", "guarded"),
    [
        ("{{ captured.name }}", {"name"}, set()),
        ("{{ captured['name'] }}", {"name"}, set()),
        ('{{ captured["name"] | upper }}', {"name"}, set()),
        ("{{ captured.name | default('') }}", set(), {"name"}),
        ("{{ captured.name | d }}", set(), {"name"}),
        ("{{ captured['name'] | default('caller') | title }}", set(), {"name"}),
        ("{{ captured.get('name') }}", set(), {"name"}),
        ("{{ captured.get('name', 'caller') }}", set(), {"name"}),
        ("{% if captured.name is defined %}{{ captured.name }}{% endif %}", set(), {"name"}),
        ("{% if 'name' in captured %}{{ captured.name }}{% endif %}", set(), {"name"}),
        ("{{ captured.name if captured.name is defined else '' }}", set(), {"name"}),
        # a truthy test guards what it tests, but reads it unguarded itself
        ("{% if captured.day %}{{ captured.day }}{% endif %}", {"day"}, set()),
        # guards that do not keep a missing value from failing
        ("{{ captured.name | upper | default('') }}", {"name"}, set()),
        ("{{ captured.name.first | default('') }}", {"name"}, set()),
        ("{{ captured.day | default(captured.name) }}", {"name"}, {"day"}),
        (
            "{% if captured.name is defined %}{% else %}{{ captured.name }}{% endif %}",
            {"name"},
            set(),
        ),
        ("{% if captured.a | default('x') %}{{ captured.a }}{% endif %}", {"a"}, set()),
        # read both ways: unguarded once is enough to fail
        ("{{ captured.name | default('') }} {{ captured.name }}", {"name"}, set()),
        # `captured` as a whole is no read of one value
        (
            "{% for k, v in captured.items() %}{{ k }}{% endfor %}{{ captured | length }}",
            set(),
            set(),
        ),
        ("{{ name }} {{ call.caller }}", set(), set()),
    ],
)
def test_captured_reads(source: str, unguarded: set[str], guarded: set[str]) -> None:
    assert reads(source) == CapturedReads(frozenset(unguarded), frozenset(guarded))


def test_captured_reads_over_a_template_and_its_includes() -> None:
    found = reads("{{ captured.a | default('') }}", "{{ captured.a }}{{ captured.b | d }}")
    assert found == CapturedReads(frozenset({"a"}), frozenset({"b"}))
    assert found.all == {"a", "b"}


def test_captured_reads_of_templates_that_differ_only_in_text() -> None:
    """Texts with the same tags share what was found: the text between never matters."""
    env = PromptEnvironment(None).env
    first = captured_reads(env, [("Hi {{ captured.a }}, {% if x %}x{% endif %}", None)])
    second = captured_reads(env, [("Bye {{ captured.a }}! {% if x %}y{% endif %}", None)])
    third = captured_reads(env, [("Bye {{ captured.b }}! {% if x %}y{% endif %}", None)])
    assert first == second == CapturedReads(frozenset({"a"}), frozenset())
    assert third == CapturedReads(frozenset({"b"}), frozenset())
    raw = "{% raw %}{{ captured.c }}{% endraw %}{{ captured.d }}"
    assert captured_reads(env, [(raw, None)]) == CapturedReads(frozenset({"d"}), frozenset())


@pytest.mark.parametrize(
    ("condition", "holding"),
    [
        ("captured.a and captured.b", {"a", "b"}),
        ("captured.a == 'x' and captured.n > 2", {"a", "n"}),
        ("captured.a in ['x', 'y']", {"a"}),
        ("captured.a is not none", {"a"}),
        ("captured.a | default('')", {"a"}),
        ("captured.get('a')", {"a"}),
        # true while the value is missing (None to a condition), or not an `and` chain
        ("captured.a != 'x'", set()),
        ("captured.a == none", set()),
        ("captured.a in ['x', none]", set()),
        ("captured.a | default('y')", set()),
        ("captured.a or captured.b", set()),
        ("not captured.a", set()),
        ("captured.a is defined", set()),
    ],
)
def test_conjunction_reads(condition: str, holding: set[str]) -> None:
    assert conjunction_reads(PromptEnvironment(None).env, condition) == holding
