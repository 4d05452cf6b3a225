"""The offline STT providers as a bot author meets them: listed by `dialplan plugins`, and
their options checked by `dialplan validate` with a suggestion for a misspelt key."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli_run import run_dialplan, unlocated

BOT = '[prompt]\nsystem = "You are a test bot."\n[llm]\nprovider = "rules"\n[stt]\n'


def test_listed_by_dialplan_plugins(tmp_path: Path) -> None:
    run = run_dialplan("plugins", "--json", cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    listed = {
        (entry["kind"], entry["name"]): entry for entry in json.loads(run.stdout)["registered"]
    }
    for name in ("pocketsphinx", "faster_whisper"):
        entry = listed[("stt", name)]
        assert (entry["plugin"], entry["distribution"]) == (name, "dialplan")
        assert entry["description"].startswith("offline ")


def test_dialplan_validate_checks_the_options(tmp_path: Path) -> None:
    bots = tmp_path / "bots"
    bots.mkdir()
    (bots / "typo.toml").write_text(BOT + 'provider = "pocketsphinx"\nlanguge = "en"\n')
    (bots / "language.toml").write_text(BOT + 'provider = "pocketsphinx"\nlanguage = "de"\n')
    (bots / "grammar.toml").write_text(
        BOT + 'provider = "pocketsphinx"\ngrammar = ["opening hours", "zorbex"]\n'
    )
    (bots / "whisper.toml").write_text(BOT + 'provider = "faster_whisper"\nbeam = 5\n')
    (bots / "good.toml").write_text(
        BOT + 'provider = "pocketsphinx"\ngrammar = ["yes", "no"]\nwords = { yup = "Y AH P" }\n'
    )

    run = run_dialplan("validate", "bots", cwd=tmp_path)

    assert run.returncode == 1
    lines = unlocated(run.lines)
    assert (
        "bots/typo.toml: stt.languge: unknown key "
        "(did you mean `language`? allowed keys: grammar, language, words)"
    ) in lines
    [language] = [line for line in lines if line.startswith("bots/language.toml")]
    assert language.startswith(
        "bots/language.toml: stt.language: pocketsphinx has no model for language 'de'; "
        "installed: en-us"
    )
    assert (
        "bots/grammar.toml: stt.grammar: phrase 1 ('zorbex'): 'zorbex' is not in the en-us "
        "dictionary (spell it differently, or give its pronunciation under `words`, "
        'e.g. words = { zorbex = "..." })'
    ) in lines
    [whisper] = [line for line in lines if line.startswith("bots/whisper.toml")]
    assert whisper.startswith("bots/whisper.toml: stt.beam: unknown key (did you mean `beam_size`?")
    assert not [line for line in lines if line.startswith("bots/good.toml")]
