"""Transfers over real SIP: the receptionist's `transfer_call` asks LiveKit
(TransferSIPParticipant, `runtime.fleet.room_control`), livekit-sip sends the caller's
phone a REFER, and baresip — the caller's phone is its own carrier here — dials what the
REFER names itself. A second phone, the front desk, answers; LiveKit's leg then ends."""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from phonelab.baresip import Phone
from phonelab.listening import assert_heard, wait_for_lines
from phonelab.processes import LabError, Process
from phonelab.project import Project
from phonelab.voices import caller_line
from tests.phone.conftest import CALLER_NUMBER, INBOUND_NUMBER, PHONE_IP

FRONT_DESK_NUMBER = "+15550177"
# baresip dials a REFER's target directly (no proxy, no carrier), so the front desk is
# named by a SIP URI it can reach; the copied receptionist allows it
FRONT_DESK = f"sip:{FRONT_DESK_NUMBER}@{PHONE_IP}:5090"
# a second transfer tool naming the same phone by number: LiveKit sends it as a tel: URI
BILLING = r"""
[[tools]]
use = "transfer_call"
name = "transfer_to_billing"
to = "+15550177"
announcement = "Putting you through to billing."
description = "Transfer the caller to billing."

[[llm.rules]]
match = "\\bbilling\\b"
tool = "transfer_to_billing"
"""


@pytest.fixture(scope="module")
def transfer_worker(project: Project) -> Iterator[Process]:
    bot = project.dir / "bots" / "receptionist.toml"
    text = bot.read_text()
    text = text.replace('default = "+15550100"', f'default = "{FRONT_DESK}"')
    text = text.replace('"sip:*@pbx.example.com"', f'"sip:+1555*@{PHONE_IP}:5090"')
    assert FRONT_DESK in text
    bot.write_text(text + BILLING)
    worker = project.start_worker()
    yield worker
    project.stop_workers()


@pytest.fixture
def front_desk(tmp_path: Path) -> Iterator[Phone]:
    """The transfer target: a phone that answers at once."""
    phone = Phone(
        tmp_path,
        FRONT_DESK_NUMBER,
        ip=PHONE_IP,
        sip_port=5090,
        control_port=4446,
        auto_answer=True,
    )
    phone.start()
    try:
        yield phone
    finally:
        phone.stop()
        if phone.process is not None and phone.process.running():
            raise LabError(f"baresip {FRONT_DESK_NUMBER} did not stop")


def from_caller(record: dict) -> bool:
    return record["variables"].get("caller_number") == CALLER_NUMBER


def first_call_heard(phone: Phone) -> bytes:
    """What the phone heard in its first call (sndfile names carry the start time)."""
    first = sorted(phone.recordings.glob("*-dec.wav"))[0]
    with wave.open(str(first)) as heard:
        return heard.readframes(heard.getnframes())


def events(phone: Phone, kind: str) -> list[dict]:
    return [event for event in phone.events() if event["type"] == kind]


def test_asking_for_a_person_transfers_the_caller_to_the_front_desk(
    project: Project, transfer_worker: Process, caller: Phone, front_desk: Phone, tmp_path: Path
) -> None:
    ask = caller_line("Can I speak to a person please?", tmp_path / "ask.wav")
    hello = caller_line("Hello, is this the front desk?", tmp_path / "hello.wav")
    before = len(project.records())
    caller.dial(project.stack.sip_uri(INBOUND_NUMBER))
    caller.wait_event("CALL_ESTABLISHED", timeout=30)
    wait_for_lines(caller.heard, 1, timeout=30)
    caller.play(ask)

    # the REFER reached the phone, naming the front desk; the phone dialled it itself
    refer = caller.wait_event("TRANSFER", timeout=60)
    assert refer["param"] == f"<{FRONT_DESK}>"
    assert refer["peeruri"] == project.stack.sip_uri(INBOUND_NUMBER)  # on the bot's call
    answered = front_desk.wait_event("CALL_ESTABLISHED", timeout=30)
    assert answered["peeruri"] == f"sip:{CALLER_NUMBER}@{PHONE_IP}"
    closed = caller.wait_event("CALL_CLOSED", timeout=15)  # LiveKit's leg ended
    assert closed["peeruri"] == project.stack.sip_uri(INBOUND_NUMBER)
    new_call = [e for e in events(caller, "CALL_ESTABLISHED") if e["peeruri"] == FRONT_DESK]
    assert new_call, events(caller, "CALL_ESTABLISHED")
    # the caller and the front desk talk directly now (what the front desk hears first is
    # the phone's voice of the moment, the end of the caller's question, cut by this)
    caller.play(hello)
    wait_for_lines(front_desk.heard, 1, timeout=30)
    assert_heard("Hello, is this the front desk?", front_desk.heard())
    caller.hang_up()
    front_desk.wait_event("CALL_CLOSED", timeout=10)
    assert_heard("I'm putting you through to our front desk now", first_call_heard(caller))

    record = project.wait_records(before + 1, from_caller)[-1]
    assert record["transferred_to"] == FRONT_DESK
    assert record["disconnected_by"] == "bot"
    assert record["cause"] == f"transferred to {FRONT_DESK}"
    transfer = [e["data"] for e in record["events"] if e["type"] == "transfer"]
    assert len(transfer) == 1 and transfer[0]["outcome"] == "ok", transfer
    assert transfer[0]["target"] == FRONT_DESK
    said = [(entry["role"], entry["text"].lower()) for entry in record["transcript"]]
    assert any(role == "customer" and "person" in text for role, text in said)
    assert said[-1] == ("bot", "of course. i'm putting you through to our front desk now.")


def test_a_number_the_callers_phone_cannot_dial_fails_the_transfer_and_says_why(
    project: Project, transfer_worker: Process, caller: Phone, front_desk: Phone, tmp_path: Path
) -> None:
    """A number goes out as ``tel:+15550177``: a carrier would route it, but baresip dials
    what it is given and cannot reach a tel: URI, so it reports that the REFER failed.
    LiveKit says so, the record keeps the failure, and the bot ends the call (the
    receptionist has no flow step to fall back on)."""
    ask = caller_line("I have a question about my billing.", tmp_path / "billing.wav")
    before = len(project.records())
    caller.dial(project.stack.sip_uri(INBOUND_NUMBER))
    caller.wait_event("CALL_ESTABLISHED", timeout=30)
    wait_for_lines(caller.heard, 1, timeout=30)
    caller.play(ask)

    # baresip logs "call: sipsess_connect: Function not implemented" (libre has no tel:
    # transport) and NOTIFYs "500 Call Error"
    refer = caller.wait_event("TRANSFER", timeout=60)
    assert refer["param"] == "tel:+15550177"
    closed = caller.wait_event("CALL_CLOSED", timeout=30)  # the bot ended the call
    assert closed["peeruri"] == project.stack.sip_uri(INBOUND_NUMBER)
    assert not [e for e in events(caller, "CALL_ESTABLISHED") if e["peeruri"] != closed["peeruri"]]
    assert front_desk.events() == []  # nothing reached it

    record = project.wait_records(before + 1, from_caller)[-1]
    assert record["transferred_to"] is None
    transfer = [e["data"] for e in record["events"] if e["type"] == "transfer"]
    assert len(transfer) == 1 and transfer[0]["outcome"] == "error", transfer
    # LiveKit's words vary with how the REFER failed: "call transfer failed" when the
    # phone NOTIFYs its error, "transaction failed to complete" when that comes too late
    assert transfer[0]["error"].startswith("+15550177: twirp error"), transfer
    assert record["disconnected_by"] == "error"
    assert record["cause"].startswith("transfer to +15550177 failed")
