"""``transfer_call`` and ``send_dtmf``: tools that act on the phone line through the
transport (`runtime.call_control`).

[[tools]]
use = "transfer_call"
to = "+15551234567"                       # one fixed target (a template), or ...
targets = { billing = "sip:billing@pbx.example.com", sales = "+15557654321" }
announcement = "Transferring you to {{ department }} now."

[[tools]]
use = "send_dtmf"
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runtime import (
    CallContext,
    DisconnectedBy,
    NotDialable,
    RegisterTool,
    ToolDefinition,
    ToolFailure,
    check_snippet,
    dial_target,
    hookimpl,
    render_snippet,
    snippet_names,
)
from runtime.call_control import ControlUnsupported

_DTMF = re.compile(r"^[0-9*#A-Dw]{1,32}$")


def _check_target(value: str, where: str) -> str:
    if "{{" in value or "{%" in value:
        return check_snippet(value)  # checked again once rendered, at call time
    try:
        return dial_target(value)
    except NotDialable:
        raise ValueError(
            f"{where} {value!r} is not a phone number (+15551234567) or a SIP/tel URI "
            "(sip:desk@pbx.example.com)"
        ) from None


class TransferOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field("transfer_call", description="the tool name the LLM sees")
    to: str = Field("", description="the one target: number or SIP URI (template)")
    targets: dict[str, str] = Field(
        default_factory=dict, description="named targets; the LLM picks one by name"
    )
    announcement: str = Field(
        "", description="said before transferring (template; sees `destination`)"
    )
    allowed: list[str] = Field(
        default_factory=list,
        description="where a caller may be sent: numbers/URIs, or patterns like '+1555*' "
        "or 'sip:*@pbx.example.com'; required when a target is a template (call "
        "variables may come from the caller's side)",
    )
    description: str = Field(
        "Transfer the caller to a human colleague when they ask for one or when you cannot "
        "help them.",
        description="what the LLM is told about when to use this tool",
    )

    @field_validator("to")
    @classmethod
    def _valid_to(cls, value: str) -> str:
        return _check_target(value, "target") if value else value

    @field_validator("targets")
    @classmethod
    def _valid_targets(cls, value: dict[str, str]) -> dict[str, str]:
        return {name: _check_target(target, f"target {name!r}") for name, target in value.items()}

    @field_validator("announcement")
    @classmethod
    def _valid_announcement(cls, value: str) -> str:
        return check_snippet(value)

    @model_validator(mode="after")
    def _one_way_to_choose(self) -> TransferOptions:
        if bool(self.to) == bool(self.targets):
            raise ValueError("give either `to` (one target) or `targets` (named targets)")
        return self

    @model_validator(mode="after")
    def _templated_targets_are_bounded(self) -> TransferOptions:
        templated = [t for t in [self.to, *self.targets.values()] if snippet_names(t)]
        if templated and not self.allowed:
            raise ValueError(
                f"the target {templated[0]!r} reads call variables, which may come from the "
                "caller's side (a stream's parameters, job metadata): list where callers may "
                'be sent in `allowed`, e.g. allowed = ["+1555*"]'
            )
        return self

    def permits(self, target: str) -> bool:
        return not self.allowed or any(fnmatch.fnmatchcase(target, p) for p in self.allowed)

    def variables_used(self) -> dict[str, frozenset[str]]:
        used = {"to": snippet_names(self.to), "announcement": snippet_names(self.announcement)}
        used |= {f"targets.{name}": snippet_names(t) for name, t in self.targets.items()}
        return {key: names - {"destination"} for key, names in used.items() if names}


def create_transfer(options: TransferOptions, call: CallContext | None) -> ToolDefinition:
    async def transfer(arguments: dict[str, Any], call: CallContext) -> str:
        destination = str(arguments.get("destination") or "")
        if options.targets:
            if destination not in options.targets:
                raise ToolFailure(
                    f"unknown destination {destination!r}; choose one of "
                    + ", ".join(sorted(options.targets))
                )
            template = options.targets[destination]
        else:
            template = options.to
        context = {**call.template_values(), "destination": destination}
        try:
            target = dial_target(render_snippet(template, context))
        except NotDialable as exc:
            raise ToolFailure(f"the transfer target is not a number or SIP URI: {exc}") from None
        if not options.permits(target):
            call.add_event("transfer_refused", target=target, allowed=list(options.allowed))
            raise ToolFailure(f"{target} is not a place callers may be transferred to")
        if not call.control.can_transfer:  # checked now: after the goodbye is too late
            raise ToolFailure("this call cannot be transferred (there is no phone line)")
        call.request_end(
            DisconnectedBy.BOT,
            cause=f"transferred to {target}",
            goodbye=render_snippet(options.announcement, context) or None,
            transfer_to=target,
        )
        return f"transferring the caller to {destination or target}"

    properties: dict[str, Any] = {}
    required: list[str] = []
    if options.targets:
        properties["destination"] = {
            "type": "string",
            "enum": sorted(options.targets),
            "description": "who to transfer the caller to",
        }
        required.append("destination")
    return ToolDefinition(
        name=options.name,
        description=options.description,
        handler=transfer,
        parameters={"type": "object", "properties": properties, "required": required},
        ends_turn=True,
    )


class DtmfOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field("send_dtmf", description="the tool name the LLM sees")
    description: str = Field(
        "Press phone keys (DTMF), e.g. to navigate a phone menu: digits 0-9, * and #.",
        description="what the LLM is told about when to use this tool",
    )


def create_dtmf(options: DtmfOptions, call: CallContext | None) -> ToolDefinition:
    async def send_dtmf(arguments: dict[str, Any], call: CallContext) -> str:
        digits = str(arguments.get("digits") or "").replace(" ", "")
        if not _DTMF.match(digits):
            raise ToolFailure(f"{digits!r} is not a DTMF sequence: use 0-9, *, # (at most 32)")
        try:
            await call.control.send_dtmf(digits)
        except ControlUnsupported as exc:
            raise ToolFailure(f"cannot send tones on this call: {exc}") from None
        call.add_event("dtmf", digits=digits)
        return f"sent {digits}"

    return ToolDefinition(
        name=options.name,
        description=options.description,
        handler=send_dtmf,
        parameters={
            "type": "object",
            "properties": {
                "digits": {
                    "type": "string",
                    "pattern": _DTMF.pattern,
                    "description": "the keys to press, in order",
                }
            },
            "required": ["digits"],
        },
    )


@hookimpl
def register_tools(register: RegisterTool) -> None:
    register(
        name="transfer_call",
        factory=create_transfer,
        options=TransferOptions,
        description="hand the caller to a number or SIP URI (the transport performs it)",
        per_call=False,  # handlers get the call when invoked: built once per bot version
    )
    register(
        name="send_dtmf",
        factory=create_dtmf,
        options=DtmfOptions,
        description="press phone keys on the line (IVR navigation)",
        per_call=False,
    )
