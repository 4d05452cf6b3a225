"""Keys pressed on a real phone: baresip sends RFC 4733 telephone-events, livekit-sip turns
them into the room's SIP DTMF, and the worker's keypad makes them the caller's turn
(`runtime.keypad`), which the receptionist answers like a spoken one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from phonelab.baresip import Phone
from phonelab.listening import assert_heard, wait_for_lines
from phonelab.processes import Process
from phonelab.project import Project
from tests.phone.conftest import CALLER_NUMBER, INBOUND_NUMBER

# the copied receptionist learns one key; the shipped one offers no keypad menu
KEY_RULE = r"""
[[llm.rules]]
match = "\\bpressed 1\\b"
reply = "You pressed one. We're open {{ clinic_hours }}."
"""


@pytest.fixture(scope="module")
def keypad_worker(project: Project) -> Iterator[Process]:
    bot = project.dir / "bots" / "receptionist.toml"
    bot.write_text(bot.read_text() + KEY_RULE)
    worker = project.start_worker()
    yield worker
    project.stop_workers()


def from_caller(record: dict) -> bool:
    return record["variables"].get("caller_number") == CALLER_NUMBER


def test_a_key_press_is_the_callers_turn_and_the_bot_answers_it(
    project: Project, keypad_worker: Process, caller: Phone
) -> None:
    before = len(project.records())
    caller.dial(project.stack.sip_uri(INBOUND_NUMBER))
    caller.wait_event("CALL_ESTABLISHED", timeout=30)
    wait_for_lines(caller.heard, 1, timeout=30)  # the greeting is over
    caller.send_dtmf("1")
    answer = wait_for_lines(caller.heard, 2, timeout=30)[1]
    assert_heard("You pressed one. We're open Monday to Friday", answer.pcm)
    caller.hang_up()
    caller.wait_event("CALL_CLOSED", timeout=10)

    record = project.wait_records(before + 1, from_caller)[-1]
    keys = [e["data"] for e in record["events"] if e["type"] == "dtmf"]
    assert keys == [{"direction": "in", "digit": "1"}]
    said = [(entry["role"], entry["text"]) for entry in record["transcript"]]
    turn = said.index(("customer", "pressed 1"))
    assert said[turn + 1][0] == "bot" and said[turn + 1][1].startswith("You pressed one.")
