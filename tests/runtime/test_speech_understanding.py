"""The default offline stack understands callers: caller lines of the shipped bots
(tests/speech_set), spoken by a caller voice that is not the bot's, over a phone line
(hiss, μ-law at 8 kHz), recognized by the bot's own STT (Whisper tiny.en, told what the bot
expects), and the bot does the right thing with what it heard. This runs part of the set
through `dialplan test --voice`, as a bot author would; bench/speech_understanding.py runs
all of it, in every caller voice, and against pocketsphinx."""

from __future__ import annotations

import re
from pathlib import Path

from tests.cli_run import run_dialplan
from tests.conftest import REPO

SPEECH_SET = REPO / "tests" / "speech_set"


def test_callers_of_the_shipped_bots_are_understood_over_a_phone_line(tmp_path: Path) -> None:
    run = run_dialplan(
        "test",
        "receptionist",
        "reminder",
        "--bots",
        str(REPO / "bots"),
        "--scenarios",
        str(SPEECH_SET),
        "--voice",
        "bob",
        cwd=tmp_path,
    )
    summary = re.search(r"(\d+) passed, (\d+) failed", run.stderr)
    assert summary, run.stderr + run.stdout
    passed, failed = int(summary.group(1)), int(summary.group(2))
    assert passed + failed == 46  # every receptionist and reminder line, heard
    assert passed / (passed + failed) >= 0.9, run.stdout  # the bench: 95 % on the whole set
    rate = re.search(r"heard 46 caller lines in voice 'bob': word error rate ([\d.]+)%", run.stderr)
    assert rate, run.stderr
    assert float(rate.group(1)) <= 15.0
    # a failing turn says what the bot heard, so an author can tell the ear from the logic
    for line in run.stdout.splitlines():
        if line.strip().startswith("at turn"):
            assert "[heard: " in line


def test_every_shipped_bot_has_caller_lines_for_each_of_its_rules(registry) -> None:
    """The set covers each bot's rules: every `match` pattern of the bot's `rules` LLM is
    matched by the text of at least one of its caller lines (so a recognizer that hears
    them right exercises every rule)."""
    import tomllib

    for bot in ("receptionist", "dentist", "reminder"):
        rules = tomllib.loads((REPO / "bots" / f"{bot}.toml").read_text())["llm"]["rules"]
        lines = [
            turn["say"]
            for scenario in tomllib.loads((SPEECH_SET / f"{bot}.scenarios.toml").read_text())[
                "scenarios"
            ]
            for turn in scenario["turns"]
        ]
        assert len(lines) >= 12
        for rule in rules:
            if rule["match"] in (".", ".*") or rule.get("steps") == ["take_message"]:
                continue  # catch-alls; the call-back number rule needs digits (see the set)
            pattern = re.compile(rule["match"], re.IGNORECASE)
            assert any(pattern.search(line) for line in lines), (bot, rule["match"])
