"""A LiveKit server API on 127.0.0.1 for tests: Twirp over HTTP, as livekit-api calls it.

    async with LiveKitTestServer() as server:
        lkapi = server.api()                    # a real livekit.api.LiveKitAPI; aclose() it
        server.script_dial("+15550100", SipFailure(486, "Busy Here"))
        ...
        server.calls("CreateSIPParticipant")    # the decoded protobuf requests

Requests are protobuf (``application/protobuf``, the only kind the client sends) decoded
with livekit's own classes. Tokens are checked like livekit-server does: a token that does
not verify is a plain-text 401 (the client reports it as code ``unknown``, status 401); a
valid token without the grant a method needs is the Twirp error ``unauthenticated``
("permissions denied"). State lives in memory; rooms and SIP objects get real-looking ids.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple

import jwt
from aiohttp import web
from google.protobuf.message import DecodeError, Message
from livekit import api
from livekit.api.access_token import Claims
from livekit.protocol import agent_dispatch, models, room, sip

from tests.fleet.livekit_dialing import Dialing, DialRecord, DialScript, SipAnswer, SipFailure
from tests.fleet.livekit_rooms import Rooms
from tests.fleet.livekit_sip import SipStore
from tests.fleet.livekit_transfer import Transfers
from tests.fleet.livekit_twirp import TwirpFailure

__all__ = ["DialRecord", "LiveKitTestServer", "RecordedRequest", "SipAnswer", "SipFailure"]

DEFAULT_API_KEY = "devkey"
DEFAULT_API_SECRET = "secret" * 6  # PyJWT warns (an error under pytest) below 32 bytes
_READ_ONLY = ("List", "Get")


class RecordedRequest(NamedTuple):
    service: str  # "SIP", "RoomService", "AgentDispatchService"
    method: str  # "CreateSIPDispatchRule"
    message: Any  # the decoded protobuf request, e.g. a CreateSIPDispatchRuleRequest


Permission = Callable[[Claims, Any], bool]


@dataclass(frozen=True)
class _Endpoint:
    request_type: type[Message]
    permission: Permission
    handle: Callable[[Any], Awaitable[Message]]


def _room_create(claims: Claims, _request: Any) -> bool:
    return bool(claims.video and claims.video.room_create)


def _room_list(claims: Claims, _request: Any) -> bool:
    return bool(claims.video and claims.video.room_list)


def _room_admin(claims: Claims, request: Any) -> bool:
    # the token is scoped to one room: the one the request names
    video = claims.video
    return bool(video and video.room_admin and video.room == request.room)


def _sip_admin(claims: Claims, _request: Any) -> bool:
    return bool(claims.sip and claims.sip.admin)


def _sip_call(claims: Claims, _request: Any) -> bool:
    return bool(claims.sip and claims.sip.call)


def _sip_transfer(claims: Claims, request: Any) -> bool:
    # a transfer acts on one room's participant: SIP call rights and that room's admin
    video = claims.video
    admin = bool(video and video.room_admin and video.room == request.room_name)
    return admin and _sip_call(claims, request)


class LiveKitTestServer:
    def __init__(
        self, api_key: str = DEFAULT_API_KEY, api_secret: str = DEFAULT_API_SECRET
    ) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.requests: list[RecordedRequest] = []
        self.rooms = Rooms()
        self.sip = SipStore()
        self.dialing = Dialing(self.rooms, self.sip)
        self.transfers = Transfers(self.rooms)
        self._verifier = api.TokenVerifier(api_key, api_secret)
        self._endpoints = self._routes()
        self._socket: socket.socket | None = None
        self._runner: web.AppRunner | None = None

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        app = web.Application()
        app.router.add_post("/twirp/livekit.{service}/{method}", self._handle)
        # a dial waiting for its answer must not hold the test up at shutdown
        self._runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self._runner.setup()
        await web.SockSite(self._runner, self._socket).start()

    async def close(self) -> None:
        await self.dialing.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._socket is not None:
            self._socket.close()

    async def __aenter__(self) -> LiveKitTestServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def url(self) -> str:
        if self._socket is None:
            raise RuntimeError("start the server first (async with LiveKitTestServer() as s)")
        host, port = self._socket.getsockname()
        return f"http://{host}:{port}"

    def env(self) -> dict[str, str]:
        return {
            "LIVEKIT_URL": self.url,
            "LIVEKIT_API_KEY": self.api_key,
            "LIVEKIT_API_SECRET": self.api_secret,
        }

    def api(self) -> api.LiveKitAPI:
        """A real client for this server; the caller closes it (``await lkapi.aclose()``)."""
        return api.LiveKitAPI(self.url, self.api_key, self.api_secret)

    # --- what the tests look at -------------------------------------------------------

    def calls(self, method: str) -> list[Any]:
        """The decoded requests of one method, oldest first."""
        return [r.message for r in self.requests if r.method == method]

    def writes(self) -> list[RecordedRequest]:
        """Every request that could have changed something (all but List*/Get*)."""
        return [r for r in self.requests if not r.method.startswith(_READ_ONLY)]

    def participants(self, room_name: str) -> list[models.ParticipantInfo]:
        state = self.rooms.by_name.get(room_name)
        return list(state.participants.values()) if state else []

    @property
    def dials(self) -> list[DialRecord]:
        return self.dialing.dials

    def dials_per_second(self) -> float:
        return self.dialing.placed_per_second()

    # --- what the tests make happen ---------------------------------------------------

    def script_dial(self, number: str, *outcomes: DialScript) -> None:
        """How calls to ``number`` go: each dial takes the next outcome, the last repeats.
        Unscripted numbers answer at once."""
        self.dialing.script(number, outcomes)

    def add_participant(
        self,
        room_name: str,
        identity: str,
        *,
        kind: models.ParticipantInfo.Kind = models.ParticipantInfo.Kind.STANDARD,
        attributes: Mapping[str, str] | None = None,
    ) -> models.ParticipantInfo:
        """Someone joins (the room is created if needed), e.g. an inbound SIP caller."""
        return self.rooms.join(room_name, identity, kind=kind, attributes=attributes)

    def hang_up(self, room_name: str, identity: str) -> None:
        """The participant leaves, as when the callee hangs up."""
        if self.rooms.leave(room_name, identity) is None:
            raise KeyError(f"no participant {identity!r} in room {room_name!r}")

    # --- HTTP -------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        service, method = request.match_info["service"], request.match_info["method"]
        try:
            claims = self._authenticate(request)
        except PermissionError as refused:
            return web.Response(status=401, text=str(refused))
        try:
            reply = await self._dispatch(service, method, request, claims)
        except TwirpFailure as failure:
            return web.json_response(failure.body(), status=failure.http_status)
        except Exception as bug:  # a fault in this fake: show it to the test, not just a 500
            fault = TwirpFailure("internal", f"test server: {bug!r}")
            return web.json_response(fault.body(), status=fault.http_status)
        return web.Response(body=reply.SerializeToString(), content_type="application/protobuf")

    def _authenticate(self, request: web.Request) -> Claims | None:
        """No header: no grants (every method then refuses). A bad token: 401 at once."""
        header = request.headers.get("Authorization", "")
        if not header:
            return None
        if not header.startswith("Bearer "):
            raise PermissionError("invalid authorization header. Must start with Bearer ")
        try:
            return self._verifier.verify(header.removeprefix("Bearer "))
        except (jwt.PyJWTError, ValueError) as exc:
            raise PermissionError(f"invalid token: {exc}") from None

    async def _dispatch(
        self, service: str, method: str, request: web.Request, claims: Claims | None
    ) -> Message:
        endpoint = self._endpoints.get((service, method))
        if endpoint is None:
            path = f"/twirp/livekit.{service}/{method}"
            raise TwirpFailure("bad_route", f"no handler for path {path}")
        if request.content_type != "application/protobuf":
            raise TwirpFailure("bad_route", f"unexpected Content-Type: {request.content_type!r}")
        message = endpoint.request_type()
        try:
            message.ParseFromString(await request.read())
        except DecodeError:
            raise TwirpFailure("malformed", "the request could not be decoded") from None
        self.requests.append(RecordedRequest(service, method, message))
        if claims is None or not endpoint.permission(claims, message):
            raise TwirpFailure("unauthenticated", "permissions denied")
        return await endpoint.handle(message)

    def _routes(self) -> dict[tuple[str, str], _Endpoint]:
        rooms, store, dialing, transfers = self.rooms, self.sip, self.dialing, self.transfers
        table: dict[str, tuple[type[Message], Permission, Callable[[Any], Awaitable[Message]]]] = {
            "RoomService/CreateRoom": (room.CreateRoomRequest, _room_create, rooms.create_room),
            "RoomService/ListRooms": (room.ListRoomsRequest, _room_list, rooms.list_rooms),
            "RoomService/DeleteRoom": (room.DeleteRoomRequest, _room_create, rooms.delete_room),
            "RoomService/ListParticipants": (
                room.ListParticipantsRequest,
                _room_admin,
                rooms.list_participants,
            ),
            "RoomService/RemoveParticipant": (
                room.RoomParticipantIdentity,
                _room_admin,
                rooms.remove_participant,
            ),
            "RoomService/UpdateRoomMetadata": (
                room.UpdateRoomMetadataRequest,
                _room_admin,
                rooms.update_room_metadata,
            ),
            "AgentDispatchService/CreateDispatch": (
                agent_dispatch.CreateAgentDispatchRequest,
                _room_admin,
                rooms.create_dispatch,
            ),
            "AgentDispatchService/ListDispatch": (
                agent_dispatch.ListAgentDispatchRequest,
                _room_admin,
                rooms.list_dispatch,
            ),
            "AgentDispatchService/DeleteDispatch": (
                agent_dispatch.DeleteAgentDispatchRequest,
                _room_admin,
                rooms.delete_dispatch,
            ),
            "SIP/CreateSIPInboundTrunk": (
                sip.CreateSIPInboundTrunkRequest,
                _sip_admin,
                store.create_inbound_trunk,
            ),
            "SIP/CreateSIPOutboundTrunk": (
                sip.CreateSIPOutboundTrunkRequest,
                _sip_admin,
                store.create_outbound_trunk,
            ),
            "SIP/ListSIPInboundTrunk": (
                sip.ListSIPInboundTrunkRequest,
                _sip_admin,
                store.list_inbound_trunks,
            ),
            "SIP/ListSIPOutboundTrunk": (
                sip.ListSIPOutboundTrunkRequest,
                _sip_admin,
                store.list_outbound_trunks,
            ),
            "SIP/UpdateSIPInboundTrunk": (
                sip.UpdateSIPInboundTrunkRequest,
                _sip_admin,
                store.update_inbound_trunk,
            ),
            "SIP/UpdateSIPOutboundTrunk": (
                sip.UpdateSIPOutboundTrunkRequest,
                _sip_admin,
                store.update_outbound_trunk,
            ),
            "SIP/DeleteSIPTrunk": (sip.DeleteSIPTrunkRequest, _sip_admin, store.delete_trunk),
            "SIP/CreateSIPDispatchRule": (
                sip.CreateSIPDispatchRuleRequest,
                _sip_admin,
                store.create_dispatch_rule,
            ),
            "SIP/ListSIPDispatchRule": (
                sip.ListSIPDispatchRuleRequest,
                _sip_admin,
                store.list_dispatch_rules,
            ),
            "SIP/UpdateSIPDispatchRule": (
                sip.UpdateSIPDispatchRuleRequest,
                _sip_admin,
                store.update_dispatch_rule,
            ),
            "SIP/DeleteSIPDispatchRule": (
                sip.DeleteSIPDispatchRuleRequest,
                _sip_admin,
                store.delete_dispatch_rule,
            ),
            "SIP/CreateSIPParticipant": (
                sip.CreateSIPParticipantRequest,
                _sip_call,
                dialing.create_sip_participant,
            ),
            "SIP/TransferSIPParticipant": (
                sip.TransferSIPParticipantRequest,
                _sip_transfer,
                transfers.transfer_sip_participant,
            ),
        }
        return {
            tuple(path.split("/")): _Endpoint(*spec)  # type: ignore[misc]
            for path, spec in table.items()
        }
