"""What a transport can do to the phone line itself: transfer the call, send DTMF tones.

Tools never talk to a transport directly: `transfer_call` and `send_dtmf` ask the call's
`CallControl`, which each transport provides (a LiveKit SIP transfer, a Twilio REST
update, ...). A transport that cannot do something says so with `ControlUnsupported`,
and the tool turns that into an error the LLM can explain to the caller.
"""

from __future__ import annotations

from typing import Protocol


class ControlUnsupported(Exception):
    """This transport cannot do that (a browser call has no phone line to transfer)."""


class TransferFailed(Exception):
    """The transfer was tried and did not connect (busy, no answer, refused)."""


class CallControl(Protocol):
    can_transfer: bool

    async def transfer(self, target: str) -> None:
        """Hand the caller over to ``target`` (a phone number or a SIP URI)."""

    async def send_dtmf(self, digits: str) -> None:
        """Play DTMF tones on the line (``0-9 * # A-D``, ``w`` = half a second pause)."""


class SimulatedControl:
    """Text mode and tests: nothing to dial. The request is kept so a scenario can check
    it, and the tools record it in the call's timeline like on a real line."""

    can_transfer = True

    def __init__(self, transfer_error: str | None = None) -> None:
        self.transfers: list[str] = []
        self.dtmf: list[str] = []
        self.transfer_error = transfer_error  # set: every transfer fails with this cause

    async def transfer(self, target: str) -> None:
        self.transfers.append(target)
        if self.transfer_error is not None:
            raise TransferFailed(f"{target}: {self.transfer_error}")

    async def send_dtmf(self, digits: str) -> None:
        self.dtmf.append(digits)
