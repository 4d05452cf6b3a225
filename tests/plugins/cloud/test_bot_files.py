"""Cloud providers named in bot files: validated through the normal catalog path (without
importing livekit), and built by a call from the planned options."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from livekit.plugins import cartesia, deepgram

import runtime
from plugins.stt.deepgram import DeepgramSTTOptions
from plugins.tts.cartesia import CartesiaTTSOptions
from runtime.catalog import load_catalog
from runtime.registry import Registry
from runtime.resolve import plan_call
from tests.cli_run import cli_env

from .conftest import KEYS

VOICE = "a0e99841-438c-4a64-b679-ae501e7d6091"


def cloud_bot(stt: str = 'model = "nova-3"', tts: str = f'voice = "{VOICE}"') -> str:
    return f"""
language = "en-US"
[prompt]
system = "You are the front desk."
[llm]
provider = "rules"
[stt]
provider = "deepgram"
{stt}
[tts]
provider = "cartesia"
{tts}
"""


def allowed(model: type[Any]) -> str:
    return ", ".join(sorted(model.model_fields))


def test_a_bot_with_deepgram_and_cartesia_validates(
    bot_dir: Callable[..., Path], registry: Registry
) -> None:
    toml = cloud_bot(
        stt='model = "nova-3"\nkeyterm = ["Bright Smile"]\nsmart_format = true',
        tts='model = "sonic-3"\nvoice = "' + VOICE + '"\nspeed = 1.1\nsample_rate = 16000',
    )
    snapshot = load_catalog(bot_dir("front-desk", toml), registry)

    assert snapshot.problems == ()
    options = snapshot.get("front-desk").provider_options
    assert options["stt"] == DeepgramSTTOptions(
        model="nova-3", keyterm=["Bright Smile"], smart_format=True
    )
    assert options["tts"] == CartesiaTTSOptions(
        model="sonic-3", voice=VOICE, speed=1.1, sample_rate=16000
    )


async def test_a_call_builds_livekits_stt_and_tts_from_the_bot_file(
    bot_dir: Callable[..., Path],
    registry: Registry,
    fake_keys: dict[str, str],
    closing: Callable[[Any], Any],
) -> None:
    snapshot = load_catalog(bot_dir("front-desk", cloud_bot()), registry)
    plan = plan_call(snapshot, runtime.CallRequest(bot="front-desk"), registry)
    call = plan.new_context()
    built = {
        kind: closing(plan.providers[kind].entry.factory(plan.providers[kind].options, call))
        for kind in ("stt", "tts")
    }

    assert isinstance(built["stt"], deepgram.STT)
    assert isinstance(built["tts"], cartesia.TTS)
    assert (built["stt"]._opts.language, built["tts"]._opts.language) == ("en-US", "en-US")
    assert built["tts"]._opts.voice == VOICE
    assert built["stt"]._api_key == KEYS["DEEPGRAM_API_KEY"]


def test_a_typo_in_an_option_key_suggests_the_option(
    bot_dir: Callable[..., Path], registry: Registry
) -> None:
    toml = cloud_bot(stt='modle = "nova-3"', tts=f'voice = "{VOICE}"\nsped = 1.1')
    bots = bot_dir("front-desk", toml)
    snapshot = load_catalog(bots, registry)

    path = bots / "front-desk.toml"
    lines = path.read_text().splitlines()
    modle = lines.index('modle = "nova-3"') + 1
    sped = lines.index("sped = 1.1") + 1
    assert [str(problem) for problem in snapshot.problems] == [
        f"{path}:{modle}:1: stt.modle: unknown key "
        f"(did you mean `model`? allowed keys: {allowed(DeepgramSTTOptions)})",
        f"{path}:{sped}:1: tts.sped: unknown key "
        f"(did you mean `speed`? allowed keys: {allowed(CartesiaTTSOptions)})",
    ]


@pytest.mark.parametrize(
    ("stt", "tts", "problem"),
    [
        (
            'model = "nova-33"',
            f'voice = "{VOICE}"',
            "stt.model: unknown Deepgram model 'nova-33'; did you mean `nova-3`? ",
        ),
        (
            'model = "nova-3"',
            'voice = "Katie"',
            "tts.voice: 'Katie' is not a Cartesia voice id: give the voice's id",
        ),
        (
            'api_key = "dg-plain-text-key"',
            f'voice = "{VOICE}"',
            'stt.api_key: secrets are read from the environment only: write "${env:NAME}"',
        ),
    ],
)
def test_a_bad_option_value_is_a_problem_of_the_bot_file(
    bot_dir: Callable[..., Path], registry: Registry, stt: str, tts: str, problem: str
) -> None:
    bots = bot_dir("front-desk", cloud_bot(stt=stt, tts=tts))
    (found,) = load_catalog(bots, registry).problems
    where = f"{bots / 'front-desk.toml'}:{found.line}:{found.column}"
    assert found.line is not None and str(found).startswith(f"{where}: {problem}")


PROBE = """
import contextlib, io, json, sys
import runtime.cli

with contextlib.redirect_stdout(io.StringIO()) as out:
    status = runtime.cli.main(["validate", "bots/"])
heavy = ("livekit", "openai")
print(json.dumps({"status": status, "out": out.getvalue(),
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in heavy)}))
"""


def test_validate_does_not_import_livekit_for_cloud_bots(bot_dir: Callable[..., Path]) -> None:
    bots = bot_dir("front-desk", cloud_bot())
    run = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=bots.parent,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["status"] == 0, report["out"]
    assert report["out"].startswith("ok  front-desk  version ")
    assert report["loaded"] == []
