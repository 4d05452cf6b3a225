"""How the local LiveKit server fails and names things, the way livekit-server does.

Twirp errors travel as JSON ``{"code", "msg", "meta"}`` with the HTTP status Twirp assigns
to the code; a failed dial carries the SIP status in ``meta`` (``sip_status_code``,
``sip_status``), which livekit-api turns into a ``SipCallError``.
"""

from __future__ import annotations

import secrets
import string

# Twirp's code → HTTP status table; the client only looks at the body, but a 5xx would
# make it try region failover, so the statuses must be the real ones
TWIRP_HTTP_STATUS = {
    "canceled": 408,
    "unknown": 500,
    "invalid_argument": 400,
    "malformed": 400,
    "deadline_exceeded": 408,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "unauthenticated": 401,
    "resource_exhausted": 429,
    "failed_precondition": 412,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "dataloss": 500,
}

# livekit/protocol maps the carrier's final SIP response to a gRPC code, which Twirp
# renames; anything not listed is reported as invalid_argument, as there
_SIP_STATUS_CODES = {
    400: "invalid_argument",
    401: "permission_denied",
    402: "permission_denied",
    403: "permission_denied",
    404: "not_found",
    407: "unauthenticated",
    408: "deadline_exceeded",
    410: "not_found",
    480: "resource_exhausted",
    481: "not_found",
    486: "resource_exhausted",
    487: "aborted",
    500: "failed_precondition",
    501: "failed_precondition",
    502: "failed_precondition",
    503: "failed_precondition",
    504: "deadline_exceeded",
    600: "resource_exhausted",
    603: "permission_denied",
    604: "not_found",
}

_ID_ALPHABET = string.ascii_letters + string.digits


class TwirpFailure(Exception):
    """Raised by a handler; the server answers it as a Twirp error."""

    def __init__(self, code: str, msg: str, meta: dict[str, str] | None = None) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.meta = meta or {}

    @property
    def http_status(self) -> int:
        return TWIRP_HTTP_STATUS[self.code]

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "msg": self.msg}
        if self.meta:
            body["meta"] = self.meta
        return body


def invalid(msg: str) -> TwirpFailure:
    return TwirpFailure("invalid_argument", msg)


def not_found(msg: str) -> TwirpFailure:
    return TwirpFailure("not_found", msg)


def sip_failure(status: int, reason: str) -> TwirpFailure:
    code = _SIP_STATUS_CODES.get(status, "invalid_argument")
    meta = {"sip_status_code": str(status), "sip_status": reason}
    return TwirpFailure(code, f"sip status {status}: {reason}", meta)


def new_id(prefix: str) -> str:
    """``ST_``, ``SDR_``, ``RM_``, ``AD_``, ``PA_``, ``SCL_`` + 12 base62 characters."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def normalize_number(number: str) -> str:
    """LiveKit compares numbers without formatting and with a leading +."""
    digits = "".join(ch for ch in number if ch not in " -()")
    if digits and not digits.startswith("+") and digits.isdigit():
        return "+" + digits
    return digits
