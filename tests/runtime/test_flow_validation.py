"""Validating a conversation flow as a graph: every mistake is one located problem (its key
path, its cause, a fix), and the valid counterparts load: steps and their reachability,
dead ends, tools, transitions' shape, the rules LLM's steps and gotos, and how `dialplan
validate` prints them. (Captured values: test_flow_captures.py, test_flow_reads.py.)"""

from __future__ import annotations

import textwrap

import pytest

from runtime.catalog import load_catalog
from runtime.registry import Registry
from tests.runtime.flow_bots import LOOKUP, TOOLS, BotDir, bot, only, problems, valid

from ..conftest import MINIMAL_BOT, REPO

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
