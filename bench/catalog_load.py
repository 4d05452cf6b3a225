"""Catalog load benchmark: load + validate + compile 1,000 generated bots.

Generates 1,000 realistic bots in a temporary directory (``bots/*.toml`` plus ``prompts/``:
a per-bot system prompt file that ``{% include %}``s a few shared files, an inline per-call
context template with variables, a greeting, a ``rules`` LLM with 5 rules, an ``end_call``
tool, dispositions, limits and a schedule), then times
``runtime.catalog.load_catalog(bots_dir, registry)`` over several repetitions. The registry
is loaded once, outside the timed region; its load time is reported separately.

Target: under 1 s (median) for 1,000 bots, with 0 problems.

    uv run python bench/catalog_load.py [--bots 1000] [--reps 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_stats import machine, percentile

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_MS = 1000.0

SHARED_TEMPLATES = {
    "shared/voice_style.j2": (
        "You are speaking on a phone call. Keep every reply short: one or two sentences.\n"
        "Never use lists, markdown or emoji; say numbers and times the way a person would.\n"
        "If you did not understand the caller, ask them to repeat instead of guessing.\n"
    ),
    "shared/safety.j2": (
        "Never give medical, legal or financial advice. For emergencies, tell the caller to\n"
        "hang up and dial 911. Never ask for card numbers or passwords.\n"
        '{% include "shared/escalation.j2" %}\n'
    ),
    "shared/escalation.j2": (
        "If the caller is upset or asks for a human, apologise and offer a call back.\n"
    ),
    "shared/closing.j2": (
        "When the caller is done, say goodbye and use the end_call tool.\n"
        "Do not end the call while the caller is still asking questions.\n"
    ),
    "shared/analysis.j2": (
        "Read the call transcript between an assistant (bot) and a caller (customer).\n"
        "Decide whether the caller asked for an appointment, the caller's sentiment,\n"
        "and write a one-sentence summary.\n"
    ),
}

SYSTEM_TEMPLATE = """\
You are the friendly receptionist of {kind} number {n} ({{{{ bot.description }}}}).
You answer questions about opening hours, prices and location, and you take appointment
requests. You speak {{{{ bot.language }}}}.
{{% include "shared/voice_style.j2" %}}
{{% include "shared/safety.j2" %}}
{{% if bot.id.endswith("{suffix}") %}}Mention the loyalty programme when it fits.{{% endif %}}
{{% include "shared/closing.j2" %}}
"""

BOT_TEMPLATE = '''\
# generated benchmark bot {n}
description = "{kind_title} {n} receptionist (inbound)"
language = "en"

[prompt]
system = "{bot_id}/system.j2"
context = """
Business: {{{{ business_name }}}}, {{{{ business_address }}}} (branch {n}).
Opening hours: {{{{ business_hours }}}}.
Services: {{{{ services | join(", ") }}}}.
{{% if caller_name != "{stranger}" %}}The caller's name is {{{{ caller_name }}}}.{{% endif %}}
{{% if call.caller %}}Caller number: {{{{ call.caller }}}}.{{% endif %}}
"""
greeting = "Hi {{{{ caller_name }}}}, thanks for calling {{{{ business_name }}}}, branch {n}."
greeting_mode = "speak"

[variables]
business_name = "{kind_title} {n}"
business_hours = "Monday to Friday, 9 am to 5 pm"
business_address = "{n} Harbour Street"
services = ["cleaning", "check-up", "whitening", "x-ray"]
caller_name = {{ default = "there", description = "the caller's first name, if known" }}
account_id = {{ required = false, default = "", description = "CRM id" }}

[llm]
provider = "rules"
default = "Sorry, I didn't catch that. I can tell you our hours, our address, or book a visit."
opening = "Hello, {{{{ business_name }}}} here. How can I help?"

[[llm.rules]]
match = "\\\\b(hours|open|close|closing)\\\\b"
reply = "We're open {{{{ business_hours }}}}."

[[llm.rules]]
match = "\\\\b(where|address|located|location)\\\\b"
reply = "We're at {{{{ business_address }}}}, branch {n}."

[[llm.rules]]
match = "\\\\b(book|appointment|cleaning|check-?up)\\\\b"
reply = "Happy to help you book. Which day suits you best?"

[[llm.rules]]
match = "\\\\b(?P<day>monday|tuesday|wednesday|thursday|friday)\\\\b"
reply = "{{{{ match.day | capitalize }}}} works. Our team will confirm the time by text."

[[llm.rules]]
match = "\\\\b(bye|goodbye|that's all|thank you|thanks)\\\\b"
tool = "end_call"
arguments = {{ reason = "caller said {{{{ match.text }}}}" }}

[[tools]]
use = "end_call"
goodbye = "Thanks for calling {{{{ business_name }}}}. Have a great day!"

[turn]
min_endpointing_delay = "400ms"
max_endpointing_delay = "2.5s"

[limits]
max_duration = "10m"
silence_timeout = "20s"
silence_reminders = ["Are you still there?", "Branch {n}: still there, {{{{ caller_name }}}}?"]
max_tool_steps = 3

[schedule]
timezone = "{timezone}"
hours = {{ "mon-fri" = "09:00-17:00", sat = "10:00-14:00" }}
closed_message = "{{{{ business_name }}}} ({n}) is closed now. We're open {{{{ business_hours }}}}."

[[dispositions]]
name = "no_customer_message"
when = "not has_customer_message"
skip_analysis = true

[[dispositions]]
name = "short_call"
when = "duration < 5"
skip_analysis = true

[analysis]
prompt = "shared/analysis.j2"
fields = {{ appointment_requested = "bool", sentiment = ["positive", "neutral", "negative"] }}
'''

KINDS = ("dental clinic", "hair salon", "car workshop", "vet practice", "physio clinic")
TIMEZONES = ("America/New_York", "Europe/Berlin", "Asia/Kolkata", "UTC", "America/Chicago")


def generate(root: Path, count: int, *, distinct_shapes: bool = False) -> Path:
    """Write ``count`` bots and their prompts under ``root``; return the bots directory.

    Like a real fleet, the bots are clones that differ in their literal text, so templates
    share their token shapes. ``distinct_shapes`` gives every bot's templates a shape of
    their own (a constant inside a tag differs): the worst case for the loader."""
    bots_dir = root / "bots"
    prompts_dir = root / "prompts"
    bots_dir.mkdir(parents=True)
    for name, text in SHARED_TEMPLATES.items():
        path = prompts_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for n in range(count):
        bot_id = f"bot_{n:04d}"
        kind = KINDS[n % len(KINDS)]
        system = prompts_dir / bot_id / "system.j2"
        system.parent.mkdir(parents=True)
        suffix = str(n) if distinct_shapes else "7"
        system.write_text(SYSTEM_TEMPLATE.format(kind=kind, n=n, suffix=suffix), encoding="utf-8")
        (bots_dir / f"{bot_id}.toml").write_text(
            BOT_TEMPLATE.format(
                n=n,
                bot_id=bot_id,
                kind_title=kind.title(),
                timezone=TIMEZONES[n % len(TIMEZONES)],
                stranger=f"there{n}" if distinct_shapes else "there",
            ),
            encoding="utf-8",
        )
    return bots_dir


def toml_and_schema_ms(bots_dir: Path) -> float:
    from runtime import toml_parser
    from runtime.schema import Bot

    started = time.perf_counter()
    for path in sorted(bots_dir.glob("*.toml")):
        data = toml_parser.loads(path.read_text(encoding="utf-8"))
        data.setdefault("id", path.stem)
        Bot.model_validate(data)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bots", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--distinct-shapes",
        action="store_true",
        help="no two bots share a template shape (worst case; see generate())",
    )
    args = parser.parse_args()

    started = time.perf_counter()
    from runtime.registry import load_registry

    registry_import_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    registry = load_registry()
    registry_cold_ms = (time.perf_counter() - started) * 1000
    warm: list[float] = []
    for _ in range(5):
        started = time.perf_counter()
        load_registry()
        warm.append((time.perf_counter() - started) * 1000)

    from runtime.catalog import load_catalog

    with tempfile.TemporaryDirectory(prefix="dialplan-bench-") as tmp:
        started = time.perf_counter()
        bots_dir = generate(Path(tmp), args.bots, distinct_shapes=args.distinct_shapes)
        generate_ms = (time.perf_counter() - started) * 1000
        bot_bytes = sum(p.stat().st_size for p in bots_dir.glob("*.toml"))

        # first load: includes first-use costs (lazy imports, zoneinfo, regex caches)
        started = time.perf_counter()
        snapshot = load_catalog(bots_dir, registry)
        first_ms = (time.perf_counter() - started) * 1000
        first_problems = [str(p) for p in snapshot.problems]
        loaded = len(snapshot)
        del snapshot

        times: list[float] = []
        problems = 0
        for _ in range(args.reps):
            gc.collect()
            started = time.perf_counter()
            snapshot = load_catalog(bots_dir, registry)
            times.append((time.perf_counter() - started) * 1000)
            problems = max(problems, len(snapshot.problems))
            del snapshot

        floor_ms = toml_and_schema_ms(bots_dir)

    median = statistics.median(times)
    print(
        json.dumps(
            {
                "benchmark": "catalog_load",
                "bots_generated": args.bots,
                "distinct_template_shapes": args.distinct_shapes,
                "bots_loaded": loaded,
                "problems": max(problems, len(first_problems)),
                "problem_sample": first_problems[:3],
                "bot_files_kib": round(bot_bytes / 1024, 1),
                "reps": args.reps,
                "load_catalog_ms": {
                    "first": round(first_ms, 1),
                    "median": round(median, 1),
                    "p90": round(percentile(times, 90), 1),
                    "min": round(min(times), 1),
                    "max": round(max(times), 1),
                },
                "ms_per_bot_median": round(median / max(1, args.bots), 3),
                # TOML parsing + Bot schema only (no templates, no plugin options): the
                # floor of the current design, for a single process with no cache
                "toml_and_schema_only_ms": round(floor_ms, 1),
                "registry_ms": {
                    "import_runtime_registry": round(registry_import_ms, 1),
                    "first_load": round(registry_cold_ms, 1),
                    "warm_median": round(statistics.median(warm), 2),
                },
                "generate_ms": round(generate_ms, 1),
                "target_ms": TARGET_MS,
                "meets_target": median < TARGET_MS
                and loaded == args.bots
                and not problems
                and not first_problems,
                "machine": machine(),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
