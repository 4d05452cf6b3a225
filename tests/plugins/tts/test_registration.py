"""The offline TTS providers as a bot author meets them: listed by `dialplan plugins`, and
their options checked by `dialplan validate` with a suggestion for a misspelt key."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli_run import run_dialplan, unlocated

BOT = '[prompt]\nsystem = "You are a test bot."\n[llm]\nprovider = "rules"\n[tts]\n'


def test_listed_by_dialplan_plugins(tmp_path: Path) -> None:
    run = run_dialplan("plugins", "--json", cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    listed = {
        (entry["kind"], entry["name"]): entry for entry in json.loads(run.stdout)["registered"]
    }
    for name in ("piper", "espeak"):
        entry = listed[("tts", name)]
        assert (entry["plugin"], entry["distribution"]) == (name, "dialplan")
        assert entry["description"].startswith("offline ")


def test_dialplan_validate_checks_the_options(tmp_path: Path) -> None:
    bots = tmp_path / "bots"
    bots.mkdir()
    (bots / "typo.toml").write_text(BOT + 'provider = "piper"\nsped = 1.2\n')
    (bots / "voice.toml").write_text(BOT + 'provider = "piper"\nvoice = "voices/nobody.onnx"\n')
    (bots / "espeak.toml").write_text(BOT + 'provider = "espeak"\nvoice = "en-uss"\n')
    (bots / "good.toml").write_text(BOT + 'provider = "espeak"\nvoice = "en-us+f3"\nrate = 160\n')

    run = run_dialplan("validate", "bots", cwd=tmp_path)

    assert run.returncode == 1
    lines = unlocated(run.lines)
    assert (
        "bots/typo.toml: tts.sped: unknown key (did you mean `speed`? "
        "allowed keys: deterministic, speaker, speed, voice, volume)"
    ) in lines
    assert f"bots/voice.toml: tts.voice: no voice model at {tmp_path}/voices/nobody.onnx" in lines
    [espeak] = [line for line in lines if line.startswith("bots/espeak.toml")]
    assert espeak.startswith(
        "bots/espeak.toml: tts.voice: eSpeak NG has no voice 'en-uss'; did you mean `en-us`?"
    )
    assert not [line for line in lines if line.startswith("bots/good.toml")]
