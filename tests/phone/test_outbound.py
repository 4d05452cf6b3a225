"""Outbound calls over real SIP: `dialplan call` creates the room, the dispatch and the SIP
participant; livekit-sip dials the lab's outbound trunk, where a phone answers (baresip),
is busy or never answers (sipp)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from phonelab.baresip import Phone
from phonelab.listening import assert_heard, wait_for_lines
from phonelab.processes import Process
from phonelab.project import DIALPLAN, Project
from phonelab.sipp import SippCallee
from phonelab.voices import caller_line
from tests.phone.conftest import CALLEE_NUMBER, PHONE_IP

REMINDER = [
    "reminder",
    "--to",
    CALLEE_NUMBER,
    "--var",
    "customer_name=Ada",
    "--var",
    "appointment_time=Tuesday at 3 pm",
]


def to_callee(record: dict) -> bool:
    return record["callee"] == CALLEE_NUMBER and record["direction"] == "outbound"


def dial(project: Project, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(DIALPLAN), "call", *args],
        cwd=project.dir,
        env=project.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_the_callee_answers_hears_the_bot_and_confirms(
    project: Project, worker: object, callee: Phone, tmp_path: Path
) -> None:
    confirm = caller_line("Yes, I'll be there.", tmp_path / "yes.wav")
    before = len([r for r in project.records() if to_callee(r)])
    placing = dial(project, *REMINDER, "--wait")
    try:
        callee.wait_event("CALL_ESTABLISHED", timeout=30)  # auto-answered
        greeting = wait_for_lines(callee.heard, 1, timeout=30)[0]
        assert_heard("calling for ada you have an appointment on tuesday", greeting.pcm)
        callee.play(confirm)
        callee.wait_event("CALL_CLOSED", timeout=60)  # the bot hung up after its goodbye
        output, _ = placing.communicate(timeout=60)
    finally:
        if placing.poll() is None:
            placing.kill()
            print(placing.communicate()[0])  # what `dialplan call` said before it hung
    assert placing.returncode == 0, output
    record = project.wait_records(before + 1, to_callee)[-1]
    assert record["direction"] == "outbound" and record["transport"] == "sip"
    assert record["disconnected_by"] == "bot"
    assert record["variables"]["customer_name"] == "Ada"
    assert any(e["role"] == "customer" for e in record["transcript"])


def test_a_busy_callee_is_no_answer_with_its_sip_status(
    project: Project, worker: object, tmp_path: Path
) -> None:
    before = len([r for r in project.records() if to_callee(r)])
    with SippCallee(tmp_path, PHONE_IP, 5080, status=486) as busy:
        result = subprocess.run(
            [str(DIALPLAN), "call", *REMINDER],
            cwd=project.dir,
            env=project.env(),
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert "INVITE sip:" + CALLEE_NUMBER in busy.messages()
    assert result.returncode != 0
    assert "486" in result.stdout + result.stderr
    record = project.wait_records(before + 1, to_callee)[-1]
    assert record["disconnected_by"] == "no_answer"
    assert record["sip_status"] == 486


def test_ringing_past_the_ring_timeout_is_no_answer(
    project: Project, worker: Process, tmp_path: Path
) -> None:
    before = len([r for r in project.records() if to_callee(r)])
    linked = worker.output().count("RoomIO linked")
    with SippCallee(tmp_path, PHONE_IP, 5080, status=None) as ringing:
        result = subprocess.run(
            [str(DIALPLAN), "call", *REMINDER, "--ringing-timeout", "4"],
            cwd=project.dir,
            env=project.env(),
            capture_output=True,
            text=True,
            timeout=90,
        )
        received = ringing.messages()
    assert result.returncode != 0
    assert "CANCEL sip:" in received  # livekit-sip gave up on the ringing phone
    assert "no_answer" in result.stdout, result.stdout + result.stderr
    record = project.wait_records(before + 1, to_callee)[-1]
    assert record["disconnected_by"] == "no_answer"
    assert record["sip_status"] == 408 and "Ringing timeout" in record["cause"]
    # the callee was in the room while it rang (livekit-sip adds it at once), but the
    # agent waited for an answer: no conversation was started, no second record made
    assert worker.output().count("RoomIO linked") == linked
