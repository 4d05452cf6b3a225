"""What a call needs from a LiveKit room, as a small interface.

`LiveKitLine` is the real one (a job's room, livekit's RoomIO for audio, the server API to
delete the room — which makes LiveKit send the SIP BYE). Tests drive the same call logic
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

log = logging.getLogger("dialplan.fleet")


@dataclass(frozen=True)
class Party:
    """The other end of the call: a SIP caller/callee or a WebRTC participant."""

    identity: str
    attributes: Mapping[str, str] = field(default_factory=dict)
    is_sip: bool = False


class RoomLine(Protocol):
    room_name: str

    async def connect(self) -> None: ...

    async def wait_for_party(self, identity: str | None) -> Party: ...

    def bind(self, session: AgentSession, party: Party) -> dict[str, Any]:
        """Wire the session's audio to the party; returns ``session.start`` options."""
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

    async def wait_for_party(self, identity: str | None) -> Party:
        participant = await self.ctx.wait_for_participant(identity=identity)
        from livekit import rtc

        return Party(
            participant.identity,
            dict(participant.attributes),
            participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
        )

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
