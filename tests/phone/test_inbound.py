"""Inbound calls over real SIP/RTP: baresip dials the number, LiveKit's dispatch rule puts
the call in a room, a `dialplan start` worker answers with the receptionist bot."""

from __future__ import annotations

from pathlib import Path

from phonelab.baresip import Phone
from phonelab.listening import assert_heard, wait_for_lines
from phonelab.project import Project
from phonelab.voices import caller_line
from tests.phone.conftest import CALLER_NUMBER, GREETING, INBOUND_NUMBER


def from_caller(record: dict) -> bool:
    return record["variables"].get("caller_number") == CALLER_NUMBER


def test_the_caller_hears_the_greeting_gets_an_answer_and_hangs_up(
    project: Project, worker: object, caller: Phone, tmp_path: Path
) -> None:
    question = caller_line("What are your opening hours?", tmp_path / "question.wav")
    before = len(project.records())
    caller.dial(project.stack.sip_uri(INBOUND_NUMBER))
    caller.wait_event("CALL_ESTABLISHED", timeout=30)

    greeting = wait_for_lines(caller.heard, 1, timeout=30)[0]
    assert_heard(GREETING, greeting.pcm)
    caller.play(question)
    answer = wait_for_lines(caller.heard, 2, timeout=45)[1]
    assert_heard("monday to friday", answer.pcm)
    caller.hang_up()
    caller.wait_event("CALL_CLOSED", timeout=10)

    record = project.wait_records(before + 1, from_caller)[-1]
    assert record["disconnected_by"] == "customer"
    assert record["transport"] == "sip" and record["direction"] == "inbound"
    assert record["caller"] == CALLER_NUMBER and record["callee"] == INBOUND_NUMBER
    assert record["variables"]["called_number"] == INBOUND_NUMBER
    said = [(entry["role"], entry["text"].lower()) for entry in record["transcript"]]
    assert said[0][0] == "bot" and "how can i help" in said[0][1]
    assert any(role == "customer" and "hours" in text for role, text in said)
    assert any(role == "bot" and "monday to friday" in text for role, text in said)
    kinds = [event["type"] for event in record["events"]]
    assert "job_started" in kinds
    assert record["recording_key"], "the call's audio is kept"
    assert (project.dir / record["recording_key"]).stat().st_size > 8000


def test_the_bot_ends_the_call_and_the_phone_gets_a_bye(
    project: Project, worker: object, caller: Phone, tmp_path: Path
) -> None:
    goodbye = caller_line("That's all, thank you. Goodbye.", tmp_path / "goodbye.wav")
    before = len(project.records())
    caller.dial(project.stack.sip_uri(INBOUND_NUMBER))
    established = caller.wait_event("CALL_ESTABLISHED", timeout=30)
    wait_for_lines(caller.heard, 1, timeout=30)
    caller.play(goodbye)
    closed = caller.wait_event("CALL_CLOSED", timeout=60)  # the BYE came from LiveKit
    assert closed["at"] > established["at"]
    assert_heard("thanks for calling have a great day", caller.heard())

    record = project.wait_records(before + 1, from_caller)[-1]
    assert record["disconnected_by"] == "bot"
