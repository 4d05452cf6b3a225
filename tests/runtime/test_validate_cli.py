"""`dialplan validate` as a bot author runs it: a real subprocess over real files, one line
per problem naming the file, the key and the fix, exit status 1; `ok` lines and status 0
for valid bots."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

from runtime.record import RECORD_FIELDS
from runtime.registry import load_registry
from runtime.schema import Bot, Limits
from tests.cli_run import Run, cli_env, run_dialplan

REPO = Path(__file__).resolve().parents[2]
TOOLS = ", ".join(sorted(load_registry().tools))  # the list the message must print
LLM_PROVIDERS = (
    "litellm, rules" if importlib.util.find_spec("plugins.llm.litellm") is not None else "rules"
)


def dialplan(*args: str, cwd: Path) -> Run:
    return run_dialplan(*args, cwd=cwd)


def bot_toml(*, top: str = "", prompt: str = "", llm: str = "", tail: str = "") -> str:
    """A minimal valid bot with one thing changed."""
    return "\n".join(
        [
            top,
            "[prompt]",
            prompt or 'system = "You are a test bot."',
            "[llm]",
            'provider = "rules"',
            llm,
            tail,
            "",
        ]
    )


def allowed(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


# file stem -> (bot file, the exact problem line, located at the key's line and column;
# "{prompts}" is the resolved prompts/ dir)
CASES: dict[str, tuple[str, str]] = {
    "top_level_key": (
        bot_toml(top='descripton = "typo"'),
        "bots/top_level_key.toml:1:1: descripton: unknown key "
        f"(did you mean `description`? allowed keys: {allowed(Bot.model_fields)})",
    ),
    "nested_key": (
        bot_toml(tail='[limits]\nmax_duraton = "5m"'),
        "bots/nested_key.toml:8:1: limits.max_duraton: unknown key "
        f"(did you mean `max_duration`? allowed keys: {allowed(Limits.model_fields)})",
    ),
    "wrong_type": (
        bot_toml(tail='[limits]\nmax_tool_steps = "many"'),
        "bots/wrong_type.toml:8:1: limits.max_tool_steps: Input should be a valid integer, "
        "unable to parse string as an integer (got 'many')",
    ),
    "bad_duration": (
        bot_toml(tail='[limits]\nsilence_timeout = "20 parsecs"'),
        "bots/bad_duration.toml:8:1: limits.silence_timeout: '20 parsecs' is not a duration; "
        "write e.g. '250ms', '20s', '15m' or '1h30m'",
    ),
    "unknown_provider": (
        bot_toml().replace('provider = "rules"', 'provider = "rulez"'),
        "bots/unknown_provider.toml:5:1: llm.provider: unknown LLM provider 'rulez' "
        f"(did you mean `rules`? registered LLM providers: {LLM_PROVIDERS})",
    ),
    "bad_rules_option": (
        bot_toml(llm='defualt = "Pardon?"'),
        "bots/bad_rules_option.toml:6:1: llm.defualt: unknown key "
        "(did you mean `default`? allowed keys: default, opening, rules)",
    ),
    "template_syntax": (
        bot_toml(prompt='system = "broken/system.j2"'),
        "{prompts}/broken/system.j2:2: prompt.system: template syntax error: "
        "Expected an expression, got 'end of statement block'",
    ),
    "missing_include": (
        bot_toml(prompt='system = "partial/system.j2"'),
        "{prompts}/partial/system.j2:2: prompt.system: template file 'partial/missing.j2' "
        "not found (included from 'partial/system.j2') "
        "(create {prompts}/partial/missing.j2 or fix the file name)",
    ),
    "undefined_variable": (
        bot_toml(
            prompt='system = "You are a test bot."\ncontext = "You call {{ custmer_name }}."',
            tail='[variables]\ncustomer_name = "Ann"\nclinic = "Bright Smile"',
        ),
        "bots/undefined_variable.toml:4:1: prompt.context: uses undefined variable `custmer_name` "
        "(declare it under [variables]; did you mean `customer_name`? "
        "declared: clinic, customer_name)",
    ),
    "static_per_call": (
        bot_toml(
            prompt='system = "You call {{ customer_name }}."',
            tail='[variables]\ncustomer_name = "Ann"',
        ),
        "bots/static_per_call.toml:3:1: prompt.system: uses `customer_name`, but the static "
        "system prompt may only use `bot.*` (it is identical for every call so providers can "
        "cache it) (move per-call details to `prompt.context`)",
    ),
    "unknown_tool": (
        bot_toml(tail='[[tools]]\nuse = "end_cal"'),
        "bots/unknown_tool.toml:8:1: tools[0].use: unknown tool 'end_cal' "
        f"(did you mean `end_call`? registered tools: {TOOLS})",
    ),
    "unbound_tool": (
        bot_toml(llm='[[llm.rules]]\nmatch = "bye"\ntool = "end_call"'),
        "bots/unbound_tool.toml:8:1: llm.rules[0].tool: calls tool 'end_call', which this bot "
        "does not bind (add it under [[tools]]; bound tools: (none))",
    ),
    "bad_expression": (
        bot_toml(tail='[[dispositions]]\nname = "short"\nwhen = "duration <"'),
        "bots/bad_expression.toml:9:1: dispositions[0].when: invalid expression 'duration <': "
        "unexpected 'end of template'",
    ),
    "unknown_field": (
        bot_toml(tail='[[dispositions]]\nname = "short"\nwhen = "duraton < 5"'),
        "bots/unknown_field.toml:9:1: dispositions[0].when: unknown name `duraton` in "
        "'duraton < 5' (did you mean `duration`? call record fields: "
        f"{allowed(RECORD_FIELDS)})",
    ),
    "bad_timezone": (
        bot_toml(tail='[schedule]\ntimezone = "Mars/Olympus_Mons"'),
        "bots/bad_timezone.toml:8:1: schedule.timezone: unknown time zone 'Mars/Olympus_Mons'; "
        "use an IANA name like 'Europe/Berlin'",
    ),
    "twin_a": (bot_toml(top='id = "twin"'), ""),  # valid: the first file with the id wins
    "twin_b": (
        bot_toml(top='id = "twin"'),
        "bots/twin_b.toml:1:1: id: bot id 'twin' is already used by bots/twin_a.toml "
        "(give one of them a different `id` or file name)",
    ),
    "good": (bot_toml(tail='[[tools]]\nuse = "end_call"'), ""),
}
BROKEN_TOML = 'description = "fine"\nprompt = { system = "unterminated\n'
PROBLEM_CASES = sorted(name for name, (_, line) in CASES.items() if line)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("validate").resolve()
    bots, prompts = root / "bots", root / "prompts"
    bots.mkdir()
    (prompts / "broken").mkdir(parents=True)
    (prompts / "partial").mkdir()
    (prompts / "broken" / "system.j2").write_text("You are a test bot.\n{% if %}yes{% endif %}\n")
    (prompts / "partial" / "system.j2").write_text(
        'You are a test bot.\n{% include "partial/missing.j2" %}\n'
    )
    for name, (source, _) in CASES.items():
        (bots / f"{name}.toml").write_text(source)
    (bots / "broken_toml.toml").write_text(BROKEN_TOML)
    return root


@pytest.fixture(scope="module")
def validate_run(project: Path) -> Run:
    return dialplan("validate", "bots", cwd=project)


def expected_line(project: Path, name: str) -> str:
    return CASES[name][1].replace("{prompts}", str(project / "prompts"))


@pytest.mark.parametrize("name", PROBLEM_CASES)
def test_problem_line(validate_run: Run, project: Path, name: str) -> None:
    assert expected_line(project, name) in validate_run.lines


def test_missing_include_names_the_including_template(validate_run: Run, project: Path) -> None:
    [line] = [line for line in validate_run.lines if "partial/missing.j2" in line]
    assert line.startswith(f"{project}/prompts/partial/system.j2")
    assert "included from 'partial/system.j2'" in line


def test_broken_toml_has_line_and_column(validate_run: Run) -> None:
    [line] = [line for line in validate_run.lines if line.startswith("bots/broken_toml.toml")]
    assert line.startswith("bots/broken_toml.toml:2:34: TOML syntax error: ")
    assert line.endswith("(see https://toml.io for the syntax)")


def test_one_line_per_problem_and_exit_status_1(validate_run: Run, project: Path) -> None:
    assert validate_run.returncode == 1
    expected = sorted(
        [expected_line(project, name) for name in PROBLEM_CASES]
        + [line for line in validate_run.lines if line.startswith("bots/broken_toml.toml:")]
    )
    assert sorted(validate_run.lines) == expected
    assert len(expected) == len(PROBLEM_CASES) + 1
    problems = len(PROBLEM_CASES) + 1
    assert validate_run.stderr.strip() == (
        f"{problems} problem(s) in {problems} file(s); 2 bot(s) valid"
    )


def test_bad_provider_option_of_litellm(tmp_path: Path) -> None:
    litellm_plugin = pytest.importorskip("plugins.llm.litellm")
    (tmp_path / "bots").mkdir()
    (tmp_path / "bots" / "cloud.toml").write_text(
        bot_toml().replace(
            'provider = "rules"',
            'provider = "litellm"\nmodel = "openai/gpt-4o-mini"\ntemprature = 0.2',
        )
    )
    run = dialplan("validate", "bots", cwd=tmp_path)
    keys = allowed(litellm_plugin.LiteLLMOptions.model_fields)
    assert run.lines == [
        "bots/cloud.toml:7:1: llm.temprature: unknown key "
        f"(did you mean `temperature`? allowed keys: {keys})"
    ]
    assert run.returncode == 1


def test_shipped_bots_are_valid() -> None:
    run = dialplan("validate", "bots/", cwd=REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    shipped = sorted(
        path.stem
        for path in (REPO / "bots").glob("*.toml")
        if not path.name.endswith(".scenarios.toml")
    )
    pattern = re.compile(r"^ok  ([a-z0-9_-]+)  version [0-9a-f]{12}  \(bots/\1\.toml\)$")
    bots = [line for line in run.lines if " scenarios  " not in line]
    matches = [pattern.match(line) for line in bots]
    assert all(matches), run.lines
    assert sorted(m.group(1) for m in matches if m) == shipped
    checked = [line.split()[1] for line in run.lines if " scenarios  " in line]
    assert checked == sorted(
        p.name[: -len(".scenarios.toml")] for p in (REPO / "bots").glob("*.scenarios.toml")
    )
    assert run.stderr == ""


def test_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    run = dialplan("validate", "nowhere", cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip() == "dialplan: nowhere: no such file or directory"


PROBE = """
import contextlib, io, json, sys
import runtime.cli

report = {}
for argv in (["validate", "bots/"], ["plugins"], ["schema"],
             ["render", "receptionist", "--var", "caller_name=Ann"]):
    with contextlib.redirect_stdout(io.StringIO()):
        status = runtime.cli.main(argv)
    report[argv[0]] = {
        "status": status,
        "livekit": any(m == "livekit" or m.startswith("livekit.") for m in sys.modules),
        "litellm": any(m == "litellm" or m.startswith("litellm.") for m in sys.modules),
    }
print(json.dumps(report))
"""


def test_validate_and_friends_never_import_livekit_or_litellm() -> None:
    run = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    clean = {"status": 0, "livekit": False, "litellm": False}
    assert report == {"validate": clean, "plugins": clean, "schema": clean, "render": clean}


def test_scenario_files_are_validated_against_their_bot(tmp_path: Path) -> None:
    """`dialplan validate` checks the scenario files beside the bots, every problem in
    one run: mocks and expected tools the bot does not have, arguments a tool does not
    take, steps and captured values its flow does not know."""
    import shutil

    from tests.conftest import REPO

    shutil.copytree(REPO / "bots", tmp_path / "bots")
    shutil.copytree(REPO / "prompts", tmp_path / "prompts")
    scenarios = tmp_path / "bots" / "dentist.scenarios.toml"
    scenarios.write_text(
        """
[[scenarios]]
name = "typos everywhere"
start_step = "bookin"
captured = { patient = "Ann" }
mocks = { calendar_slot = { result = 1 } }
[[scenarios.turns]]
say = "monday?"
expect_tool = { name = "calendar_slots", arguments = { dat = "monday" } }
expect_step = "confirmaton"
[[scenarios.turns]]
say = "bye"
expect_tool = "end_cal"
"""
    )
    run = run_dialplan("validate", "bots", cwd=tmp_path)
    assert run.returncode == 1
    found = [line.split("dentist.scenarios.toml:")[1] for line in run.stdout.splitlines()]
    # each at its key's line (the inline tables' keys: the line holding them)
    assert [line.split(": ")[0] for line in found] == ["6:1", "4:1", "5:1", "9:1", "10:1", "13:1"]
    lines = [line.split(": ", 1)[1] for line in found]
    assert lines == [
        "scenarios[0].mocks.calendar_slot: bot 'dentist' binds no tool 'calendar_slot' "
        "(did you mean `calendar_slots`? bound tools: calendar_book, calendar_slots, "
        "end_call, transfer_call)",
        "scenarios[0].start_step: no step named 'bookin' (did you mean `booking`? steps: "
        "triage, booking, confirmation, wrap_up, emergency, take_message, message_taken)",
        "scenarios[0].captured.patient: bot 'dentist' captures no value 'patient' (did you "
        "mean `patient_name`? captured values: appointment, booking_ref, callback_number, "
        "patient_name, service)",
        "scenarios[0].turns[0].expect_tool.arguments.dat: tool 'calendar_slots' takes no "
        "argument 'dat' (did you mean `date`? its arguments: date, service)",
        "scenarios[0].turns[0].expect_step: no step named 'confirmaton' (did you mean "
        "`confirmation`? steps: triage, booking, confirmation, wrap_up, emergency, "
        "take_message, message_taken)",
        "scenarios[0].turns[1].expect_tool.name: bot 'dentist' has no tool 'end_cal' (did "
        "you mean `end_call`? its tools: calendar_book, calendar_slots, end_call, go_to_booking, "
        "go_to_emergency, go_to_wrap_up, remember, transfer_call)",
    ]
    # named on its own, a scenario file is checked against the bots beside it, not as a bot
    alone = run_dialplan("validate", "bots/reminder.scenarios.toml", cwd=tmp_path)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert "ok  reminder scenarios  2 scenario(s)" in alone.stdout
