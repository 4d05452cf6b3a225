"""Outbound calls against the local LiveKit server API: the room, the agent dispatch and
the SIP participant as the server decodes them; SIP failures mapped to a reason with the
status kept, and still a record (with dispositions) in a real SQLite outbox.

Stays on the stand-in: every SIP status and API refusal on demand in milliseconds; answered,
486 and ringing out on the real stack: tests/phone/test_outbound.py.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from livekit import api

from runtime.call_results import CallResults
from runtime.catalog import load_catalog
from runtime.delivery import DeliveryConfig, open_delivery
from runtime.fleet.config import FleetConfig, OutboundTrunk, Trunks
from runtime.fleet.dialer import Call
from runtime.fleet.provision import provision
from runtime.record import DisconnectedBy
from runtime.registry import load_registry
from tests.fleet.livekit_server import LiveKitTestServer, SipAnswer, SipFailure
from tests.fleet.test_room_call import write_bot
from tests.voice_fakes import FakeVoicePlugin

FLEET = FleetConfig(
    trunks=Trunks(
        outbound=[
            OutboundTrunk(name="carrier", address="sip.carrier.example", numbers=["+15550100"])
        ]
    )
)
LIMITS = '\n[limits]\nring_timeout = "1s"\nmax_duration = "10m"\n'


@pytest.fixture
async def results(tmp_path: Path) -> Any:
    registry = load_registry(extra_plugins=[("fake_voice", FakeVoicePlugin())])
    outbox, deliverer = open_delivery(DeliveryConfig(outbox_path=tmp_path / "outbox.db"), registry)
    results = CallResults(registry, outbox, deliverer)
    await results.start()
    yield results
    await results.aclose()


@pytest.fixture
def bot(tmp_path: Path) -> Any:
    write_bot(tmp_path / "bots", extra=LIMITS)
    registry = load_registry(extra_plugins=[("fake_voice", FakeVoicePlugin())])
    return load_catalog(tmp_path / "bots", registry).get("line")


def stored(path: Path) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(path)) as db:
        return [json.loads(body) for (body,) in db.execute("SELECT body FROM records")]


async def test_an_answered_call_creates_room_dispatch_and_sip_participant(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI, bot: Any
) -> None:
    await provision(FLEET, livekit_api, dry_run=False)
    call = Call(
        bot="line",
        to="+15550123",
        variables={"name": "Ada"},
        config=FLEET,
        livekit_api=livekit_api,
        bot_spec=bot,
    )
    outcome = await call.place()
    assert outcome.answered and outcome.room == f"call_{call.session_id}"
    (room,) = livekit_server.calls("CreateRoom")
    assert room.name == call.room and room.empty_timeout > 0
    (dispatch,) = livekit_server.calls("CreateDispatch")
    assert dispatch.agent_name == "dialplan" and dispatch.room == call.room
    metadata = json.loads(dispatch.metadata)
    assert metadata["bot"] == "line" and metadata["variables"] == {"name": "Ada"}
    assert metadata["session_id"] == call.session_id
    (trunk,) = livekit_server.sip.outbound.values()
    assert metadata["dial"]["trunk_id"] == trunk.sip_trunk_id
    assert metadata["dial"]["participant_identity"] == "sip_15550123"
    (dial,) = livekit_server.calls("CreateSIPParticipant")
    assert dial.sip_call_to == "+15550123" and dial.sip_trunk_id == trunk.sip_trunk_id
    assert dial.sip_number == "+15550100"  # the trunk's first number as caller id
    assert dial.room_name == call.room and dial.wait_until_answered
    assert dial.ringing_timeout.seconds == 1  # the bot's limits.ring_timeout
    assert dial.max_call_duration.seconds == 600  # its limits.max_duration
    # the call is over when the callee has gone
    waiting = asyncio.create_task(call.wait_ended(poll=0.05))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    livekit_server.hang_up(call.room, "sip_15550123")
    await asyncio.wait_for(waiting, 5)


@pytest.mark.parametrize(
    ("status", "reason", "disconnected_by"),
    [
        (486, "Busy Here", "no_answer"),
        (600, "Busy Everywhere", "no_answer"),
        (480, "Temporarily Unavailable", "no_answer"),
        (408, "Request Timeout", "no_answer"),
        (403, "Forbidden", "rejected"),
        (404, "Not Found", "rejected"),
        (503, "Service Unavailable", "error"),
    ],
)
async def test_sip_failures_map_to_a_reason_and_leave_a_record(
    tmp_path: Path,
    livekit_server: LiveKitTestServer,
    livekit_api: api.LiveKitAPI,
    results: CallResults,
    bot: Any,
    status: int,
    reason: str,
    disconnected_by: str,
) -> None:
    await provision(FLEET, livekit_api, dry_run=False)
    livekit_server.script_dial("+15550123", SipFailure(status, reason))
    call = Call(
        bot="line",
        to="+15550123",
        config=FLEET,
        livekit_api=livekit_api,
        results=results,
        bot_spec=bot,
    )
    outcome = await call.place()
    assert not outcome.answered and outcome.sip_status == status
    assert outcome.disconnected_by is not None
    assert outcome.disconnected_by.value == disconnected_by
    assert outcome.retryable == (disconnected_by == "no_answer")
    assert [r.room for r in livekit_server.calls("DeleteRoom")] == [call.room]
    await results.drain()
    (record,) = stored(tmp_path / "outbox.db")
    assert record["session_id"] == call.session_id and record["direction"] == "outbound"
    assert record["disconnected_by"] == disconnected_by and record["sip_status"] == status
    assert record["cause"] == f"SIP {status} {reason}"
    assert record["callee"] == "+15550123" and record["caller"] == "+15550100"
    assert disconnected_by in record["dispositions"] or record["disposition"]


async def test_ringing_past_the_bots_ring_timeout_is_no_answer(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI, results: CallResults, bot: Any
) -> None:
    await provision(FLEET, livekit_api, dry_run=False)
    livekit_server.script_dial("+15550123", SipAnswer(after=3.0))
    call = Call(
        bot="line",
        to="+15550123",
        config=FLEET,
        livekit_api=livekit_api,
        results=results,
        bot_spec=bot,
    )
    outcome = await call.place()
    assert not outcome.answered and outcome.disconnected_by is not None
    assert outcome.disconnected_by.value == "no_answer" and outcome.sip_status in (408, 480)


async def test_no_outbound_trunk_is_a_clear_error_before_anything_rings(
    tmp_path: Path,
    livekit_server: LiveKitTestServer,
    livekit_api: api.LiveKitAPI,
    results: CallResults,
) -> None:
    no_trunk = await Call(
        bot="line", to="+15550123", livekit_api=livekit_api, results=results
    ).place()
    not_provisioned = await Call(
        bot="line", to="+15550123", config=FLEET, livekit_api=livekit_api, results=results
    ).place()
    assert not no_trunk.answered and no_trunk.disconnected_by == DisconnectedBy.ERROR
    assert re.search(r"no outbound trunk.*\[\[trunks.outbound\]\]", no_trunk.cause or "")
    assert "not on the LiveKit server: run `dialplan provision`" in (not_provisioned.cause or "")
    # the attempts that never rang are still recorded, with why
    await results.drain()
    records = stored(tmp_path / "outbox.db")
    assert sorted(r["cause"] for r in records) == sorted([no_trunk.cause, not_provisioned.cause])
    assert all(r["disconnected_by"] == "error" for r in records)
    assert livekit_server.calls("CreateSIPParticipant") == []
