"""What a call needs from a LiveKit room, as a small interface.

`LiveKitLine` is the real one (a job's room, livekit's RoomIO for audio, the server API to
delete the room — which makes LiveKit send the SIP BYE — and to transfer the caller, the
room's DTMF both ways). Tests drive the same call logic
through a line whose audio is local; that is the edge no test machine can reach (there is
no LiveKit media server), and everything above it runs for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from livekit import api, rtc
    from livekit.agents import AgentSession, JobContext

    from runtime.call_control import CallControl

log = logging.getLogger("dialplan.fleet")

CALL_STATUS = "sip.callStatus"  # set by livekit-sip on its participant
RINGING = frozenset({"dialing", "ringing"})


@dataclass(frozen=True)
class Party:
    """The other end of the call: a SIP caller/callee or a WebRTC participant."""

    identity: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    is_sip: bool = False


class RoomLine(Protocol):
    room_name: str

    async def connect(self) -> None: ...

    async def wait_for_party(self, identity: str | None, *, answered: bool = False) -> Party:
        """The party, once in the room; with ``answered``, once a dialled callee has
        picked up (an outbound SIP participant joins while the phone still rings)."""
        ...

    def bind(self, session: AgentSession, party: Party) -> dict[str, Any]:
        """Wire the session's audio to the party; returns ``session.start`` options."""
        ...

    def control(self, party: Party) -> CallControl:
        """What the bot's tools can do to the party's line (transfer it, send tones)."""
        ...

    def on_key(self, party: Party, press: Callable[[str], None]) -> Callable[[], None]:
        """Call ``press`` with each key the party presses (DTMF); returns how to stop."""
        ...

    async def party_left(self, party: Party) -> str:
        """Resolves when the party has gone (hung up, left): the raw cause."""
        ...

    async def hang_up(self) -> None:
        """Tear the line down for everyone."""
        ...

    def recording(self) -> Path | None:
        """The call's audio file, if livekit's recorder wrote one."""
        ...


class LiveKitLine:
    """A job's room on a LiveKit server."""

    def __init__(self, ctx: JobContext, api_factory: Callable[[], api.LiveKitAPI]) -> None:
        self.ctx = ctx
        self.room_name = ctx.job.room.name
        self._api_factory = api_factory
        self._session: AgentSession | None = None

    async def connect(self) -> None:
        await self.ctx.connect()

    async def wait_for_party(self, identity: str | None, *, answered: bool = False) -> Party:
        participant = await self.ctx.wait_for_participant(identity=identity)
        from livekit import rtc

        if answered and participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP:
            await self._until_answered(participant)
        return Party(
            participant.identity,
            dict(participant.attributes),
            participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
        )

    async def _until_answered(self, participant: rtc.RemoteParticipant) -> None:
        """livekit-sip puts the callee in the room with ``sip.callStatus`` "dialing",
        then "ringing", and "active" once answered. Greeting a ringing phone wastes the
        greeting, and a dial that fails must not become a call: the dialer records it."""
        room = self.ctx.room
        settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def check(*_args: object) -> None:
            if settled.done():
                return
            if participant.attributes.get(CALL_STATUS) not in RINGING:
                settled.set_result(None)
            elif participant.identity not in room.remote_participants:
                settled.set_exception(RuntimeError("the callee hung up before answering"))

        room.on("participant_attributes_changed", check)
        room.on("participant_disconnected", check)
        try:
            check()
            await settled
        finally:
            room.off("participant_attributes_changed", check)
            room.off("participant_disconnected", check)
        if participant.attributes.get(CALL_STATUS) == "hangup":
            raise RuntimeError("the callee hung up before answering")

    def bind(self, session: AgentSession, party: Party) -> dict[str, Any]:
        from livekit.agents import room_io

        self._session = session
        return {
            "room": self.ctx.room,
            # dialplan decides when the call is over (it keeps the record and the reason)
            "room_options": room_io.RoomOptions(
                participant_identity=party.identity, close_on_disconnect=False
            ),
        }

    def control(self, party: Party) -> CallControl:
        from runtime.fleet.room_control import RoomControl

        return RoomControl(self.ctx.room, self.room_name, party, self._api_factory)

    def on_key(self, party: Party, press: Callable[[str], None]) -> Callable[[], None]:
        room = self.ctx.room

        def on_dtmf(event: rtc.SipDTMF) -> None:
            # livekit-sip publishes the caller's RFC 4733 telephone-events as SipDTMF;
            # another participant's keys are not this call's
            if event.participant is not None and event.participant.identity == party.identity:
                press(event.digit)

        room.on("sip_dtmf_received", on_dtmf)
        return lambda: room.off("sip_dtmf_received", on_dtmf)

    async def party_left(self, party: Party) -> str:
        room = self.ctx.room
        gone: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def settle(cause: str) -> None:
            if not gone.done():
                gone.set_result(cause)

        def on_left(participant: rtc.RemoteParticipant) -> None:
            if participant.identity == party.identity:
                settle(f"participant left ({_reason(participant)})")

        def on_attributes(changed: Mapping[str, str], participant: rtc.Participant) -> None:
            # SIP reports the far end hanging up before the participant is gone
            if participant.identity == party.identity and changed.get("sip.callStatus") in (
                "hangup",
            ):
                settle("SIP hangup")

        def on_room_gone(reason: object) -> None:
            settle(f"room disconnected ({reason})")

        room.on("participant_disconnected", on_left)
        room.on("participant_attributes_changed", on_attributes)
        room.on("disconnected", on_room_gone)
        if party.identity not in {p.identity for p in room.remote_participants.values()}:
            settle("participant left before the call started")
        try:
            return await gone
        finally:
            room.off("participant_disconnected", on_left)
            room.off("participant_attributes_changed", on_attributes)
            room.off("disconnected", on_room_gone)

    async def hang_up(self) -> None:
        await delete_room(self._api_factory, self.room_name)

    def recording(self) -> Path | None:
        recorder = self._session._recorder_io if self._session is not None else None
        path = getattr(recorder, "output_path", None)
        return Path(path) if path else None


async def delete_room(api_factory: Callable[[], api.LiveKitAPI], room: str) -> None:
    """Delete the room through the server API: LiveKit then ends every SIP leg in it with
    a BYE. A room already gone is fine (the caller may have closed it first)."""
    from livekit import api

    client = api_factory()
    try:
        await client.room.delete_room(api.DeleteRoomRequest(room=room))
    except api.TwirpError as exc:
        if exc.code != api.TwirpErrorCode.NOT_FOUND:
            log.warning("could not delete room %s: %s", room, exc.message)
    finally:
        await client.aclose()


def _reason(participant: rtc.RemoteParticipant) -> str:
    from livekit import rtc

    reason = participant.disconnect_reason
    if reason is None:
        return "unknown reason"
    with contextlib.suppress(ValueError):
        return str(rtc.DisconnectReason.Name(reason))
    return f"reason {reason}"
