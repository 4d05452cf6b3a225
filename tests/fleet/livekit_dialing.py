"""Outbound calls on the local LiveKit server: CreateSIPParticipant, scripted per number.

The callee's participant joins the room as soon as dialling starts (``sip.callStatus`` is
``dialing``), turns ``active`` when the scripted answer comes, and leaves when the call
fails, as LiveKit's SIP service does. With ``wait_until_answered`` the response waits for
the outcome; a scripted answer later than the ringing timeout fails with 408.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from livekit.protocol import models, sip

from tests.fleet.livekit_rooms import Rooms
from tests.fleet.livekit_sip import TRUNK_NOT_FOUND, SipStore
from tests.fleet.livekit_twirp import (
    TwirpFailure,
    invalid,
    new_id,
    normalize_number,
    not_found,
    sip_failure,
)

DEFAULT_RINGING_TIMEOUT = 30.0  # LiveKit's, when the request sets none


@dataclass(frozen=True)
class SipAnswer:
    """The callee picks up ``after`` seconds of ringing."""

    after: float = 0.0


@dataclass(frozen=True)
class SipFailure:
    """The carrier ends the INVITE with a final failure: ``SipFailure(486, "Busy Here")``."""

    status: int
    reason: str
    after: float = 0.0


DialScript = SipAnswer | SipFailure


@dataclass
class DialRecord:
    """One CreateSIPParticipant, timed with ``time.monotonic()``."""

    number: str
    room: str
    identity: str
    trunk_id: str
    placed_at: float
    settled_at: float | None = None
    outcome: Literal["ringing", "answered", "failed"] = "ringing"
    sip_status: int = 0  # 200 when answered, the failure's status otherwise


@dataclass
class _Dial:
    request: sip.CreateSIPParticipantRequest
    trunk: sip.SIPOutboundTrunkInfo | None
    identity: str
    call_id: str
    record: DialRecord
    script: DialScript = field(default_factory=SipAnswer)


class Dialing:
    def __init__(self, rooms: Rooms, store: SipStore) -> None:
        self._rooms = rooms
        self._store = store
        self._scripts: dict[str, deque[DialScript]] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self.dials: list[DialRecord] = []

    def script(self, number: str, outcomes: tuple[DialScript, ...]) -> None:
        """Each dial to ``number`` takes the next outcome; the last one repeats."""
        if not outcomes:
            raise ValueError("script_dial needs at least one SipAnswer or SipFailure")
        self._scripts[normalize_number(number)] = deque(outcomes)

    def _next_script(self, number: str) -> DialScript:
        queue = self._scripts.get(normalize_number(number))
        if not queue:
            return SipAnswer()
        return queue.popleft() if len(queue) > 1 else queue[0]

    async def create_sip_participant(
        self, request: sip.CreateSIPParticipantRequest
    ) -> sip.SIPParticipantInfo:
        dial = self._start(request)
        if request.wait_until_answered:
            await self._ring(dial)
        else:
            task = asyncio.get_running_loop().create_task(self._ring_quietly(dial))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        return sip.SIPParticipantInfo(
            participant_id=self._participant_sid(dial),
            participant_identity=dial.identity,
            room_name=request.room_name,
            sip_call_id=dial.call_id,
        )

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)

    def placed_per_second(self) -> float:
        """Dials placed over the span from the first to the last (0 with fewer than two)."""
        if len(self.dials) < 2:
            return 0.0
        span = self.dials[-1].placed_at - self.dials[0].placed_at
        return (len(self.dials) - 1) / span if span > 0 else float("inf")

    # --- the call's life --------------------------------------------------------------

    def _start(self, request: sip.CreateSIPParticipantRequest) -> _Dial:
        trunk = self._validated_trunk(request)
        identity = request.participant_identity or f"sip_{request.sip_call_to}"
        record = DialRecord(
            number=request.sip_call_to,
            room=request.room_name,
            identity=identity,
            trunk_id=request.sip_trunk_id,
            placed_at=time.monotonic(),
        )
        self.dials.append(record)
        dial = _Dial(request, trunk, identity, new_id("SCL_"), record)
        dial.script = self._next_script(request.sip_call_to)
        self._rooms.join(
            request.room_name,
            identity,
            kind=models.ParticipantInfo.Kind.SIP,
            name=request.participant_name,
            metadata=request.participant_metadata,
            attributes=self._attributes(dial, "dialing"),
        )
        return dial

    def _validated_trunk(
        self, request: sip.CreateSIPParticipantRequest
    ) -> sip.SIPOutboundTrunkInfo | None:
        if not request.sip_trunk_id and not request.HasField("trunk"):
            raise invalid("missing sip trunk id")
        if not request.sip_call_to:
            raise invalid("missing sip callee number")
        if "@" in request.sip_call_to:
            raise invalid("SipCallTo should be a phone number or SIP user, not a full SIP URI")
        if not request.room_name:
            raise invalid("missing room name")
        if not request.sip_trunk_id:
            return None  # an inline SIPOutboundConfig: nothing stored to look up
        trunk = self._store.outbound.get(request.sip_trunk_id)
        if trunk is None:
            raise not_found(TRUNK_NOT_FOUND)
        return trunk

    async def _ring(self, dial: _Dial) -> None:
        """Ring until the scripted outcome or the ringing timeout; raise if not answered."""
        ringing = _ringing_timeout(dial.request)
        outcome = dial.script
        if isinstance(outcome, SipAnswer) and outcome.after > ringing:
            outcome = SipFailure(408, "Request Timeout", after=ringing)
        await asyncio.sleep(outcome.after)
        if self._rooms.participant(dial.request.room_name, dial.identity) is None:
            # hung up or the room deleted while ringing: LiveKit cancels the INVITE
            outcome = SipFailure(487, "Request Terminated")
        if isinstance(outcome, SipFailure):
            self._fail(dial, outcome)
            raise sip_failure(outcome.status, outcome.reason)
        self._answer(dial)

    async def _ring_quietly(self, dial: _Dial) -> None:
        # nobody waits for this response, so a failure only shows as the participant leaving
        with contextlib.suppress(TwirpFailure):
            await self._ring(dial)

    def _answer(self, dial: _Dial) -> None:
        participant = self._rooms.participant(dial.request.room_name, dial.identity)
        if participant is not None:
            participant.attributes.update(self._attributes(dial, "active"))
        self._settle(dial.record, "answered", 200)

    def _fail(self, dial: _Dial, failure: SipFailure) -> None:
        self._rooms.leave(dial.request.room_name, dial.identity)
        self._settle(dial.record, "failed", failure.status)

    @staticmethod
    def _settle(record: DialRecord, outcome: Literal["answered", "failed"], status: int) -> None:
        record.outcome = outcome
        record.sip_status = status
        record.settled_at = time.monotonic()

    def _participant_sid(self, dial: _Dial) -> str:
        participant = self._rooms.participant(dial.request.room_name, dial.identity)
        return participant.sid if participant else ""

    def _attributes(self, dial: _Dial, status: str) -> dict[str, str]:
        request = dial.request
        trunk_number = request.sip_number or (dial.trunk.numbers[0] if dial.trunk else "")
        attributes = dict(request.participant_attributes)
        attributes.update(
            {
                "sip.callStatus": status,
                "sip.callID": dial.call_id,
                "sip.callIDFull": f"{dial.call_id.lower()}@dialplan.test",
                "sip.trunkID": request.sip_trunk_id,
            }
        )
        if not request.hide_phone_number:
            attributes["sip.phoneNumber"] = request.sip_call_to
            attributes["sip.trunkPhoneNumber"] = trunk_number
        return attributes


def _ringing_timeout(request: sip.CreateSIPParticipantRequest) -> float:
    if not request.HasField("ringing_timeout"):
        return DEFAULT_RINGING_TIMEOUT
    return request.ringing_timeout.seconds + request.ringing_timeout.nanos / 1e9
