"""How an outbound dial attempt went, and what a SIP failure means for the call record."""

from __future__ import annotations

from dataclasses import dataclass

from runtime.record import DisconnectedBy

# busy (486 Busy Here, 600 Busy Everywhere) and nobody picking up (480 Temporarily
# Unavailable, 408 Request Timeout) are worth another try later; 403/404 never are
SIP_NO_ANSWER = frozenset({408, 480, 486, 600})
SIP_REJECTED = frozenset({403, 404})


def disconnected_by_for_sip(status: int | None) -> DisconnectedBy:
    if status in SIP_NO_ANSWER:
        return DisconnectedBy.NO_ANSWER
    if status in SIP_REJECTED:
        return DisconnectedBy.REJECTED
    return DisconnectedBy.ERROR


@dataclass(frozen=True)
class DialOutcome:
    """The result of placing one outbound call.

    ``answered``: the callee picked up and the call went to the bot (its record comes from
    the worker when it ends). Otherwise ``disconnected_by``/``sip_status``/``cause`` say why
    and the dialer has written the record itself."""

    session_id: str
    room: str
    answered: bool
    disconnected_by: DisconnectedBy | None = None
    sip_status: int | None = None
    cause: str | None = None

    @property
    def retryable(self) -> bool:
        """No answer or busy: a campaign tries again later."""
        return not self.answered and self.disconnected_by == DisconnectedBy.NO_ANSWER
