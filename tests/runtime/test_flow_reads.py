"""Templates reading captured values: a read that some path into its step does not provide
is a located problem naming that path; a guarded read, a default or a capture on every
way in is fine. Also `captured_reads` and `conjunction_reads` on their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.flow.captures import (
    CapturedReads,
    captured_reads,
    conjunction_reads,
)
from runtime.registry import Registry
from runtime.templates import PromptEnvironment
from tests.cli_run import run_dialplan
from tests.runtime.flow_bots import LOOKUP, TOOLS, BotDir, bot, only, problems, valid

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
