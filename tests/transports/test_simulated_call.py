"""The offline voice stack end to end, as `make demo` runs it: a simulated caller speaks
piper-synthesized lines as Twilio Media Streams over a real WebSocket; the bot hears them
with pocketsphinx (given a grammar of the lines, so the transcript is exact), answers with
the rules LLM and speaks with piper."""

from __future__ import annotations

import wave
from pathlib import Path

from tests.cli_run import run_dialplan
from tests.conftest import REPO

LINES = ["Hi, what are your opening hours?", "Where are you located?", "Thanks, bye!"]


def test_a_simulated_phone_call_is_heard_answered_and_recorded(tmp_path: Path) -> None:
    script = tmp_path / "caller.txt"
    script.write_text("\n".join(LINES) + "\n")
    run = run_dialplan(
        "simulate",
        "receptionist",
        "--bots",
        str(REPO / "bots"),
        "--script",
        str(script),
        "--exact",
        "--ignore-schedule",
        "--recordings",
        str(tmp_path / "recordings"),
        "--record",
        "-",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr + run.stdout
    record = run.record()
    heard = [e["text"] for e in record["transcript"] if e["role"] == "customer"]
    said = [e["text"] for e in record["transcript"] if e["role"] == "bot"]
    assert heard == ["hi what are your opening hours", "where are you located", "thanks bye"]
    assert said == [
        "Hi there, thanks for calling Bright Smile Dental. How can I help you today?",
        "We're open Monday to Friday, 9 am to 5 pm.",
        "We're at 12 Harbour Street.",
        "Thanks for calling Bright Smile Dental. Have a great day!",
    ]
    assert record["disconnected_by"] == "bot"
    assert record["transport"] == "twilio"
    assert "heard> where are you located" in run.stdout
    assert "[voice-to-voice:" in run.stdout
    with wave.open(record["recording_key"]) as recording:
        assert (recording.getnchannels(), recording.getframerate()) == (2, 8000)
        assert recording.getnframes() / 8000 > 10  # the whole conversation, both sides
