"""Flow validation benchmark: what checking conversation flows adds to loading a catalog.

(a) Generates 1,000 bots in a temporary directory, each with a 10-step flow (`[flow]` and
    `[steps.*]`): `when` transitions that capture typed values (required, optional, allowed
    values), `after` a tool with an `if` over its result, conditions over captured values,
    `on_error` ways (one tool, any tool), `say`/`then` steps (to a step and to a tool),
    cycles back to earlier steps, step templates (inline and prompts/ files, one per bot)
    reading captured values (guarded and not), tools whose `capture` sets values, and a
    `rules` LLM scoped to steps with `goto`. Like a real fleet the bots are clones that
    differ in their literal text and in a condition's constant. Times
    ``load_catalog(bots_dir, registry)``, what a serving catalog runs (every check;
    template code generated on first use), and ``load_catalog(..., eager=True)``, what
    `dialplan validate` runs (the same checks, plus every template's and condition's code
    generated now: Jinja's code generation, about 1 ms per distinct template). Also
    reported: the part of one load spent in `compile_flow`, and TOML + schema alone.
(b) One bot with a 30-step flow (three such 10-step sections chained, with ways between
    them), validated alone the way `dialplan validate bots/one.toml` does.

The registry is loaded once, outside the timed region. Each figure is the median of
``--reps`` runs after one warm-up run.

Targets: (a) load + validate (`load_catalog`) under 2 s (median) for 1,000 bots with 0
problems; (b) `dialplan validate` of the 30-step bot under 100 ms.

    uv run python bench/flow_catalog.py [--bots 1000] [--reps 5] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_stats import machine, percentile

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_CATALOG_MS = 2000.0
TARGET_ONE_BOT_MS = 100.0
SECTION_STEPS = 10

SHARED_TEMPLATES = {
    "flows/voice_style.j2": (
        "You are speaking on a phone call. Keep every reply short: one or two sentences.\n"
        "Never use lists, markdown or emoji; say numbers and times the way a person would.\n"
    ),
    "flows/collect.j2": (
        "Look the caller up with the lookup tool{% if captured.reason | default(none) %}"
        " (they called about {{ captured.reason }}){% endif %}.\n"
        "Address them as {{ captured.name }}.\n"
        '{% include "flows/voice_style.j2" %}\n'
    ),
}

# one bot's own prompt file: the confirmation step's instructions
CONFIRM_TEMPLATE = """\
Confirm the account {{{{ captured.account }}}} ({{{{ captured.tier | default('basic') }}}})
with {{{{ captured.name }}}} at {kind} {n}.
{{% if captured.get("reason") == "billing" %}}Mention the billing desk hours.{{% endif %}}
Ask whether they want to schedule a visit, and record the answer with the remember tool.
"""

HEAD = """\
# generated flow benchmark bot {n}
description = "{kind_title} {n} front desk (inbound, flow)"
language = "en"

[prompt]
system = "You are the front desk of {kind} {n}."
context = "Business: {{{{ business_name }}}} (branch {n})."
greeting = "Hi, this is {{{{ business_name }}}}. How can I help?"

[variables]
business_name = "{kind_title} {n}"
desk_number = {{ default = "+1555{n:04d}", description = "the desk's number" }}

[flow]
start = "{p}greet"
context = "keep"
global_tools = ["end_call"]
"""

# one 10-step section; {p} prefixes its step names, {exit} is where "faq" may leave to
SECTION = """
[steps.{p}greet]
instructions = "Greet the caller of {kind} {n} and find out why they call ({p}section)."

[[steps.{p}greet.next]]
to = "{p}collect"
when = "the caller gave their name and reason"
[steps.{p}greet.next.capture]
name = {{ type = "string", description = "the caller's name" }}
reason = {{ type = ["billing", "booking", "other"], required = false }}

[[steps.{p}greet.next]]
to = "{p}faq"
when = "the caller only has a question"
name = "{p}questions"

[[steps.{p}greet.next]]
to = "{p}escalate"
when = "the caller is upset or asks for a person"

[steps.{p}collect]
instructions = "flows/collect.j2"
tools = ["lookup"]

[[steps.{p}collect.next]]
to = "{p}confirm"
after = "lookup"
if = "result.found and result.score > {threshold}"

[[steps.{p}collect.next]]
to = "{p}apologize"
on_error = "lookup"

[[steps.{p}collect.next]]
to = "{p}greet"
when = "the caller wants to start over"

[[steps.{p}collect.next]]
to = "{p}escalate"
when = "the caller is upset or asks for a person"

[steps.{p}confirm]
instructions = "{bot_id}/confirm.j2"
capture = {{ wants_visit = "bool" }}

[[steps.{p}confirm.next]]
to = "{p}schedule"
if = "captured.wants_visit and captured.name"

[[steps.{p}confirm.next]]
to = "{p}collect"
when = "the caller says the account is wrong"

[[steps.{p}confirm.next]]
to = "{p}faq"
if = "captured.wants_visit == false"

[steps.{p}schedule]
instructions = "Offer times for {{{{ captured.name }}}} at {kind} {n}; book the one they pick."
tools = ["calendar_slots", "calendar_book"]

[[steps.{p}schedule.next]]
to = "{p}wrap"
after = "calendar_book"
if = "result.booked"

[[steps.{p}schedule.next]]
to = "{p}apologize"
on_error = "*"

[steps.{p}faq]
instructions = '''Answer questions about {{{{ business_name }}}}
{{% if captured.name is defined %}}for {{{{ captured.name }}}}{{% endif %}}.'''

[[steps.{p}faq.next]]
to = "{p}greet"
when = "the caller wants something else"
name = "{p}something_else"

[[steps.{p}faq.next]]
to = "{exit}"
when = "the caller wants the next desk"
name = "{p}next_desk"

[steps.{p}escalate]
say = "I'm putting you through to a person at {kind} {n}."
then = "transfer_call"

[[steps.{p}escalate.next]]
to = "{p}take_message"
on_error = "transfer_call"

[steps.{p}take_message]
instructions = "Take a number to call back {{{{ captured.name | default('the caller') }}}} on."
capture = {{ callback = {{ type = "string", description = "digits only" }} }}

[[steps.{p}take_message.next]]
to = "{p}message_done"
if = "captured.callback"

[steps.{p}message_done]
say = "Thank you. {kind_title} {n} will call you back on {{{{ captured.callback }}}}."
then = "end_call"

[steps.{p}apologize]
say = '''Sorry{{{{ ', ' ~ captured.name if captured.name is defined else '' }}}}, that did
not work. Let me answer your questions instead.'''
then = "{p}faq"

[steps.{p}wrap]
say = '''You're booked at {{{{ captured.slot }}}}, {{{{ captured.name | title }}}}.
Your reference is {{{{ captured.ref }}}}.'''
then = "end_call"
"""

RULES = """
[llm]
provider = "rules"
default = "Sorry, I didn't catch that. Say book, billing or question."

[[llm.rules]]
steps = ["{p}greet"]
match = "\\\\bmy name is (?P<name>[a-z]+)"
goto = "{p}collect"
capture = {{ name = "{{{{ match.name }}}}" }}
reply = "Thanks {{{{ captured.name }}}}, one moment while I look you up."

[[llm.rules]]
steps = ["{p}greet", "{p}collect"]
match = "\\\\b(person|human|manager)\\\\b"
goto = "{p}escalate"

[[llm.rules]]
steps = ["{p}collect"]
match = "\\\\b(?P<id>\\\\d{{4,}})\\\\b"
tool = "lookup"
arguments = {{ account = "{{{{ match.id }}}}" }}

[[llm.rules]]
match = "\\\\b(bye|goodbye)\\\\b"
tool = "end_call"
"""

TOOLS = """
[[tools]]
use = "http"
name = "lookup"
description = "look the caller's account up by its number"
url = "https://crm.example.com/{n}/accounts/{{{{ args.account }}}}"
capture = {{ account = "result.account", tier = "result.tier" }}
[tools.parameters]
type = "object"
properties = {{ account = {{ type = "string" }} }}
required = ["account"]

[[tools]]
use = "calendar_slots"
database = "var/bench-{n}.sqlite"
hours = {{ "mon-fri" = "09:00-17:00" }}

[[tools]]
use = "calendar_book"
database = "var/bench-{n}.sqlite"
hours = {{ "mon-fri" = "09:00-17:00" }}
capture = {{ slot = "result.weekday ~ ' ' ~ result.time", ref = "result.reference" }}

[[tools]]
use = "end_call"
goodbye = "Thanks for calling {{{{ business_name }}}}. Goodbye!"

[[tools]]
use = "transfer_call"
to = "{{{{ desk_number }}}}"
allowed = ["+1555*"]

[[dispositions]]
name = "booked"
when = "captured.ref is defined"
"""

KINDS = ("dental clinic", "hair salon", "car workshop", "vet practice", "physio clinic")


def bot_text(n: int, bot_id: str, sections: int) -> str:
    """A bot with ``sections`` chained 10-step sections (each section's FAQ leads to the
    next section's greeting; the last one's back to the first)."""
    kind = KINDS[n % len(KINDS)]
    prefixes = [f"s{i}_" if sections > 1 else "" for i in range(sections)]
    fields = {"n": n, "kind": kind, "kind_title": kind.title(), "bot_id": bot_id}
    parts = [HEAD.format(p=prefixes[0], **fields)]
    for i, prefix in enumerate(prefixes):
        following = prefixes[(i + 1) % sections]
        threshold = f"0.{n % 1000:03d}{i}"  # each bot's own: its conditions differ
        parts.append(
            SECTION.format(p=prefix, exit=f"{following}greet", threshold=threshold, **fields)
        )
    parts.append(RULES.format(p=prefixes[0], **fields))
    parts.append(TOOLS.format(**fields))
    return "".join(parts)


def generate(root: Path, count: int, *, sections: int = 1) -> Path:
    """Write ``count`` flow bots and their prompts under ``root``; return bots/."""
    bots_dir = root / "bots"
    prompts_dir = root / "prompts"
    bots_dir.mkdir(parents=True)
    for name, text in SHARED_TEMPLATES.items():
        path = prompts_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for n in range(count):
        bot_id = f"flow_{n:04d}"
        kind = KINDS[n % len(KINDS)]
        confirm = prompts_dir / bot_id / "confirm.j2"
        confirm.parent.mkdir(parents=True)
        confirm.write_text(CONFIRM_TEMPLATE.format(kind=kind, n=n), encoding="utf-8")
        (bots_dir / f"{bot_id}.toml").write_text(bot_text(n, bot_id, sections), encoding="utf-8")
    return bots_dir


def timed(load: Callable[[], Any], reps: int) -> tuple[list[float], Any]:
    """One warm-up run, then ``reps`` timed runs (ms); returns the times and the last
    result."""
    result = load()
    times: list[float] = []
    for _ in range(reps):
        del result
        gc.collect()
        started = time.perf_counter()
        result = load()
        times.append((time.perf_counter() - started) * 1000)
    return times, result


def figures(times: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(times), 1),
        "p90": round(percentile(times, 90), 1),
        "min": round(min(times), 1),
        "max": round(max(times), 1),
    }


def toml_and_schema_ms(bots_dir: Path) -> float:
    """TOML parsing and the `Bot` schema (flow tables included) alone: the floor."""
    from runtime import toml_parser
    from runtime.schema import Bot

    started = time.perf_counter()
    for path in sorted(bots_dir.glob("*.toml")):
        data = toml_parser.loads(path.read_text(encoding="utf-8"))
        data.setdefault("id", path.stem)
        Bot.model_validate(data)
    return (time.perf_counter() - started) * 1000


def flow_checks_ms(load: Callable[[], Any]) -> float:
    """The time one load spends in `compile_flow` (the flow's graph, names, captures and
    its step templates), timed around each call."""
    import runtime.compiler as compiler

    real = compiler.compile_flow
    spent = 0.0

    def timed_compile_flow(*args: Any) -> Any:
        nonlocal spent
        started = time.perf_counter()
        try:
            return real(*args)
        finally:
            spent += time.perf_counter() - started

    compiler.compile_flow = timed_compile_flow  # type: ignore[assignment]
    try:
        gc.collect()
        load()
    finally:
        compiler.compile_flow = real
    return spent * 1000


def profile(load: Callable[[], Any], top: int = 25) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    load()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bots", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--profile", action="store_true", help="print cProfile's top functions to stderr"
    )
    args = parser.parse_args()

    from runtime.catalog import load_catalog
    from runtime.registry import load_registry

    registry = load_registry()
    with tempfile.TemporaryDirectory(prefix="dialplan-flow-bench-") as tmp:
        started = time.perf_counter()
        bots_dir = generate(Path(tmp) / "fleet", args.bots)
        generate_ms = (time.perf_counter() - started) * 1000
        one_dir = generate(Path(tmp) / "one", 1, sections=3)
        one_file = one_dir / "flow_0000.toml"

        def validate_all() -> Any:  # what `dialplan validate bots/` runs
            return load_catalog(bots_dir, registry, eager=True)

        def serve_all() -> Any:  # what a serving catalog runs (templates compile lazily)
            return load_catalog(bots_dir, registry)

        def validate_one() -> Any:
            return load_catalog([one_file], registry, eager=True)

        serve_times, snapshot = timed(serve_all, args.reps)
        problems = [str(p) for p in snapshot.problems]
        loaded = len(snapshot)
        steps = sum(len(bot.flow.steps) for bot in snapshot if bot.flow is not None)
        transitions = sum(
            len(step.transitions)
            for bot in snapshot
            if bot.flow is not None
            for step in bot.flow.steps.values()
        )
        del snapshot
        validate_times, validated = timed(validate_all, args.reps)
        problems += [str(p) for p in validated.problems]
        del validated
        in_flow_checks_ms = flow_checks_ms(serve_all)
        floor_ms = toml_and_schema_ms(bots_dir)
        one_times, one = timed(validate_one, max(args.reps, 15))
        one_problems = [str(p) for p in one.problems]
        one_steps = len(one.get("flow_0000").flow.steps) if not one_problems else 0
        if args.profile:
            print(profile(serve_all), file=sys.stderr)
            print(profile(validate_one), file=sys.stderr)

    catalog_median = statistics.median(serve_times)
    one_median = statistics.median(one_times)
    print(
        json.dumps(
            {
                "benchmark": "flow_catalog",
                "catalog": {
                    "bots_generated": args.bots,
                    "bots_loaded": loaded,
                    "steps": steps,
                    "transitions": transitions,
                    "problems": len(problems),
                    "problem_sample": problems[:3],
                    "reps": args.reps,
                    "load_catalog_ms": figures(serve_times),  # the target: what serving runs
                    "validate_eager_ms": figures(validate_times),  # `dialplan validate`
                    # of one load_catalog: time inside compile_flow, and TOML + schema alone
                    "flow_checks_ms": round(in_flow_checks_ms, 1),
                    "toml_and_schema_only_ms": round(floor_ms, 1),
                    "ms_per_bot_median": round(catalog_median / max(1, args.bots), 3),
                    "target_ms": TARGET_CATALOG_MS,
                    "meets_target": catalog_median < TARGET_CATALOG_MS
                    and loaded == args.bots
                    and not problems,
                },
                "one_bot": {
                    "steps": one_steps,
                    "problems": len(one_problems),
                    "problem_sample": one_problems[:3],
                    "reps": len(one_times),
                    "validate_ms": figures(one_times),
                    "target_ms": TARGET_ONE_BOT_MS,
                    "meets_target": one_median < TARGET_ONE_BOT_MS and not one_problems,
                },
                "generate_ms": round(generate_ms, 1),
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
