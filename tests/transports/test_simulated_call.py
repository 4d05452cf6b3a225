"""The offline voice stack end to end, as `make demo` runs it: a simulated caller speaks
synthesized lines as Twilio Media Streams over a real WebSocket; the bot hears them with
its recognizer (Whisper, free speech; or pocketsphinx given a grammar of the lines, so the
transcript is exact), answers with the rules LLM and speaks with piper."""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.cli_run import run_dialplan
from tests.conftest import REPO

LINES = ["Hi, what are your opening hours?", "Where are you located?", "Thanks, bye!"]


@dataclass
class Simulated:
    record: dict[str, Any]
    heard: list[str]  # the caller's turns, as the bot heard them
    said: list[str]  # the bot's lines
    stdout: str


def simulate(bot: str, *args: str, cwd: Path) -> Simulated:
    """`dialplan simulate BOT ... --record -` on the shipped bots, which must succeed."""
    run = run_dialplan(
        "simulate", bot, "--bots", str(REPO / "bots"), *args, "--record", "-", cwd=cwd
    )
    assert run.returncode == 0, run.stderr + run.stdout
    record = run.record()
    transcript = [(e["role"], e["text"]) for e in record["transcript"]]
    return Simulated(
        record,
        heard=[text for role, text in transcript if role == "customer"],
        said=[text for role, text in transcript if role == "bot"],
        stdout=run.stdout,
    )


def test_a_simulated_phone_call_is_heard_answered_and_recorded(tmp_path: Path) -> None:
    script = tmp_path / "caller.txt"
    script.write_text("\n".join(LINES) + "\n")
    call = simulate(
        "receptionist",
        "--script",
        str(script),
        "--exact",
        "--voice",  # the bots' own voice: this is the grammar's plumbing, not an ear test
        "joe",
        "--ignore-schedule",
        "--recordings",
        str(tmp_path / "recordings"),
        cwd=tmp_path,
    )
    record, heard, said = call.record, call.heard, call.said
    assert heard == ["hi what are your opening hours", "where are you located", "thanks bye"]
    assert said == [
        "Hi there, thanks for calling Bright Smile Dental. How can I help you today?",
        "We're open Monday to Friday, 9 am to 5 pm.",
        "We're at 12 Harbour Street.",
        "Thanks for calling Bright Smile Dental. Have a great day!",
    ]
    assert record["disconnected_by"] == "bot"
    assert record["transport"] == "twilio"
    assert "heard> where are you located" in call.stdout
    assert "[voice-to-voice:" in call.stdout
    with wave.open(record["recording_key"]) as recording:
        assert (recording.getnchannels(), recording.getframerate()) == (2, 8000)
        assert recording.getnframes() / 8000 > 10  # the whole conversation, both sides


def test_a_flow_bot_moves_through_its_steps_on_a_simulated_phone_call(tmp_path: Path) -> None:
    """The dentist's flow over the voice stack: the caller's spoken request moves the call
    from triage to booking (a transition the rules LLM takes, with a captured value), where
    the booking step's calendar tool answers."""
    script = tmp_path / "caller.txt"
    script.write_text("I'd like to book a cleaning.\nWhat do you have on Monday?\n")
    call = simulate(
        "dentist",
        "--script",
        str(script),
        "--exact",
        "--voice",
        "joe",
        cwd=tmp_path,  # the calendar's SQLite file is created here
    )
    record, heard, said = call.record, call.heard, call.said
    assert heard == ["i'd like to book a cleaning", "what do you have on monday"]
    assert said[1].startswith("Happy to help with a cleaning. Which day would suit you?")
    # "Monday" is always the next Monday, and the calendar file is new: there are slots
    assert said[2].startswith("On Monday ") and " I have " in said[2], said[2]
    tools = [e["data"] for e in record["events"] if e["type"] == "tool_call"]
    assert [(t["name"], t["arguments"], t["outcome"]) for t in tools] == [
        ("calendar_slots", {"date": "monday"}, "ok")
    ]
    assert record["steps"] == ["triage", "booking"]
    assert record["step"] == "booking"
    assert record["captured"] == {"service": "cleaning"}
    entered = [e["data"] for e in record["events"] if e["type"] == "step_entered"]
    assert entered[1]["from"] == "triage" and entered[1]["transition"] == "steps.triage.next[1]"
    assert "  [step] triage -> booking" in call.stdout
    assert "  [captured] service='cleaning'" in call.stdout


def test_free_speech_in_a_callers_voice_is_understood_and_a_pause_is_waited_for(
    tmp_path: Path,
) -> None:
    """No grammar: a caller voice that is not the bot's, line hiss, Whisper. The caller
    stops to think after "um" (a 0.8 s pause, longer than the VAD's silence): the turn is
    judged unfinished and waited for, so the bot answers the whole question once."""
    call = simulate(
        "receptionist",
        "--say",
        "Hi, um ... where exactly are you located?",
        "--say",
        "Great, thanks, bye!",
        "--voice",
        "bob",
        "--expect-end",
        "bot",
        "--ignore-schedule",
        "--recordings",
        str(tmp_path / "recordings"),
        cwd=tmp_path,
    )
    record, heard, said = call.record, call.heard, call.said
    assert len(heard) == 2 and "located" in heard[0].lower(), heard
    assert said == [
        "Hi there, thanks for calling Bright Smile Dental. How can I help you today?",
        "We're at 12 Harbour Street.",
        "Thanks for calling Bright Smile Dental. Have a great day!",
    ]
    assert record["disconnected_by"] == "bot"
