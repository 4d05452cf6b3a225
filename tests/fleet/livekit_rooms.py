"""Rooms, participants and agent dispatches of the local LiveKit server (RoomService and
AgentDispatchService), with livekit-server's answers for what does not exist."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from livekit.protocol import agent_dispatch, models, room

from tests.fleet.livekit_twirp import new_id, not_found

DEFAULT_EMPTY_TIMEOUT = 300  # livekit-server's defaults for a room nobody configured
DEFAULT_DEPARTURE_TIMEOUT = 20


@dataclass
class RoomState:
    info: models.Room
    participants: dict[str, models.ParticipantInfo] = field(default_factory=dict)
    dispatches: dict[str, agent_dispatch.AgentDispatch] = field(default_factory=dict)

    def snapshot(self) -> models.Room:
        """The room as the API reports it, counts included."""
        reported = models.Room()
        reported.CopyFrom(self.info)
        reported.num_participants = len(self.participants)
        reported.num_publishers = 0
        return reported


class Rooms:
    def __init__(self) -> None:
        self.by_name: dict[str, RoomState] = {}

    # --- state the SIP side and the tests share ---------------------------------------

    def ensure(self, name: str, *, metadata: str = "") -> RoomState:
        """LiveKit creates a room on first use: a join, a dispatch or CreateRoom."""
        if name not in self.by_name:
            now = time.time()
            info = models.Room(
                sid=new_id("RM_"),
                name=name,
                empty_timeout=DEFAULT_EMPTY_TIMEOUT,
                departure_timeout=DEFAULT_DEPARTURE_TIMEOUT,
                creation_time=int(now),
                creation_time_ms=int(now * 1000),
                metadata=metadata,
            )
            self.by_name[name] = RoomState(info)
        return self.by_name[name]

    def join(
        self,
        room_name: str,
        identity: str,
        *,
        kind: models.ParticipantInfo.Kind = models.ParticipantInfo.Kind.STANDARD,
        name: str = "",
        metadata: str = "",
        attributes: Mapping[str, str] | None = None,
    ) -> models.ParticipantInfo:
        """A participant with the same identity replaces the one already there, as in LiveKit."""
        now = time.time()
        participant = models.ParticipantInfo(
            sid=new_id("PA_"),
            identity=identity,
            state=models.ParticipantInfo.State.ACTIVE,
            name=name,
            metadata=metadata,
            kind=kind,
            joined_at=int(now),
            joined_at_ms=int(now * 1000),
            attributes=dict(attributes or {}),
        )
        self.ensure(room_name).participants[identity] = participant
        return participant

    def participant(self, room_name: str, identity: str) -> models.ParticipantInfo | None:
        state = self.by_name.get(room_name)
        return state.participants.get(identity) if state else None

    def leave(self, room_name: str, identity: str) -> models.ParticipantInfo | None:
        state = self.by_name.get(room_name)
        return state.participants.pop(identity, None) if state else None

    # --- RoomService ------------------------------------------------------------------

    async def create_room(self, request: room.CreateRoomRequest) -> models.Room:
        existed = request.name in self.by_name
        state = self.ensure(request.name, metadata=request.metadata)
        if not existed:
            if request.empty_timeout:
                state.info.empty_timeout = request.empty_timeout
            if request.departure_timeout:
                state.info.departure_timeout = request.departure_timeout
            state.info.max_participants = request.max_participants
            for wanted in request.agents:
                self._dispatch(state, wanted.agent_name, wanted.metadata)
        return state.snapshot()

    async def list_rooms(self, request: room.ListRoomsRequest) -> room.ListRoomsResponse:
        names = set(request.names)
        rooms = [s.snapshot() for n, s in self.by_name.items() if not names or n in names]
        return room.ListRoomsResponse(rooms=rooms)

    async def delete_room(self, request: room.DeleteRoomRequest) -> room.DeleteRoomResponse:
        if self.by_name.pop(request.room, None) is None:
            raise not_found("room not found")
        return room.DeleteRoomResponse()

    async def list_participants(
        self, request: room.ListParticipantsRequest
    ) -> room.ListParticipantsResponse:
        state = self.by_name.get(request.room)
        participants = list(state.participants.values()) if state else []
        return room.ListParticipantsResponse(participants=participants)

    async def remove_participant(
        self, request: room.RoomParticipantIdentity
    ) -> room.RemoveParticipantResponse:
        if self.leave(request.room, request.identity) is None:
            raise not_found("participant not found")
        return room.RemoveParticipantResponse()

    async def update_room_metadata(self, request: room.UpdateRoomMetadataRequest) -> models.Room:
        state = self.by_name.get(request.room)
        if state is None:
            raise not_found("requested room does not exist")
        state.info.metadata = request.metadata
        return state.snapshot()

    # --- AgentDispatchService ---------------------------------------------------------

    async def create_dispatch(
        self, request: agent_dispatch.CreateAgentDispatchRequest
    ) -> agent_dispatch.AgentDispatch:
        created = self._dispatch(self.ensure(request.room), request.agent_name, request.metadata)
        created.attributes.update(request.attributes)
        return created

    async def list_dispatch(
        self, request: agent_dispatch.ListAgentDispatchRequest
    ) -> agent_dispatch.ListAgentDispatchResponse:
        state = self.by_name.get(request.room)
        if state is None:
            raise not_found("requested room does not exist")
        found = [
            d
            for d in state.dispatches.values()
            if not request.dispatch_id or d.id == request.dispatch_id
        ]
        return agent_dispatch.ListAgentDispatchResponse(agent_dispatches=found)

    async def delete_dispatch(
        self, request: agent_dispatch.DeleteAgentDispatchRequest
    ) -> agent_dispatch.AgentDispatch:
        state = self.by_name.get(request.room)
        deleted = state.dispatches.pop(request.dispatch_id, None) if state else None
        if deleted is None:
            raise not_found("dispatch not found")
        deleted.state.deleted_at = time.time_ns()
        return deleted

    @staticmethod
    def _dispatch(state: RoomState, agent_name: str, metadata: str) -> agent_dispatch.AgentDispatch:
        created = agent_dispatch.AgentDispatch(
            id=new_id("AD_"),
            agent_name=agent_name,
            room=state.info.name,
            metadata=metadata,
            state=agent_dispatch.AgentDispatchState(created_at=time.time_ns()),
        )
        state.dispatches[created.id] = created
        return created
