"""Which bot answers a LiveKit job, and with which variables.

The bot comes from, in order:
1. the job metadata: ``{"bot": ..., "variables": {...}, "overrides": {...}}`` (an outbound
   call's dispatch, or an inbound dispatch rule's agent metadata written by `provision`);
2. the dispatch rule's participant attribute ``dialplan.bot``;
3. the called number, looked up in the fleet config's ``[[routes]]``.

The SIP participant's attributes become call variables: ``caller_number``,
``called_number`` and a ``sip`` object (call id, trunk id, rule id, X- headers), plus any
attribute a trunk's ``headers_to_attributes`` created, under its own name. Later sources
win: route variables < SIP attributes < job metadata variables.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from runtime.call import CallOverrides, CallRequest
from runtime.errors import CallSetupError
from runtime.fleet.config import FleetConfig

BOT_ATTRIBUTE = "dialplan.bot"
# attributes LiveKit and dialplan own; everything else on a SIP participant came from a
# trunk's headers_to_attributes and is passed on as a variable of the same name
_RESERVED_PREFIXES = ("sip.", "lk.", "dialplan.")
_SIP_FIELDS = {
    "sip.callID": "call_id",
    "sip.trunkID": "trunk_id",
    "sip.ruleID": "rule_id",
    "sip.callStatus": "call_status",
    "sip.phoneNumber": "caller_number",
    "sip.trunkPhoneNumber": "called_number",
}
_HEADER_PREFIX = "sip.h."


@dataclass(frozen=True)
class Dial:
    """An outbound call the job must place: who to ring, through which trunk, for how long."""

    to: str
    trunk_id: str
    from_number: str = ""
    ringing_timeout: float = 30.0
    max_call_duration: float = 0.0  # 0: the bot's limits.max_duration decides
    participant_identity: str = ""


@dataclass(frozen=True)
class JobMetadata:
    bot: str | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)
    overrides: CallOverrides = field(default_factory=CallOverrides)
    session_id: str | None = None
    dial: Dial | None = None


def parse_job_metadata(raw: str) -> JobMetadata:
    """The job's metadata; empty is fine (an inbound call routed by number)."""
    if not raw.strip():
        return JobMetadata()
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CallSetupError(
            f"job metadata is not JSON ({exc.msg} at char {exc.pos}); dispatch with "
            '{"bot": "<id>", "variables": {...}, "overrides": {...}}'
        ) from None
    if not isinstance(data, dict):
        raise CallSetupError(f"job metadata must be a JSON object, not {type(data).__name__}")
    unknown = set(data) - {"bot", "variables", "overrides", "session_id", "dial"}
    if unknown:
        raise CallSetupError(
            f"job metadata has unknown key(s) {', '.join(sorted(unknown))} "
            "(allowed: bot, variables, overrides, session_id, dial)"
        )
    variables = data.get("variables") or {}
    if not isinstance(variables, dict):
        raise CallSetupError("job metadata: `variables` must be an object")
    try:
        overrides = CallOverrides.model_validate(data.get("overrides") or {})
        dial = Dial(**data["dial"]) if data.get("dial") else None
    except (ValidationError, TypeError) as exc:
        raise CallSetupError(f"job metadata: {exc}") from None
    bot = data.get("bot")
    if bot is not None and not isinstance(bot, str):
        raise CallSetupError("job metadata: `bot` must be a string (a bot id)")
    return JobMetadata(bot, variables, overrides, data.get("session_id"), dial)


def sip_variables(attributes: Mapping[str, str]) -> dict[str, Any]:
    """Call variables from a SIP participant's attributes (empty for a WebRTC participant)."""
    sip: dict[str, Any] = {
        name: attributes[key] for key, name in _SIP_FIELDS.items() if attributes.get(key)
    }
    headers = {
        key[len(_HEADER_PREFIX) :]: value
        for key, value in attributes.items()
        if key.startswith(_HEADER_PREFIX)
    }
    if headers:
        sip["headers"] = headers
    variables: dict[str, Any] = {
        key: value for key, value in attributes.items() if not key.startswith(_RESERVED_PREFIXES)
    }
    if sip:
        variables["sip"] = sip
        for name in ("caller_number", "called_number"):
            if name in sip:
                variables[name] = sip[name]
    return variables


def route_job(
    metadata: JobMetadata,
    attributes: Mapping[str, str],
    fleet: FleetConfig,
    *,
    is_sip: bool,
) -> CallRequest:
    """The call request for a job whose caller (or callee) has joined the room."""
    sip = sip_variables(attributes) if is_sip else {}
    called = str(sip.get("called_number", ""))
    route = fleet.route_for(called) if called else None
    bot = metadata.bot or attributes.get(BOT_ATTRIBUTE) or (route.bot if route else None)
    if not bot:
        where = f"the called number {called}" if called else "this job"
        raise CallSetupError(
            f'no bot for {where}: dispatch with metadata {{"bot": "<id>"}}, set the '
            f"dispatch rule attribute {BOT_ATTRIBUTE}, or add a [[routes]] entry for the "
            "number to the fleet config"
        )
    outbound = metadata.dial is not None
    variables = {**(route.variables if route else {}), **sip, **metadata.variables}
    caller, callee = str(sip.get("caller_number") or "") or None, called or None
    if outbound and metadata.dial is not None:
        # LiveKit reports the dialled party as the SIP participant's phone number
        caller, callee = metadata.dial.from_number or None, metadata.dial.to
    request = CallRequest(
        bot=bot,
        variables=variables,
        overrides=metadata.overrides,
        transport="sip" if is_sip else "webrtc",
        direction="outbound" if outbound else "inbound",
        caller=caller,
        callee=callee,
    )
    if metadata.session_id:
        request = request.model_copy(update={"session_id": metadata.session_id})
    return request
