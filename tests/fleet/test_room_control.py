"""What a LiveKit call's bot can do to the line: transfer a SIP party through the server
API (the local LiveKit server answers as livekit-server does), send DTMF through the room,
and hear the party's keys — and nothing of that for a WebRTC party it cannot reach."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
from livekit import rtc
from livekit.agents.testing import fake_job_context
from livekit.protocol import models

from runtime.call_control import ControlUnsupported, TransferFailed
from runtime.fleet.room_control import RoomControl, dtmf_code, refer_target
from runtime.fleet.room_line import LiveKitLine, Party
from tests.fleet.livekit_server import LiveKitTestServer

ROOM = "call_transfer"
CALLER = Party("sip_caller", {"sip.callID": "SCL_abc"}, is_sip=True)
BROWSER = Party("web-user", {}, is_sip=False)


@pytest.fixture
async def server() -> AsyncIterator[LiveKitTestServer]:
    async with LiveKitTestServer() as started:
        started.add_participant(
            ROOM,
            CALLER.identity,
            kind=models.ParticipantInfo.Kind.SIP,
            attributes=dict(CALLER.attributes),
        )
        yield started


class FakeParticipant:
    """The room's local participant: the DTMF it publishes, timed."""

    def __init__(self) -> None:
        self.published: list[tuple[int, str, float]] = []

    async def publish_dtmf(self, *, code: int, digit: str) -> None:
        self.published.append((code, digit, time.monotonic()))


def control(server: LiveKitTestServer, party: Party = CALLER) -> RoomControl:
    room = SimpleNamespace(local_participant=FakeParticipant())
    return RoomControl(room, ROOM, party, server.api)  # type: ignore[arg-type]


def test_a_number_is_referred_to_as_a_tel_uri_and_keys_have_their_rfc4733_codes() -> None:
    assert refer_target("+15550177") == "tel:+15550177"
    assert refer_target("sip:desk@pbx.example.com") == "sip:desk@pbx.example.com"
    assert refer_target("tel:+15550177") == "tel:+15550177"
    assert [dtmf_code(key) for key in "09*#AaD"] == [0, 9, 10, 11, 12, 12, 15]
    with pytest.raises(ValueError, match="not a DTMF key"):
        dtmf_code("x")


async def test_a_sip_party_is_transferred_through_the_server_api(
    server: LiveKitTestServer,
) -> None:
    line = control(server)
    assert line.can_transfer
    await line.transfer("+15550177")
    await line.transfer("sip:desk@pbx.example.com")
    sent = server.calls("TransferSIPParticipant")
    assert [r.transfer_to for r in sent] == ["tel:+15550177", "sip:desk@pbx.example.com"]
    assert {(r.room_name, r.participant_identity) for r in sent} == {(ROOM, "sip_caller")}
    assert all(r.play_dialtone and r.ringing_timeout.seconds == 30 for r in sent)


async def test_a_transfer_the_far_end_refuses_fails_with_livekits_reason(
    server: LiveKitTestServer,
) -> None:
    server.transfers.refuse("tel:+15550177")
    with pytest.raises(TransferFailed, match=r"\+15550177: .*call transfer failed"):
        await control(server).transfer("+15550177")


async def test_a_party_who_has_left_cannot_be_transferred(server: LiveKitTestServer) -> None:
    server.hang_up(ROOM, CALLER.identity)
    with pytest.raises(TransferFailed, match="participant does not exist"):
        await control(server).transfer("+15550177")


async def test_a_webrtc_party_has_no_line_to_transfer(server: LiveKitTestServer) -> None:
    line = control(server, BROWSER)
    assert not line.can_transfer
    with pytest.raises(ControlUnsupported, match="WebRTC"):
        await line.transfer("+15550177")
    assert server.calls("TransferSIPParticipant") == []


async def test_dtmf_goes_out_key_by_key_with_w_as_a_pause(server: LiveKitTestServer) -> None:
    line = control(server)
    await line.send_dtmf("1w#")
    published = line.room.local_participant.published  # type: ignore[attr-defined]
    assert [(code, digit) for code, digit, _ in published] == [(1, "1"), (11, "#")]
    gap = published[1][2] - published[0][2]
    assert 0.75 < gap < 1.5  # the key gap, then half a second for `w`
    with pytest.raises(ValueError, match="not a DTMF key"):
        await line.send_dtmf("5x")
    assert len(published) == 2  # a bad sequence sends nothing at all


async def test_the_line_hears_only_its_partys_keys_until_told_to_stop(
    server: LiveKitTestServer,
) -> None:
    with fake_job_context(room=rtc.Room()) as ctx:
        line = LiveKitLine(ctx, server.api)
        pressed: list[str] = []
        stop = line.on_key(CALLER, pressed.append)

        def key(digit: str, identity: str) -> None:
            event = rtc.SipDTMF(code=dtmf_code(digit), digit=digit)
            event.participant = SimpleNamespace(identity=identity)  # type: ignore[assignment]
            ctx.room.emit("sip_dtmf_received", event)

        key("1", "sip_caller")
        key("2", "someone_else")
        key("#", "sip_caller")
        stop()
        key("3", "sip_caller")
        assert pressed == ["1", "#"]
        assert isinstance(line.control(CALLER), RoomControl)
        assert not line.control(BROWSER).can_transfer
        await asyncio.sleep(0)
        ctx._tempdir.cleanup()
