"""Who may open a Twilio Media Stream: only Twilio, for a call our signed webhook answered.

Two locks, both keyed by the account's auth token (``TWILIO_AUTH_TOKEN``):

1. The WebSocket handshake carries ``X-Twilio-Signature``: Twilio signs the stream's URL
   exactly as the TwiML gave it (``wss://...``), with no body parameters.
2. The signed voice webhook issues a one-time token bound to the call's ``CallSid``; the
   TwiML passes it as a stream ``<Parameter>``, and the stream's ``start`` must bring it
   back for that same call, unexpired and unused. The token is an HMAC, not server state,
   so any server of a fleet sharing the auth token accepts it; "unused" is per process,
   enough to stop a replay of a captured stream within its short life.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, field

TOKEN_PARAMETER = "token"  # the <Parameter> name the token travels under
TOKEN_LIFETIME = 120.0  # seconds from the webhook's answer to the stream's start


def signed_handshake(auth_token: str, urls: list[str], signature: str) -> bool:
    """True if ``signature`` is Twilio's for one of ``urls`` (the stream URL as the TwiML
    wrote it; behind a proxy the scheme Twilio used may differ from ours)."""
    if not signature:
        return False
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(auth_token)
    return any(validator.validate(url, {}, signature) for url in urls)


@dataclass
class StreamTokens:
    """Issues and redeems the one-time stream tokens of one auth token."""

    secret: str
    lifetime: float = TOKEN_LIFETIME
    _redeemed: dict[str, float] = field(default_factory=dict)  # token -> its expiry

    def issue(self, call_sid: str, *, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self.lifetime)
        return f"{expires}.{self._mac(call_sid, expires)}"

    def redeem(self, token: str | None, call_sid: str | None, *, now: float | None = None) -> str:
        """Accept ``token`` for ``call_sid`` once; returns "" when accepted, else why not."""
        now = time.time() if now is None else now
        if not token:
            return "the stream carries no token from our webhook"
        expires_text, _, mac = token.partition(".")
        if not expires_text.isdigit() or not call_sid:
            return "the stream's token is malformed"
        expires = int(expires_text)
        if not hmac.compare_digest(mac, self._mac(call_sid, expires)):
            return "the stream's token was not issued for this call"
        if expires < now:
            return "the stream's token has expired"
        self._forget_expired(now)
        if token in self._redeemed:
            return "the stream's token was already used"
        self._redeemed[token] = expires
        return ""

    def _mac(self, call_sid: str, expires: int) -> str:
        message = f"dialplan-stream\0{call_sid}\0{expires}".encode()
        return hmac.new(self.secret.encode(), message, hashlib.sha256).hexdigest()

    def _forget_expired(self, now: float) -> None:
        for token, expires in list(self._redeemed.items()):
            if expires < now:
                del self._redeemed[token]
