"""The local LiveKit server, driven by the real livekit-api client.

Stays: it checks the stand-in itself, against the real livekit-api client.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from google.protobuf.duration_pb2 import Duration
from livekit import api
from livekit.protocol import models

from tests.fleet.livekit_server import LiveKitTestServer, SipAnswer, SipFailure

CALLEE = "+15550100"


async def outbound_trunk(lkapi: api.LiveKitAPI, name: str = "carrier") -> str:
    trunk = api.SIPOutboundTrunkInfo(name=name, address="sip.carrier.test", numbers=["+15559000"])
    created = await lkapi.sip.create_outbound_trunk(api.CreateSIPOutboundTrunkRequest(trunk=trunk))
    return created.sip_trunk_id


def dial(
    trunk_id: str, *, wait: bool = True, ringing: float | None = None, **fields: Any
) -> api.CreateSIPParticipantRequest:
    fields = {"participant_identity": "callee", **fields}
    request = api.CreateSIPParticipantRequest(
        sip_trunk_id=trunk_id,
        sip_call_to=CALLEE,
        room_name="call_1",
        wait_until_answered=wait,
        **fields,
    )
    if ringing is not None:
        request.ringing_timeout.CopyFrom(Duration(nanos=int(ringing * 1e9)))
    return request


# --- tokens and grants ------------------------------------------------------------------


async def test_a_token_signed_with_another_secret_gets_a_bare_401(
    livekit_server: LiveKitTestServer,
) -> None:
    intruder = api.LiveKitAPI(livekit_server.url, livekit_server.api_key, "not-the-secret" * 3)
    try:
        with pytest.raises(api.TwirpError) as refused:
            await intruder.room.list_rooms(api.ListRoomsRequest())
    finally:
        await intruder.aclose()
    assert refused.value.status == 401
    assert livekit_server.requests == []  # refused before the body was read


async def test_a_valid_token_without_the_grant_is_unauthenticated(
    livekit_server: LiveKitTestServer,
) -> None:
    token = (
        api.AccessToken(livekit_server.api_key, livekit_server.api_secret)
        .with_grants(api.VideoGrants(room_list=True))
        .to_jwt()
    )
    client = api.LiveKitAPI.with_token(token, livekit_server.url)
    try:
        await client.room.list_rooms(api.ListRoomsRequest())  # allowed
        with pytest.raises(api.TwirpError) as refused:
            await client.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())
    finally:
        await client.aclose()
    assert (refused.value.code, refused.value.status) == ("unauthenticated", 401)
    assert refused.value.message == "permissions denied"


async def test_room_admin_grants_cover_one_room_only(livekit_server: LiveKitTestServer) -> None:
    token = (
        api.AccessToken(livekit_server.api_key, livekit_server.api_secret)
        .with_grants(api.VideoGrants(room_admin=True, room="call_mine"))
        .to_jwt()
    )
    client = api.LiveKitAPI.with_token(token, livekit_server.url)
    try:
        await client.room.list_participants(api.ListParticipantsRequest(room="call_mine"))
        with pytest.raises(api.TwirpError, match="permissions denied"):
            await client.room.list_participants(api.ListParticipantsRequest(room="call_theirs"))
    finally:
        await client.aclose()


# --- rooms and dispatches ---------------------------------------------------------------


async def test_rooms_round_trip(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    created = await livekit_api.room.create_room(
        api.CreateRoomRequest(name="call_a", empty_timeout=60, metadata="{}")
    )
    assert created.sid.startswith("RM_") and created.empty_timeout == 60
    again = await livekit_api.room.create_room(api.CreateRoomRequest(name="call_a"))
    assert again.sid == created.sid  # CreateRoom on an existing room returns it
    updated = await livekit_api.room.update_room_metadata(
        api.UpdateRoomMetadataRequest(room="call_a", metadata='{"x": 1}')
    )
    assert updated.metadata == '{"x": 1}'
    listing = await livekit_api.room.list_rooms(api.ListRoomsRequest(names=["call_a", "nope"]))
    assert [r.name for r in listing.rooms] == ["call_a"]

    await livekit_api.room.delete_room(api.DeleteRoomRequest(room="call_a"))
    with pytest.raises(api.TwirpError) as gone:
        await livekit_api.room.delete_room(api.DeleteRoomRequest(room="call_a"))
    assert gone.value.code == api.TwirpErrorCode.NOT_FOUND
    assert [m.name for m in livekit_server.calls("CreateRoom")] == ["call_a", "call_a"]


async def test_a_dispatch_creates_its_room(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    dispatch = await livekit_api.agent_dispatch.create_dispatch(
        api.CreateAgentDispatchRequest(agent_name="dialplan", room="call_b", metadata='{"bot":"x"}')
    )
    assert dispatch.id.startswith("AD_") and dispatch.state.created_at > 0
    assert "call_b" in livekit_server.rooms.by_name
    assert [d.id for d in await livekit_api.agent_dispatch.list_dispatch("call_b")] == [dispatch.id]
    await livekit_api.agent_dispatch.delete_dispatch(dispatch.id, "call_b")
    assert await livekit_api.agent_dispatch.list_dispatch("call_b") == []


async def test_participants_join_leave_and_are_removed(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    livekit_server.add_participant("call_c", "caller", kind=models.ParticipantInfo.Kind.SIP)
    livekit_server.add_participant("call_c", "agent", kind=models.ParticipantInfo.Kind.AGENT)
    livekit_server.hang_up("call_c", "caller")
    listing = await livekit_api.room.list_participants(api.ListParticipantsRequest(room="call_c"))
    assert [p.identity for p in listing.participants] == ["agent"]
    await livekit_api.room.remove_participant(
        api.RoomParticipantIdentity(room="call_c", identity="agent")
    )
    with pytest.raises(api.TwirpError, match="participant not found"):
        await livekit_api.room.remove_participant(
            api.RoomParticipantIdentity(room="call_c", identity="agent")
        )
    livekit_server.add_participant("call_c", "late")
    await livekit_api.room.delete_room(api.DeleteRoomRequest(room="call_c"))
    assert livekit_server.participants("call_c") == []


# --- dialling ---------------------------------------------------------------------------


async def test_an_answered_call_puts_the_callee_in_the_room(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    trunk_id = await outbound_trunk(livekit_api)
    livekit_server.script_dial(CALLEE, SipAnswer(after=0.05))
    answered = await livekit_api.sip.create_sip_participant(
        dial(trunk_id, participant_attributes={"campaign": "spring"})
    )
    assert answered.sip_call_id.startswith("SCL_") and answered.participant_id.startswith("PA_")

    listing = await livekit_api.room.list_participants(api.ListParticipantsRequest(room="call_1"))
    (callee,) = listing.participants
    assert callee.identity == "callee" and callee.kind == models.ParticipantInfo.Kind.SIP
    assert callee.attributes["sip.callStatus"] == "active"
    assert callee.attributes["sip.phoneNumber"] == CALLEE
    assert callee.attributes["sip.trunkID"] == trunk_id
    assert callee.attributes["sip.trunkPhoneNumber"] == "+15559000"
    assert callee.attributes["sip.callID"] == answered.sip_call_id
    assert callee.attributes["campaign"] == "spring"
    (record,) = livekit_server.dials
    assert (record.outcome, record.sip_status) == ("answered", 200)
    assert record.settled_at is not None and record.settled_at - record.placed_at >= 0.04

    livekit_server.hang_up("call_1", "callee")
    assert livekit_server.participants("call_1") == []


async def test_a_busy_callee_fails_with_the_sip_status(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    trunk_id = await outbound_trunk(livekit_api)
    livekit_server.script_dial(CALLEE, SipFailure(486, "Busy Here", after=0.02))
    with pytest.raises(api.SipCallError) as busy:
        await livekit_api.sip.create_sip_participant(dial(trunk_id))
    assert busy.value.sip_status_code == 486 and busy.value.sip_status == "Busy Here"
    assert busy.value.metadata == {"sip_status_code": "486", "sip_status": "Busy Here"}
    assert busy.value.code == "resource_exhausted"
    assert livekit_server.participants("call_1") == []
    assert livekit_server.dials[0].outcome == "failed"


async def test_an_answer_after_the_ringing_timeout_is_a_408(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    trunk_id = await outbound_trunk(livekit_api)
    livekit_server.script_dial(CALLEE, SipAnswer(after=5))
    with pytest.raises(api.SipCallError) as unanswered:
        await livekit_api.sip.create_sip_participant(dial(trunk_id, ringing=0.1))
    assert unanswered.value.sip_status_code == 408
    assert unanswered.value.code == api.TwirpErrorCode.DEADLINE_EXCEEDED


async def test_outcomes_are_taken_in_turn_and_the_last_repeats(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    trunk_id = await outbound_trunk(livekit_api)
    livekit_server.script_dial(CALLEE, SipFailure(480, "Temporarily Unavailable"), SipAnswer())
    with pytest.raises(api.SipCallError, match="480"):
        await livekit_api.sip.create_sip_participant(dial(trunk_id))
    await livekit_api.sip.create_sip_participant(dial(trunk_id))
    await livekit_api.sip.create_sip_participant(dial(trunk_id))
    assert [d.sip_status for d in livekit_server.dials] == [480, 200, 200]


async def test_without_waiting_the_callee_is_dialing_until_the_answer(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    trunk_id = await outbound_trunk(livekit_api)
    livekit_server.script_dial(CALLEE, SipAnswer(after=0.1))
    await livekit_api.sip.create_sip_participant(dial(trunk_id, wait=False))
    (ringing,) = livekit_server.participants("call_1")
    assert ringing.attributes["sip.callStatus"] == "dialing"
    await asyncio.sleep(0.2)
    (answered,) = livekit_server.participants("call_1")
    assert answered.attributes["sip.callStatus"] == "active"


async def test_without_waiting_a_failed_call_just_leaves(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    trunk_id = await outbound_trunk(livekit_api)
    livekit_server.script_dial(CALLEE, SipFailure(603, "Decline", after=0.05))
    await livekit_api.sip.create_sip_participant(dial(trunk_id, wait=False))
    assert len(livekit_server.participants("call_1")) == 1
    await asyncio.sleep(0.15)
    assert livekit_server.participants("call_1") == []


async def test_dialling_through_a_trunk_that_does_not_exist(
    livekit_api: api.LiveKitAPI,
) -> None:
    with pytest.raises(api.TwirpError) as refused:
        await livekit_api.sip.create_sip_participant(dial("ST_doesnotexist"))
    assert refused.value.code == api.TwirpErrorCode.NOT_FOUND
    assert "sip trunk does not exist" in refused.value.message
    assert not isinstance(refused.value, api.SipCallError)


async def test_dials_are_timed_for_a_benchmark(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    trunk_id = await outbound_trunk(livekit_api)
    requests = [dial(trunk_id, participant_identity=f"callee{i}") for i in range(20)]
    await asyncio.gather(*(livekit_api.sip.create_sip_participant(r) for r in requests))
    assert len(livekit_server.dials) == 20
    assert livekit_server.dials_per_second() > 20


# --- provisioning objects ---------------------------------------------------------------


async def test_inbound_trunks_round_trip(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    sip = livekit_api.sip
    created = await sip.create_inbound_trunk(
        api.CreateSIPInboundTrunkRequest(
            trunk=api.SIPInboundTrunkInfo(name="main", numbers=["+15550100"], krisp_enabled=True)
        )
    )
    assert created.sip_trunk_id.startswith("ST_")
    updated = await sip.update_inbound_trunk_fields(
        created.sip_trunk_id,
        numbers=api.ListUpdate(add=["+15550101"]),
        allowed_addresses=["10.0.0.0/8"],
    )
    assert list(updated.numbers) == ["+15550100", "+15550101"]
    assert list(updated.allowed_addresses) == ["10.0.0.0/8"] and updated.krisp_enabled
    replaced = await sip.update_inbound_trunk(
        created.sip_trunk_id, api.SIPInboundTrunkInfo(name="main", numbers=["+15550102"])
    )
    assert list(replaced.numbers) == ["+15550102"] and not replaced.krisp_enabled
    assert replaced.sip_trunk_id == created.sip_trunk_id

    by_number = await sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest(numbers=["15550102"]))
    assert [t.name for t in by_number.items] == ["main"]
    by_id = await sip.list_inbound_trunk(
        api.ListSIPInboundTrunkRequest(trunk_ids=["ST_missing", created.sip_trunk_id])
    )
    assert [t.sip_trunk_id for t in by_id.items] == ["", created.sip_trunk_id]

    deleted = await sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=created.sip_trunk_id))
    assert deleted.kind == api.SIPTrunkInfo.TrunkKind.TRUNK_INBOUND
    assert (await sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())).items == []
    (update_request,) = livekit_server.calls("UpdateSIPInboundTrunk")[:1]
    assert update_request.WhichOneof("action") == "update"


async def test_an_open_inbound_trunk_is_refused(livekit_api: api.LiveKitAPI) -> None:
    with pytest.raises(api.TwirpError, match="for security"):
        await livekit_api.sip.create_inbound_trunk(
            api.CreateSIPInboundTrunkRequest(trunk=api.SIPInboundTrunkInfo(name="open"))
        )


async def test_outbound_trunks_round_trip(livekit_api: api.LiveKitAPI) -> None:
    trunk_id = await outbound_trunk(livekit_api)
    updated = await livekit_api.sip.update_outbound_trunk_fields(
        trunk_id, address="sip2.carrier.test", transport=api.SIPTransport.SIP_TRANSPORT_TLS
    )
    assert updated.address == "sip2.carrier.test" and list(updated.numbers) == ["+15559000"]
    listing = await livekit_api.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())
    assert [t.transport for t in listing.items] == [api.SIPTransport.SIP_TRANSPORT_TLS]
    await livekit_api.sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=trunk_id))
    with pytest.raises(api.TwirpError, match="does not exist"):
        await livekit_api.sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=trunk_id))


async def test_dispatch_rules_round_trip(livekit_api: api.LiveKitAPI) -> None:
    sip = livekit_api.sip
    rule = api.SIPDispatchRuleInfo(
        name="front desk",
        rule=api.SIPDispatchRule(
            dispatch_rule_individual=api.SIPDispatchRuleIndividual(room_prefix="call_")
        ),
        numbers=["+15550100"],
        attributes={"team": "front", "floor": "1"},
    )
    created = await sip.create_dispatch_rule(api.CreateSIPDispatchRuleRequest(dispatch_rule=rule))
    assert created.sip_dispatch_rule_id.startswith("SDR_")
    updated = await sip.update_dispatch_rule_fields(
        created.sip_dispatch_rule_id, attributes={"team": "night", "floor": ""}, name="night desk"
    )
    assert dict(updated.attributes) == {"team": "night"}  # an empty value deletes
    assert updated.name == "night desk" and list(updated.numbers) == ["+15550100"]

    with pytest.raises(api.TwirpError, match="Conflicting SIP Dispatch Rules"):
        await sip.create_dispatch_rule(api.CreateSIPDispatchRuleRequest(dispatch_rule=rule))

    await sip.delete_dispatch_rule(
        api.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=created.sip_dispatch_rule_id)
    )
    assert (await sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items == []


async def test_the_server_environment_is_what_livekit_api_reads(
    livekit_server: LiveKitTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in livekit_server.env().items():
        monkeypatch.setenv(name, value)
    async with api.LiveKitAPI() as client:
        assert (await client.room.list_rooms(api.ListRoomsRequest())).rooms == []
