"""Outbound calls through the LiveKit server API.

    outcome = Call(bot="reminder", to="+15550123", variables={"name": "Ada"}).start()

1. CreateRoom ``call_<session_id>``;
2. CreateDispatch: the fleet's agent joins the room with the job metadata
   ``{"bot", "variables", "overrides", "session_id", "dial": {...}}`` and waits for the callee;
3. CreateSIPParticipant with ``wait_until_answered``, the ringing timeout (the bot's
   ``limits.ring_timeout`` unless given) and the max call duration (its ``max_duration``).

The agent is in the room before the phone rings, so an answered callee is greeted (or
screened for voicemail) at once. A dial that fails is recorded here — only the dialer
learns the SIP status — as ``no_answer`` (busy 486/600, no answer 480/408), ``rejected``
(403/404) or ``error``, with the status kept, and the room is deleted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from runtime.call import CallOverrides
from runtime.errors import DialplanError
from runtime.fleet.config import ROOM_PREFIX, FleetConfig
from runtime.fleet.outcome import DialOutcome, disconnected_by_for_sip
from runtime.fleet.provision_plan import is_managed
from runtime.record import CallEvent, CallRecord, DisconnectedBy

if TYPE_CHECKING:
    from livekit import api

    from runtime.call_results import CallResults
    from runtime.compiler import CompiledBot

log = logging.getLogger("dialplan.dialer")

DEFAULT_RINGING_TIMEOUT = 30.0
ROOM_EMPTY_TIMEOUT = 60  # seconds an abandoned room lingers before LiveKit closes it
WAIT_POLL = 1.0  # how often `wait_ended` looks at the room


class DialError(DialplanError):
    """The call could not even be attempted (no trunk, the API refused the request)."""


@dataclass
class Call:
    bot: str
    to: str
    from_: str | None = None
    trunk: str | None = None  # an outbound trunk's name in the fleet config, or an ST_ id
    variables: Mapping[str, Any] = field(default_factory=dict)
    overrides: CallOverrides | Mapping[str, Any] | None = None
    ringing_timeout: float | None = None
    max_call_duration: float | None = None
    agent_name: str | None = None
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    config: FleetConfig | None = None
    livekit_api: api.LiveKitAPI | None = None  # shared by a campaign; else one per call
    results: CallResults | None = None  # where a failed dial's record goes
    bot_spec: CompiledBot | None = None  # the bot, when the bots are at hand (limits, rules)

    @property
    def room(self) -> str:
        return f"{ROOM_PREFIX}{self.session_id}"

    @property
    def participant_identity(self) -> str:
        return f"sip_{self.to.lstrip('+')}"

    def start(self) -> DialOutcome:
        """Place the call and wait until it is answered or has failed (blocking)."""
        return asyncio.run(self.place())

    async def place(self) -> DialOutcome:
        from livekit import api

        fleet = self.config or FleetConfig()
        client = self.livekit_api or api.LiveKitAPI()
        started = dt.datetime.now(dt.timezone.utc)
        try:
            try:
                trunk_id = await self._trunk_id(client, fleet)
                await self._open_room(client, fleet, trunk_id)
            except (
                DialError,
                api.TwirpError,
                aiohttp.ClientError,
                asyncio.TimeoutError,
                OSError,
            ) as exc:
                # the call could not even be attempted: a record still says so, and why
                return await self._failed(client, started, None, None, exc, attempted=False)
            return await self._dial(client, trunk_id)
        finally:
            if self.livekit_api is None:
                await client.aclose()

    async def wait_ended(self, *, poll: float = WAIT_POLL) -> None:
        """After an answered call: return once the callee has left or the room is gone."""
        from livekit import api

        client = self.livekit_api or api.LiveKitAPI()
        try:
            while True:
                try:
                    listing = await client.room.list_participants(
                        api.ListParticipantsRequest(room=self.room)
                    )
                except api.TwirpError as exc:
                    if exc.code == api.TwirpErrorCode.NOT_FOUND:
                        return
                    raise
                if all(p.identity != self.participant_identity for p in listing.participants):
                    return
                await asyncio.sleep(poll)
        finally:
            if self.livekit_api is None:
                await client.aclose()

    # -- steps -------------------------------------------------------------------------

    async def _trunk_id(self, client: api.LiveKitAPI, fleet: FleetConfig) -> str:
        from livekit import api

        if self.trunk and self.trunk.startswith("ST_"):
            return self.trunk
        configured = fleet.outbound_trunk(self.trunk)
        if configured is None:
            where = f"no outbound trunk named {self.trunk!r}" if self.trunk else "no outbound trunk"
            raise DialError(
                f"{where} in the fleet config: add a [[trunks.outbound]] entry and run "
                "`dialplan provision`, or pass a LiveKit trunk id (ST_...)"
            )
        listing = await client.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())
        for info in listing.items:
            # dialplan's own trunk of that name (as `provision` made it), not a namesake
            if info.name == configured.name and is_managed(info):
                if self.from_ is None and configured.numbers:
                    self.from_ = configured.numbers[0]
                return str(info.sip_trunk_id)
        raise DialError(
            f"the outbound trunk {configured.name!r} is configured but not on the LiveKit "
            "server: run `dialplan provision`"
        )

    def _limits(self) -> tuple[float, float]:
        limits = self.bot_spec.bot.limits if self.bot_spec is not None else None
        ringing = self.ringing_timeout or (limits.ring_timeout if limits else None)
        duration = self.max_call_duration or (limits.max_duration if limits else None)
        return float(ringing or DEFAULT_RINGING_TIMEOUT), float(duration or 0.0)

    def _metadata(self, trunk_id: str) -> str:
        ringing, duration = self._limits()
        overrides = self.overrides
        if isinstance(overrides, CallOverrides):
            overrides = overrides.model_dump(exclude_defaults=True)
        return json.dumps(
            {
                "bot": self.bot,
                "variables": dict(self.variables),
                "overrides": dict(overrides or {}),
                "session_id": self.session_id,
                "dial": {
                    "to": self.to,
                    "trunk_id": trunk_id,
                    "from_number": self.from_ or "",
                    "ringing_timeout": ringing,
                    "max_call_duration": duration,
                    "participant_identity": self.participant_identity,
                },
            }
        )

    async def _open_room(self, client: api.LiveKitAPI, fleet: FleetConfig, trunk_id: str) -> None:
        from livekit import api

        metadata = self._metadata(trunk_id)
        await client.room.create_room(
            api.CreateRoomRequest(
                name=self.room, empty_timeout=ROOM_EMPTY_TIMEOUT, metadata=metadata
            )
        )
        await client.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(
                agent_name=self.agent_name or fleet.worker.agent_name,
                room=self.room,
                metadata=metadata,
            )
        )

    async def _dial(self, client: api.LiveKitAPI, trunk_id: str) -> DialOutcome:
        from livekit import api

        ringing, duration = self._limits()
        request = api.CreateSIPParticipantRequest(
            sip_trunk_id=trunk_id,
            sip_call_to=self.to,
            sip_number=self.from_ or "",
            room_name=self.room,
            participant_identity=self.participant_identity,
            participant_name=self.to,
            wait_until_answered=True,
            ringing_timeout=_duration(ringing),
        )
        if duration:
            request.max_call_duration.CopyFrom(_duration(duration))
        started = dt.datetime.now(dt.timezone.utc)
        try:
            await client.sip.create_sip_participant(request)
        except api.SipCallError as exc:
            return await self._failed(client, started, exc.sip_status_code, exc.sip_status, exc)
        except api.TwirpError as exc:
            if _rang_out(exc):
                return await self._failed(client, started, 408, "Ringing timeout", exc)
            return await self._failed(client, started, None, None, exc)
        return DialOutcome(self.session_id, self.room, answered=True)

    async def _failed(
        self,
        client: api.LiveKitAPI,
        started: dt.datetime,
        status: int | None,
        reason: str | None,
        error: Exception,
        *,
        attempted: bool = True,
    ) -> DialOutcome:
        """Record a call that did not connect. ``attempted=False``: it never reached the
        phone network (a refused API key, an unreachable server, no trunk)."""
        from livekit import api

        disconnected_by = disconnected_by_for_sip(status) if attempted else DisconnectedBy.ERROR
        cause = f"SIP {status} {reason or ''}".strip() if status else f"dial failed: {_why(error)}"
        try:
            await client.room.delete_room(api.DeleteRoomRequest(room=self.room))
        except api.TwirpError as exc:  # already gone is fine; the agent leaves either way
            log.debug("deleting %s after a failed dial: %s", self.room, exc.message)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            # the server is not reachable: nothing was created there to delete
            log.debug("cannot delete %s after a failed dial: %s", self.room, exc)
        await self._record_failure(started, disconnected_by, cause, status)
        return DialOutcome(
            self.session_id,
            self.room,
            answered=False,
            disconnected_by=disconnected_by,
            sip_status=status,
            cause=cause,
        )

    async def _record_failure(
        self,
        started: dt.datetime,
        disconnected_by: DisconnectedBy,
        cause: str,
        status: int | None,
    ) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        record = CallRecord(
            session_id=self.session_id,
            bot_id=self.bot,
            bot_version=self.bot_spec.version if self.bot_spec else "",
            transport="sip",
            direction="outbound",
            caller=self.from_,
            callee=self.to,
            variables=dict(self.variables),
            started_at=started,
            ended_at=now,
            disconnected_by=disconnected_by,
            cause=cause,
            sip_status=status,
        )
        record.events.append(
            CallEvent(
                type="dial_failed",
                at=round((now - started).total_seconds(), 3),
                data={"sip_status": status, "cause": cause, "room": self.room},
            )
        )
        if self.results is not None:
            await self.results.ended(record, self.bot_spec)
        else:
            log.warning(
                "call %s to %s failed (%s); no results store given", self.session_id, self.to, cause
            )


def _rang_out(error: api.TwirpError) -> bool:
    """livekit-sip's answer when the phone rang until the ringing timeout: no SIP status,
    the Twirp code ``canceled`` with HTTP 408 (seen from livekit-sip 1.0 via
    livekit-server 1.13). Nobody picked up: that is a no-answer, worth another try."""
    from livekit import api

    return error.code == api.TwirpErrorCode.CANCELED and error.status == 408


def _why(error: Exception) -> str:
    """A failure in words a person can act on, not an exception's repr."""
    from livekit import api

    if isinstance(error, api.TwirpError):
        from runtime.fleet.provision import refusal

        fix = " (check LIVEKIT_API_KEY/LIVEKIT_API_SECRET)" if error.status == 401 else ""
        return refusal(error) + fix
    if isinstance(error, aiohttp.ClientError | asyncio.TimeoutError | OSError):
        detail = str(error) or type(error).__name__
        return f"cannot reach LiveKit ({detail}; check LIVEKIT_URL and that the server runs)"
    return str(error)


def _duration(seconds: float) -> Any:
    from google.protobuf.duration_pb2 import Duration

    whole = int(seconds)
    return Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))
