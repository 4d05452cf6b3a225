"""SIP transfers of the local LiveKit server (TransferSIPParticipant), answered the way
livekit-server v1.13.5 and livekit-sip v1.0.0 answer them: the same checks in the same
order, an empty reply once the far end's NOTIFY says the new call connected, and "call
transfer failed" when it says otherwise (the phone lab shows both, tests/phone)."""

from __future__ import annotations

from livekit.protocol import sip

from tests.fleet.livekit_rooms import Rooms
from tests.fleet.livekit_twirp import TwirpFailure, invalid, not_found


class Transfers:
    def __init__(self, rooms: Rooms) -> None:
        self._rooms = rooms
        self._refused: set[str] = set()

    def refuse(self, target: str) -> None:
        """Transfers to ``target`` (as the request names it) fail at the far end."""
        self._refused.add(target)

    async def transfer_sip_participant(
        self, request: sip.TransferSIPParticipantRequest
    ) -> sip.TransferSIPParticipantResponse:
        if not request.room_name:
            raise invalid("Missing room name")
        if not request.participant_identity:
            raise invalid("Missing participant identity")
        if not request.transfer_to:
            raise invalid("missing transfer to")
        if not request.transfer_to.strip("<>").startswith(("sip:", "sips:", "tel:")):
            raise invalid("transfer_to must be a valid SIP(s) or TEL URI (sip:, sips: or tel:)")
        participant = self._rooms.participant(request.room_name, request.participant_identity)
        if participant is None:
            raise not_found("participant does not exist")
        if "sip.callID" not in participant.attributes:
            raise invalid("no SIP session associated with participant")
        if request.transfer_to in self._refused:
            raise TwirpFailure("unknown", "twirp error unknown: call transfer failed")
        return sip.TransferSIPParticipantResponse()  # v1.13.5 answers Empty
