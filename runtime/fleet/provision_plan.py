"""What the fleet config wants in LiveKit, and how that differs from what is there.

Each trunk and route becomes the protobuf object ``dialplan provision`` would write, then
both it and LiveKit's copy are reduced to the fields dialplan sets, as a person reads them
(trunk names, not ids; the bot, not the JSON around it). Equal views: nothing to do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from livekit.protocol import sip
from livekit.protocol.agent_dispatch import RoomAgentDispatch
from livekit.protocol.room import RoomConfiguration

from runtime.errors import DialplanError
from runtime.fleet.config import ROOM_PREFIX, InboundTrunk, OutboundTrunk, Route
from runtime.fleet.routing import BOT_ATTRIBUTE

if TYPE_CHECKING:
    from runtime.secrets import SecretRef

MANAGED_BY = "dialplan"
MANAGED_METADATA = json.dumps({"managed_by": MANAGED_BY})
RULE_NAME_PREFIX = "dialplan "
SECRET_FIELDS = frozenset({"auth_password"})  # shown as "changed", never printed

Action = Literal["create", "update", "delete", "unchanged"]
Kind = Literal["inbound trunk", "outbound trunk", "dispatch rule"]


class _Named(Protocol):
    """What trunks and dispatch rules share, as far as matching them goes."""

    name: str
    metadata: str


_Info = TypeVar("_Info", bound=_Named)

_TRANSPORTS = {
    "auto": sip.SIPTransport.SIP_TRANSPORT_AUTO,
    "udp": sip.SIPTransport.SIP_TRANSPORT_UDP,
    "tcp": sip.SIPTransport.SIP_TRANSPORT_TCP,
    "tls": sip.SIPTransport.SIP_TRANSPORT_TLS,
}


class ProvisionError(DialplanError):
    """Provisioning stopped: a secret is missing, a name is taken, or LiveKit refused."""


@dataclass(frozen=True)
class Change:
    action: Action
    kind: Kind
    name: str
    object_id: str = ""
    differences: tuple[str, ...] = ()  # "bot: receptionist → sales"

    def line(self, *, dry_run: bool = False) -> str:
        verb = f"would {self.action}" if dry_run and self.action != "unchanged" else self.action
        text = f"{verb} {self.kind} {self.name!r}"
        if self.object_id:
            text += f" ({self.object_id})"
        if self.differences:
            text += ": " + "; ".join(self.differences)
        return text


def is_managed(info: _Named) -> bool:
    return _json_object(info.metadata).get("managed_by") == MANAGED_BY


def rule_name(number: str) -> str:
    return f"{RULE_NAME_PREFIX}{number}"


# --- what the config wants -----------------------------------------------------------


def desired_inbound(trunk: InboundTrunk) -> sip.SIPInboundTrunkInfo:
    return sip.SIPInboundTrunkInfo(
        name=trunk.name,
        metadata=MANAGED_METADATA,
        numbers=trunk.numbers,
        allowed_addresses=trunk.allowed_addresses,
        allowed_numbers=trunk.allowed_numbers,
        auth_username=trunk.auth_username,
        auth_password=_secret(trunk.auth_password, f"trunks.inbound {trunk.name!r}"),
        headers_to_attributes=trunk.headers_to_attributes,
        krisp_enabled=trunk.krisp,
    )


def desired_outbound(trunk: OutboundTrunk) -> sip.SIPOutboundTrunkInfo:
    return sip.SIPOutboundTrunkInfo(
        name=trunk.name,
        metadata=MANAGED_METADATA,
        address=trunk.address,
        transport=_TRANSPORTS[trunk.transport],
        numbers=trunk.numbers,
        auth_username=trunk.auth_username,
        auth_password=_secret(trunk.auth_password, f"trunks.outbound {trunk.name!r}"),
        headers=trunk.headers,
    )


def desired_rule(route: Route, agent_name: str, trunk_id: str | None) -> sip.SIPDispatchRuleInfo:
    """No inbound trunk in the config: the rule takes the number from any trunk (a number
    bought in LiveKit Cloud needs none); `dialplan doctor` warns about it."""
    job = {"bot": route.bot, "variables": route.variables}
    return sip.SIPDispatchRuleInfo(
        name=rule_name(route.number),
        metadata=MANAGED_METADATA,
        rule=sip.SIPDispatchRule(
            dispatch_rule_individual=sip.SIPDispatchRuleIndividual(room_prefix=ROOM_PREFIX)
        ),
        trunk_ids=[trunk_id] if trunk_id else [],
        numbers=[route.number],
        attributes={BOT_ATTRIBUTE: route.bot},
        room_config=RoomConfiguration(
            agents=[
                RoomAgentDispatch(
                    agent_name=agent_name,
                    metadata=json.dumps(job, sort_keys=True, default=str),
                )
            ]
        ),
    )


def _secret(ref: SecretRef | None, where: str) -> str:
    if ref is None:
        return ""
    value = ref.get_or_none()
    if value is None:
        raise ProvisionError(
            f"{where}: auth_password: environment variable {ref.env_name} is not set "
            f"(the fleet config refers to it as ${{env:{ref.env_name}}}); export it and run "
            "`dialplan provision` again"
        )
    return value


# --- comparing: the fields dialplan sets, as a person reads them ----------------------


def inbound_view(trunk: sip.SIPInboundTrunkInfo) -> dict[str, str]:
    return {
        "numbers": _joined(trunk.numbers),
        "allowed_addresses": _joined(trunk.allowed_addresses),
        "allowed_numbers": _joined(trunk.allowed_numbers),
        "auth_username": trunk.auth_username,
        "auth_password": trunk.auth_password,
        "headers_to_attributes": _pairs(trunk.headers_to_attributes),
        "krisp": "on" if trunk.krisp_enabled else "off",
    }


def outbound_view(trunk: sip.SIPOutboundTrunkInfo) -> dict[str, str]:
    return {
        "address": trunk.address,
        "transport": sip.SIPTransport.Name(trunk.transport).removeprefix("SIP_TRANSPORT_").lower(),
        "numbers": _joined(trunk.numbers),
        "auth_username": trunk.auth_username,
        "auth_password": trunk.auth_password,
        "headers": _pairs(trunk.headers),
    }


def rule_view(rule: sip.SIPDispatchRuleInfo, trunk_names: Mapping[str, str]) -> dict[str, str]:
    agents = list(rule.room_config.agents)
    job = _json_object(agents[0].metadata) if agents else {}
    individual = rule.rule.dispatch_rule_individual
    kind = rule.rule.WhichOneof("rule") or "none"
    return {
        "numbers": _joined(rule.numbers),
        "trunk": _joined(trunk_names.get(i, i) for i in rule.trunk_ids) or "(any)",
        "room": f"{individual.room_prefix}<random>" if kind == "dispatch_rule_individual" else kind,
        "agent": _joined(a.agent_name for a in agents) or "(none)",
        "bot": str(job.get("bot", "")),
        "variables": json.dumps(job.get("variables", {}), sort_keys=True, default=str),
        "agent_metadata": json.dumps(job, sort_keys=True, default=str),
        "attributes": _pairs(rule.attributes),
    }


def _differences(current: Mapping[str, str], desired: Mapping[str, str]) -> tuple[str, ...]:
    found: list[str] = []
    for key, wanted in desired.items():
        have = current.get(key, "")
        if have == wanted or (key == "agent_metadata" and found):
            continue  # agent_metadata only speaks when bot/variables did not explain it
        if key in SECRET_FIELDS:
            found.append(f"{key}: changed")
        else:
            found.append(f"{key}: {have or '(none)'} → {wanted or '(none)'}")
    return tuple(found)


def _joined(values: Iterable[str]) -> str:
    return ", ".join(values)


def _pairs(mapping: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(mapping.items()))


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


# --- planning ------------------------------------------------------------------------


@dataclass
class Step:
    change: Change
    desired: Any = None  # the object to create, or to replace the current one with


def plan(
    kind: Kind,
    desired: Sequence[_Info],
    live: Sequence[_Info],
    id_of: Callable[[_Info], str],
    view: Callable[[_Info], dict[str, str]],
) -> list[Step]:
    """One step per wanted object (create, update or unchanged), then a delete for every
    managed object no longer wanted. Objects are matched by name among dialplan's own."""
    managed: dict[str, list[_Info]] = {}
    for info in live:
        if is_managed(info):
            managed.setdefault(info.name, []).append(info)
    foreign = {info.name: id_of(info) for info in live if not is_managed(info)}
    steps, extra = [], []
    for wanted in desired:
        if wanted.name in foreign and wanted.name not in managed:
            raise ProvisionError(
                f"LiveKit already has a {kind} named {wanted.name!r} ({foreign[wanted.name]}) "
                "that dialplan did not create, and dialplan never changes those: delete or "
                "rename it in LiveKit, or give this one another name in the fleet config"
            )
        existing = managed.pop(wanted.name, [])
        if not existing:
            steps.append(Step(Change("create", kind, wanted.name), wanted))
            continue
        current, *duplicates = existing  # an interrupted run may have left two
        extra += duplicates
        diffs = _differences(view(current), view(wanted))
        action: Action = "update" if diffs else "unchanged"
        steps.append(Step(Change(action, kind, wanted.name, id_of(current), diffs), wanted))
    gone = extra + [info for group in managed.values() for info in group]
    return steps + [Step(Change("delete", kind, info.name, id_of(info))) for info in gone]
