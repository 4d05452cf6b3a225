"""`dialplan render`, `chat` and `schema` against the shipped bots, as real subprocesses.

Every command of this module is started at once (a chat pays ~3 s of livekit import) and
the tests read the shared results.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli_run import Run, cli_env

REPO = Path(__file__).resolve().parents[2]
DEMO_SCRIPT = "bots/receptionist.demo.txt"
TYPED_LINES = ["What are your opening hours?", "And where are you located?"]


def start(*args: str, stdin: str | None = None) -> Callable[[], Run]:
    env = cli_env()
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def finish() -> Run:
        stdout, stderr = process.communicate(stdin, timeout=60)
        return Run(process.returncode, stdout, stderr)

    return finish


@pytest.fixture(scope="module")
def runs() -> dict[str, Run]:
    started = {
        "validate": start("validate", "bots/"),
        "render_ann": start("render", "receptionist", "--var", "caller_name=Ann"),
        "render_bob": start("render", "receptionist", "--var", "caller_name=Bob"),
        "render_reminder": start("render", "reminder"),
        "schema": start("schema"),
        "chat_script": start(
            "chat", "receptionist", "--ignore-schedule", "--script", DEMO_SCRIPT, "--record", "-"
        ),
        "chat_typed": start(
            "chat",
            "receptionist",
            "--ignore-schedule",
            "--record",
            "-",
            stdin="".join(f"{line}\n" for line in TYPED_LINES),
        ),
        "chat_override": start(
            "chat",
            "receptionist",
            "--ignore-schedule",
            "--say",
            "Do you sell bicycles?",
            "--overrides",
            '{"llm": {"default": "override!"}}',
            "--record",
            "-",
        ),
    }
    return {name: finish() for name, finish in started.items()}


def customer_lines(record: dict[str, Any]) -> list[str]:
    return [entry["text"] for entry in record["transcript"] if entry["role"] == "customer"]


def bot_lines(record: dict[str, Any]) -> list[str]:
    return [entry["text"] for entry in record["transcript"] if entry["role"] == "bot"]


# -- render ----------------------------------------------------------------------------


def test_render_prints_static_and_per_call_parts_and_greeting(runs: dict[str, Run]) -> None:
    render = runs["render_ann"]
    assert render.returncode == 0, render.stderr
    static = render.section("static system prompt")
    assert static.startswith("You are the friendly receptionist of a dental clinic")
    assert "Ann" not in static
    assert render.section("per-call system prompt") == (
        "Clinic: Bright Smile Dental, 12 Harbour Street.\n"
        "Opening hours: Monday to Friday, 9 am to 5 pm.\n"
        "The caller's name is Ann."
    )
    assert render.section("greeting") == (
        "Hi Ann, thanks for calling Bright Smile Dental. How can I help you today?"
    )
    assert "## greeting (mode: speak)" in render.lines


def test_static_part_is_identical_for_every_call(runs: dict[str, Run]) -> None:
    ann, bob = runs["render_ann"], runs["render_bob"]
    assert ann.section("static system prompt") == bob.section("static system prompt")
    assert ann.section("per-call system prompt") != bob.section("per-call system prompt")
    assert f"({len(ann.section('static system prompt'))} chars," in ann.stdout


def test_included_template_keeps_its_line_breaks(runs: dict[str, Run]) -> None:
    static_lines = runs["render_ann"].section("static system prompt").splitlines()
    included = (REPO / "prompts/shared/voice_style.j2").read_text().splitlines()
    for line in included:
        assert line in static_lines


def test_render_without_required_variables_names_them(runs: dict[str, Run]) -> None:
    render = runs["render_reminder"]
    assert render.returncode == 1
    assert render.stdout == ""
    assert render.stderr.strip() == (
        "dialplan: error: bot 'reminder' needs the variable(s) customer_name, "
        "appointment_time for every call (pass them as call variables, "
        "e.g. --var customer_name=...)"
    )


# -- chat ------------------------------------------------------------------------------


def test_scripted_chat_ends_with_the_bot_hanging_up(runs: dict[str, Run]) -> None:
    chat = runs["chat_script"]
    assert chat.returncode == 0, chat.stderr
    record = chat.record()
    assert record["bot_id"] == "receptionist"
    assert record["disconnected_by"] == "bot"
    assert record["cause"] == "end_call tool"
    script = (REPO / DEMO_SCRIPT).read_text().splitlines()
    said = [line.strip() for line in script if line.strip() and not line.startswith("#")]
    assert customer_lines(record) == said
    assert [line.removeprefix("you> ") for line in chat.lines if line.startswith("you> ")] == said
    assert [line.removeprefix("bot> ") for line in chat.lines if line.startswith("bot> ")] == (
        bot_lines(record)
    )
    assert bot_lines(record)[-1] == "Thanks for calling Bright Smile Dental. Have a great day!"
    assert [e["data"]["name"] for e in record["events"] if e["type"] == "tool_call"] == ["end_call"]
    assert "[call ended: disconnected_by=bot" in chat.stderr


def test_chat_record_carries_the_version_validate_printed(runs: dict[str, Run]) -> None:
    validate = runs["validate"]
    assert validate.returncode == 0, validate.stdout + validate.stderr
    versions = dict(
        re.findall(r"^ok  (\S+)  version (\S+)  ", validate.stdout, re.M)  # id -> version
    )
    assert runs["chat_script"].record()["bot_version"] == versions["receptionist"]


def test_typed_chat_ends_when_the_caller_hangs_up(runs: dict[str, Run]) -> None:
    chat = runs["chat_typed"]
    assert chat.returncode == 0, chat.stderr
    record = chat.record()
    assert record["disconnected_by"] == "customer"
    assert customer_lines(record) == TYPED_LINES
    assert bot_lines(record) == [
        "Hi there, thanks for calling Bright Smile Dental. How can I help you today?",
        "We're open Monday to Friday, 9 am to 5 pm.",
        "We're at 12 Harbour Street.",
    ]
    assert "Talking to receptionist" in chat.stderr
    assert "you> " not in chat.stdout  # no prompt when stdin is not a terminal


def test_overrides_change_the_default_reply(runs: dict[str, Run]) -> None:
    chat = runs["chat_override"]
    assert chat.returncode == 0, chat.stderr
    record = chat.record()
    assert customer_lines(record) == ["Do you sell bicycles?"]
    assert bot_lines(record)[-1] == "override!"
    assert "bot> override!" in chat.lines
    assert record["disconnected_by"] == "customer"


# -- schema ----------------------------------------------------------------------------


def test_schema_lists_registered_providers_and_tools(runs: dict[str, Run]) -> None:
    schema_run = runs["schema"]
    assert schema_run.returncode == 0, schema_run.stderr
    schema = json.loads(schema_run.stdout)
    llm_variants = schema["properties"]["llm"]["anyOf"]
    rules = [v for v in llm_variants if v["properties"]["provider"] == {"const": "rules"}]
    assert len(rules) == 1
    assert {"default", "opening", "rules"} <= set(rules[0]["properties"])
    assert rules[0]["additionalProperties"] is False
    tool_variants = schema["properties"]["tools"]["items"]["anyOf"]
    assert any(v["properties"]["use"] == {"const": "end_call"} for v in tool_variants)
