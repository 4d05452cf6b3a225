"""The silero VAD as a bot author meets it: listed by `dialplan plugins`, and its options
checked by `dialplan validate` with a suggestion for a misspelt key."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli_run import run_dialplan, unlocated

BOT = '[prompt]\nsystem = "You are a test bot."\n[llm]\nprovider = "rules"\n[vad]\n'


def test_listed_by_dialplan_plugins(tmp_path: Path) -> None:
    run = run_dialplan("plugins", "--json", cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    listed = {
        (entry["kind"], entry["name"]): entry for entry in json.loads(run.stdout)["registered"]
    }
    entry = listed[("vad", "silero")]
    assert (entry["plugin"], entry["distribution"]) == ("silero", "dialplan")


def test_dialplan_validate_checks_the_options(tmp_path: Path) -> None:
    bots = tmp_path / "bots"
    bots.mkdir()
    (bots / "typo.toml").write_text(BOT + 'provider = "silero"\nmin_silence_duraton = 0.3\n')
    (bots / "good.toml").write_text(BOT + 'provider = "silero"\nmin_silence_duration = 0.3\n')

    run = run_dialplan("validate", "bots", cwd=tmp_path)

    assert run.returncode == 1
    assert unlocated(run.lines)[0] == (
        "bots/typo.toml: vad.min_silence_duraton: unknown key (did you mean "
        "`min_silence_duration`? allowed keys: activation_threshold, batched, "
        "min_silence_duration, min_speech_duration, prefix_padding_duration, telephone_at_8k)"
    )
    assert not [line for line in unlocated(run.lines) if line.startswith("bots/good.toml")]
