"""One LiveKit job end to end, inside livekit-agents' own `fake_job_context`: routing,
SIP attributes as variables, a real AgentSession, the reason the call ended, the record
handed to the results, livekit's recorder, and a refusal from per-call config.

Stays in livekit's fake job context: a refusal, a crash mid-call and recorder paths on
demand; real rooms: tests/phone/test_inbound.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from livekit import rtc
from livekit.agents.testing import fake_job_context

from runtime import CallRequest, hookimpl
from runtime.catalog import load_catalog
from runtime.compiler import CompiledBot
from runtime.errors import CallRejected
from runtime.fleet import room_call
from runtime.fleet.config import FleetConfig, Route
from runtime.fleet.room_call import RoomCallServices, serve_room_call
from runtime.record import CallRecord
from runtime.registry import load_registry
from tests.fleet.local_line import LocalLine
from tests.transports.conftest import FAKE_BOT
from tests.voice_fakes import FakeVoicePlugin

SIP_CALL = {
    "sip.phoneNumber": "+15551234567",
    "sip.trunkPhoneNumber": "+15550100",
    "sip.callID": "SCL_abc",
    "sip.trunkID": "ST_main",
    "sip.h.X-Campaign": "spring",
    "customer_id": "C-42",  # a trunk's headers_to_attributes put it there
}


class Handed:
    def __init__(self) -> None:
        self.records: list[tuple[CallRecord, CompiledBot | None]] = []

    async def __call__(self, record: CallRecord, bot: CompiledBot | None) -> None:
        self.records.append((record, bot))


def write_bot(
    directory: Path, name: str = "line", lines: tuple[str, ...] = ("bye",), extra: str = ""
) -> None:
    directory.mkdir(exist_ok=True)
    quoted = "[" + ", ".join(f'"{line}"' for line in lines) + "]"
    (directory / f"{name}.toml").write_text(FAKE_BOT.replace("{lines}", quoted) + extra)


def services(
    bots: Path, handed: Handed, *plugins: tuple[str, object], routes: tuple[Route, ...] = ()
) -> RoomCallServices:
    registry = load_registry(extra_plugins=[("fake_voice", FakeVoicePlugin()), *plugins])
    snapshot = load_catalog(bots, registry)
    assert not snapshot.problems, snapshot.problems
    return RoomCallServices(
        catalog=lambda: snapshot,
        registry=registry,
        fleet=FleetConfig(routes=list(routes)),
        hand_off=handed,
        recordings_dir=bots.parent / "recordings",
    )


async def run_job(
    line: LocalLine, metadata: dict[str, Any] | str, svc: RoomCallServices
) -> CallRecord | None:
    raw = metadata if isinstance(metadata, str) else json.dumps(metadata)
    with fake_job_context(room=rtc.Room(), job_metadata=raw) as ctx:
        try:
            return await serve_room_call(line, ctx.job.metadata, svc)
        finally:
            # a worker's job cleanup removes the session directory; a fake job never has one
            ctx._tempdir.cleanup()


async def test_inbound_call_routed_by_called_number_carries_sip_variables(tmp_path: Path) -> None:
    write_bot(tmp_path / "bots")
    handed = Handed()
    svc = services(
        tmp_path / "bots",
        handed,
        routes=(Route(number="+15550100", bot="line", variables={"desk": "front"}),),
    )
    line = LocalLine("call_in1", SIP_CALL, speech_at=(1.5,))
    record = await run_job(line, "", svc)
    assert record is not None
    assert record.bot_id == "line" and record.transport == "sip" and record.direction == "inbound"
    assert record.disconnected_by == "bot"  # the caller said "bye", the bot hung up
    assert record.caller == "+15551234567" and record.callee == "+15550100"
    variables = record.variables
    assert variables["desk"] == "front" and variables["customer_id"] == "C-42"
    assert variables["caller_number"] == "+15551234567"
    assert variables["sip"] == {
        "caller_number": "+15551234567",
        "called_number": "+15550100",
        "call_id": "SCL_abc",
        "trunk_id": "ST_main",
        "headers": {"X-Campaign": "spring"},
    }
    assert line.hung_up.is_set()  # the room goes, so LiveKit sends the BYE
    assert [r.session_id for r, _ in handed.records] == [record.session_id]
    assert handed.records[0][1] is not None and handed.records[0][1].id == "line"
    started = next(e for e in record.events if e.type == "job_started")
    assert started.data["room"] == "call_in1" and started.data["setup_ms"] > 0


async def test_bot_and_variables_from_job_metadata_win(tmp_path: Path) -> None:
    write_bot(tmp_path / "bots", "line")
    write_bot(tmp_path / "bots", "other")
    handed = Handed()
    svc = services(tmp_path / "bots", handed, routes=(Route(number="+15550100", bot="line"),))
    line = LocalLine("call_m", SIP_CALL, speech_at=(1.5,))
    metadata = {"bot": "other", "variables": {"customer_id": "from-crm"}}
    record = await run_job(line, metadata, svc)
    assert record is not None and record.bot_id == "other"
    assert record.variables["customer_id"] == "from-crm"


async def test_bot_from_the_dispatch_rule_attribute(tmp_path: Path) -> None:
    write_bot(tmp_path / "bots", "other")
    handed = Handed()
    svc = services(tmp_path / "bots", handed)
    line = LocalLine("call_a", {**SIP_CALL, "dialplan.bot": "other"}, speech_at=(1.5,))
    record = await run_job(line, "", svc)
    assert record is not None and record.bot_id == "other"
    assert "dialplan.bot" not in record.variables


async def test_party_hanging_up_ends_the_call_as_customer(tmp_path: Path) -> None:
    write_bot(tmp_path / "bots")
    handed = Handed()
    svc = services(tmp_path / "bots", handed)
    line = LocalLine("call_c", {}, is_sip=False, identity="web-user")
    job = asyncio.create_task(run_job(line, {"bot": "line"}, svc))
    await asyncio.to_thread(line.bound.wait, 10)
    await asyncio.sleep(1.2)  # the greeting plays
    line.leave()
    record = await asyncio.wait_for(job, 15)
    assert record is not None
    assert record.disconnected_by == "customer" and record.transport == "webrtc"
    assert "participant left" in (record.cause or "")
    assert any(t.role == "bot" for t in record.transcript)


@pytest.mark.parametrize(
    ("metadata", "fragment"),
    [
        ("{not json", "job metadata is not JSON"),
        ({"bot": "line", "colour": "red"}, "unknown key(s) colour"),
        ("", "no bot for the called number +15550100"),
        ({"bot": "ghost"}, "ghost"),
    ],
)
async def test_a_job_that_cannot_be_served_still_leaves_an_error_record(
    tmp_path: Path, metadata: Any, fragment: str
) -> None:
    write_bot(tmp_path / "bots")
    handed = Handed()
    svc = services(tmp_path / "bots", handed)
    line = LocalLine("call_bad", SIP_CALL)
    record = await run_job(line, metadata, svc)
    assert record is not None and record.disconnected_by == "error"
    assert fragment in (record.cause or ""), record.cause
    assert [r.session_id for r, _ in handed.records] == [record.session_id]


class Refuser:
    """A per-call config plugin that refuses every call (like the endpoint's 404)."""

    @hookimpl
    def resolve_call(self, request: CallRequest) -> CallRequest | None:
        raise CallRejected(
            "config endpoint http://config.test answered 404", "This line is closed to you."
        )


async def test_refused_call_hears_why_then_ends_rejected(tmp_path: Path) -> None:
    write_bot(tmp_path / "bots")
    handed = Handed()
    svc = services(tmp_path / "bots", handed, ("refuser", Refuser()))
    line = LocalLine("call_r", SIP_CALL)
    record = await run_job(line, {"bot": "line"}, svc)
    assert record is not None and record.disconnected_by == "rejected"
    assert "answered 404" in (record.cause or "")
    assert [t.text for t in record.transcript if t.role == "bot"] == ["This line is closed to you."]
    assert line.hung_up.is_set()


async def test_outbound_callee_who_never_joins_leaves_the_record_to_the_dialer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(room_call, "OUTBOUND_JOIN_MARGIN", 0.2)
    write_bot(tmp_path / "bots")
    handed = Handed()
    svc = services(tmp_path / "bots", handed)
    line = LocalLine("call_o", {}, joins=False)
    metadata = {
        "bot": "line",
        "dial": {"to": "+15550123", "trunk_id": "ST_out", "ringing_timeout": 0.1},
    }
    assert await run_job(line, metadata, svc) is None
    assert handed.records == []


async def test_outbound_call_answered_is_an_outbound_record(tmp_path: Path) -> None:
    write_bot(tmp_path / "bots")
    handed = Handed()
    svc = services(tmp_path / "bots", handed)
    line = LocalLine(
        "call_o2", {"sip.phoneNumber": "+15550123"}, identity="sip_15550123", speech_at=(1.5,)
    )
    metadata = {
        "bot": "line",
        "session_id": "s-outbound-1",
        "dial": {
            "to": "+15550123",
            "trunk_id": "ST_out",
            "from_number": "+15550100",
            "participant_identity": "sip_15550123",
        },
    }
    record = await run_job(line, metadata, svc)
    assert record is not None and record.session_id == "s-outbound-1"
    assert record.direction == "outbound"
    assert record.caller == "+15550100" and record.callee == "+15550123"


async def test_livekit_recorder_audio_is_kept_and_offered_to_storage(tmp_path: Path) -> None:
    write_bot(tmp_path / "bots", extra="\n[recording]\nenabled = true\n")
    handed = Handed()
    svc = services(tmp_path / "bots", handed)
    line = LocalLine("call_rec", SIP_CALL, speech_at=(1.5,))
    record = await run_job(line, {"bot": "line"}, svc)
    assert record is not None and record.recording_key
    kept = Path(record.recording_key)
    assert kept.parent == tmp_path / "recordings" and kept.stat().st_size > 1000
    assert kept.read_bytes()[:4] == b"OggS"  # livekit's recorder writes Ogg/Opus


KEYPAD_RULES = r"""
[[llm.rules]]
match = "\\bpressed 1\\b"
reply = "We are open nine to five."
[[llm.rules]]
match = "\\bpressed 0\\b"
tool = "transfer_call"
[[tools]]
use = "transfer_call"
to = "+15550100"
announcement = "Putting you through."
"""


async def test_the_partys_keys_are_turns_and_a_transfer_goes_to_the_line(tmp_path: Path) -> None:
    write_bot(tmp_path / "bots", extra=KEYPAD_RULES)
    handed = Handed()
    svc = services(tmp_path / "bots", handed)
    line = LocalLine("call_keys", SIP_CALL)
    job = asyncio.create_task(run_job(line, {"bot": "line"}, svc))
    await asyncio.to_thread(line.bound.wait, 10)
    await asyncio.sleep(1.5)  # the greeting plays
    line.press("1#")  # `#` ends the entry at once
    await asyncio.sleep(2.0)  # the answer plays
    line.press("0#")
    record = await asyncio.wait_for(job, 15)
    assert record is not None
    said = [(entry.role, entry.text) for entry in record.transcript]
    assert said[1:] == [
        ("customer", "pressed 1"),
        ("bot", "We are open nine to five."),
        ("customer", "pressed 0"),
        ("bot", "Putting you through."),
    ]
    keys = [event.data for event in record.events if event.type == "dtmf"]
    assert [key["digit"] for key in keys] == ["1", "#", "0", "#"]
    assert {key["direction"] for key in keys} == {"in"}
    assert line.line_control.transfers == ["+15550100"]  # the line's control, not a stand-in
    assert record.transferred_to == "+15550100" and record.disconnected_by == "bot"
