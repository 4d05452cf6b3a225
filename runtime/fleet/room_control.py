"""`CallControl` for a LiveKit room: what the bot can do to the party's phone line.

- ``transfer``: the server API's ``TransferSIPParticipant``. livekit-sip sends the caller's
  side a SIP REFER to the target and reports success once the far end's NOTIFY says the
  new call connected (a blind transfer: the caller's phone or carrier dials the target,
  then LiveKit's leg of the call ends with a BYE). Only a SIP party has a line to move; a
  WebRTC participant cannot be transferred.
- ``send_dtmf``: RFC 4733 telephone-events through the room (``publish_dtmf``), which
  livekit-sip plays on the SIP leg; ``w`` is half a second's pause.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from runtime.call_control import ControlUnsupported, TransferFailed
from runtime.fleet.room_line import Party

if TYPE_CHECKING:
    from livekit import api, rtc

# livekit-sip turns each published key into a telephone-event of its own; keys sent back
# to back run together at a phone menu, so they are spaced like a person pressing them
KEY_GAP = 0.3
PAUSE = 0.5  # "w"
# the ring window a transfer target has to answer in (LiveKit's own default)
TRANSFER_RINGING_TIMEOUT = 30
_CODES = {**{str(n): n for n in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}


def dtmf_code(key: str) -> int:
    """The RFC 4733 event code of a key (``0-9``, ``*`` 10, ``#`` 11, ``A-D`` 12-15)."""
    try:
        return _CODES[key.upper()]
    except KeyError:
        raise ValueError(f"{key!r} is not a DTMF key (0-9, *, #, A-D, w)") from None


def refer_target(target: str) -> str:
    """What a REFER names for ``target``: a number as a ``tel:`` URI (LiveKit accepts only
    ``sip:``, ``sips:`` and ``tel:``), a URI as it is."""
    if target.startswith(("sip:", "sips:", "tel:")):
        return target
    return f"tel:{target}"


class RoomControl:
    """The line of one party in one room."""

    def __init__(
        self,
        room: rtc.Room,
        room_name: str,
        party: Party,
        api_factory: Callable[[], api.LiveKitAPI],
        *,
        play_dialtone: bool = True,
    ) -> None:
        """``play_dialtone``: the caller hears ringing while the target is dialled,
        rather than silence after the bot's announcement."""
        self.room = room
        self.room_name = room_name
        self.party = party
        self.api_factory = api_factory
        self.play_dialtone = play_dialtone
        self.can_transfer = party.is_sip

    async def transfer(self, target: str) -> None:
        if not self.party.is_sip:
            raise ControlUnsupported(
                f"{self.party.identity} joined over WebRTC: there is no phone line to transfer"
            )
        from livekit import api

        request = api.TransferSIPParticipantRequest(
            room_name=self.room_name,
            participant_identity=self.party.identity,
            transfer_to=refer_target(target),
            play_dialtone=self.play_dialtone,
        )
        request.ringing_timeout.seconds = TRANSFER_RINGING_TIMEOUT
        client = self.api_factory()
        try:
            response = await client.sip.transfer_sip_participant(request)
        except api.TwirpError as exc:
            raise TransferFailed(f"{target}: {_why(exc)}") from None
        except (OSError, asyncio.TimeoutError) as exc:  # the server could not be asked
            raise TransferFailed(f"{target}: {type(exc).__name__}: {exc}") from None
        finally:
            await client.aclose()
        # servers before the transfer status answer nothing (read as ongoing): no error
        # is their success
        if response.status == api.SIPTransferStatus.STS_TRANSFER_FAILED:
            reason = api.SIPTransferReason.Name(response.reason)
            raise TransferFailed(f"{target}: the transfer failed ({reason})")

    async def send_dtmf(self, digits: str) -> None:
        keys = list(digits.upper())
        for key in keys:  # checked first: no half-played sequence for a typo
            if key != "W":
                dtmf_code(key)
        for index, key in enumerate(keys):
            if key == "W":
                await asyncio.sleep(PAUSE)
                continue
            await self.room.local_participant.publish_dtmf(code=dtmf_code(key), digit=key)
            if index < len(keys) - 1:
                await asyncio.sleep(KEY_GAP)


def _why(error: api.TwirpError) -> str:
    """A failed transfer's cause as LiveKit reports it (the SIP status when there is one)."""
    parts = [error.message or error.code]
    status = error.metadata.get("sip_status_code")
    if status:
        parts.append(f"SIP {status} {error.metadata.get('sip_status', '')}".strip())
    reason = error.metadata.get("sip_transfer_reason")
    if reason:
        parts.append(reason)
    return ", ".join(parts)
