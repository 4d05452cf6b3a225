"""SIP trunks and dispatch rules of the local LiveKit server: CRUD with livekit-server's
validation, list filters, ``replace``/``update`` semantics and dispatch-rule conflicts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from livekit.protocol import models, sip

from tests.fleet.livekit_twirp import invalid, new_id, normalize_number, not_found

TRUNK_NOT_FOUND = "requested sip trunk does not exist"
RULE_NOT_FOUND = "requested sip dispatch rule does not exist"


_Info = TypeVar("_Info", bound=Message)


def apply_list_update(current: Sequence[str], update: models.ListUpdate) -> list[str]:
    """``clear`` empties, a non-empty ``set`` replaces, else ``remove`` then ``add``."""
    if any(value == "" for value in update.set):
        raise invalid("empty element in the list")
    if update.clear:
        return []
    if update.set:
        return list(update.set)
    result = [value for value in current if value not in set(update.remove)]
    result += [value for value in update.add if value not in result]
    return result


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _by_ids(items: dict[str, _Info], ids: Iterable[str], empty: type[_Info]) -> list[_Info]:
    # asked-for ids come back in order; a missing one as an empty item (Go's nil)
    return [items[i] if i in items else empty() for i in ids]


def _page(items: list[_Info], page: models.Pagination, id_of: str) -> list[_Info]:
    ordered = sorted(items, key=lambda item: getattr(item, id_of))
    if page.after_id:
        ordered = [item for item in ordered if getattr(item, id_of) > page.after_id]
    return ordered[: page.limit] if page.limit > 0 else ordered


def _validate_inbound(trunk: sip.SIPInboundTrunkInfo) -> None:
    has_auth = bool(trunk.auth_username or trunk.auth_password)
    if not (has_auth or trunk.allowed_addresses or trunk.numbers):
        raise invalid(
            "for security, one of the fields must be set: "
            "AuthUsername+AuthPassword, AllowedAddresses or Numbers"
        )


def _validate_outbound(trunk: sip.SIPOutboundTrunkInfo) -> None:
    if not trunk.numbers:
        raise invalid("no trunk numbers specified")
    if not trunk.address:
        raise invalid("no outbound address specified")
    if any(mark in trunk.address for mark in "@;") or trunk.address.startswith(("sip:", "sips:")):
        raise invalid("trunk address should be a hostname or IP, not SIP URI")


class SipStore:
    def __init__(self) -> None:
        self.inbound: dict[str, sip.SIPInboundTrunkInfo] = {}
        self.outbound: dict[str, sip.SIPOutboundTrunkInfo] = {}
        self.rules: dict[str, sip.SIPDispatchRuleInfo] = {}

    # --- trunks -----------------------------------------------------------------------

    async def create_inbound_trunk(
        self, request: sip.CreateSIPInboundTrunkRequest
    ) -> sip.SIPInboundTrunkInfo:
        trunk = _new_trunk(request)
        _validate_inbound(trunk)
        self.inbound[trunk.sip_trunk_id] = trunk
        return trunk

    async def create_outbound_trunk(
        self, request: sip.CreateSIPOutboundTrunkRequest
    ) -> sip.SIPOutboundTrunkInfo:
        trunk = _new_trunk(request)
        _validate_outbound(trunk)
        self.outbound[trunk.sip_trunk_id] = trunk
        return trunk

    async def list_inbound_trunks(
        self, request: sip.ListSIPInboundTrunkRequest
    ) -> sip.ListSIPInboundTrunkResponse:
        if request.trunk_ids:
            items = _by_ids(self.inbound, request.trunk_ids, sip.SIPInboundTrunkInfo)
        else:
            wanted = {normalize_number(n) for n in request.numbers}
            items = [t for t in self.inbound.values() if _serves(t.numbers, wanted)]
            items = _page(items, request.page, "sip_trunk_id")
        return sip.ListSIPInboundTrunkResponse(items=items)

    async def list_outbound_trunks(
        self, request: sip.ListSIPOutboundTrunkRequest
    ) -> sip.ListSIPOutboundTrunkResponse:
        if request.trunk_ids:
            items = _by_ids(self.outbound, request.trunk_ids, sip.SIPOutboundTrunkInfo)
        else:
            wanted = set(request.numbers)  # livekit compares outbound numbers exactly
            items = [t for t in self.outbound.values() if _serves(t.numbers, wanted, exact=True)]
            items = _page(items, request.page, "sip_trunk_id")
        return sip.ListSIPOutboundTrunkResponse(items=items)

    async def update_inbound_trunk(
        self, request: sip.UpdateSIPInboundTrunkRequest
    ) -> sip.SIPInboundTrunkInfo:
        current = self.inbound.get(request.sip_trunk_id)
        if current is None:
            raise not_found(TRUNK_NOT_FOUND)
        updated = _replaced(request, current)
        if request.WhichOneof("action") == "update":
            _apply_inbound_update(updated, request.update)
        _validate_inbound(updated)
        self.inbound[updated.sip_trunk_id] = updated
        return updated

    async def update_outbound_trunk(
        self, request: sip.UpdateSIPOutboundTrunkRequest
    ) -> sip.SIPOutboundTrunkInfo:
        current = self.outbound.get(request.sip_trunk_id)
        if current is None:
            raise not_found(TRUNK_NOT_FOUND)
        updated = _replaced(request, current)
        if request.WhichOneof("action") == "update":
            _apply_outbound_update(updated, request.update)
        _validate_outbound(updated)
        self.outbound[updated.sip_trunk_id] = updated
        return updated

    async def delete_trunk(self, request: sip.DeleteSIPTrunkRequest) -> sip.SIPTrunkInfo:
        trunk_id = request.sip_trunk_id
        kind = sip.SIPTrunkInfo.TrunkKind
        deleted: sip.SIPInboundTrunkInfo | sip.SIPOutboundTrunkInfo | None
        if (deleted := self.inbound.pop(trunk_id, None)) is not None:
            trunk_kind = kind.TRUNK_INBOUND
        elif (deleted := self.outbound.pop(trunk_id, None)) is not None:
            trunk_kind = kind.TRUNK_OUTBOUND
        else:
            raise not_found(TRUNK_NOT_FOUND)
        return sip.SIPTrunkInfo(
            sip_trunk_id=trunk_id, kind=trunk_kind, name=deleted.name, metadata=deleted.metadata
        )

    # --- dispatch rules ---------------------------------------------------------------

    async def create_dispatch_rule(
        self, request: sip.CreateSIPDispatchRuleRequest
    ) -> sip.SIPDispatchRuleInfo:
        rule = _rule_from_create(request)
        if rule.sip_dispatch_rule_id:
            raise invalid("rule id must not be set")
        if not rule.HasField("rule"):
            raise invalid("missing rule")
        _check_conflicts([*self.rules.values(), rule])
        rule.sip_dispatch_rule_id = new_id("SDR_")
        rule.created_at.CopyFrom(_now())
        rule.updated_at.CopyFrom(_now())
        self.rules[rule.sip_dispatch_rule_id] = rule
        return rule

    async def list_dispatch_rules(
        self, request: sip.ListSIPDispatchRuleRequest
    ) -> sip.ListSIPDispatchRuleResponse:
        if request.dispatch_rule_ids:
            ids = request.dispatch_rule_ids
            return sip.ListSIPDispatchRuleResponse(
                items=_by_ids(self.rules, ids, sip.SIPDispatchRuleInfo)
            )
        wanted = set(request.trunk_ids)
        items = [
            r
            for r in self.rules.values()
            if not wanted or not r.trunk_ids or wanted & set(r.trunk_ids)
        ]
        return sip.ListSIPDispatchRuleResponse(
            items=_page(items, request.page, "sip_dispatch_rule_id")
        )

    async def update_dispatch_rule(
        self, request: sip.UpdateSIPDispatchRuleRequest
    ) -> sip.SIPDispatchRuleInfo:
        current = self.rules.get(request.sip_dispatch_rule_id)
        if current is None:
            raise not_found(RULE_NOT_FOUND)
        updated = _replaced(request, current)
        if request.WhichOneof("action") == "update":
            _apply_rule_update(updated, request.update)
        if not updated.HasField("rule"):
            raise invalid("missing rule")
        others = [r for i, r in self.rules.items() if i != updated.sip_dispatch_rule_id]
        _check_conflicts([*others, updated])
        self.rules[updated.sip_dispatch_rule_id] = updated
        return updated

    async def delete_dispatch_rule(
        self, request: sip.DeleteSIPDispatchRuleRequest
    ) -> sip.SIPDispatchRuleInfo:
        deleted = self.rules.pop(request.sip_dispatch_rule_id, None)
        if deleted is None:
            raise not_found(RULE_NOT_FOUND)
        return deleted


def _new_trunk(request: Any) -> Any:
    if not request.HasField("trunk"):
        raise invalid("missing trunk")
    trunk = type(request.trunk)()
    trunk.CopyFrom(request.trunk)
    if trunk.sip_trunk_id:
        raise invalid("trunk id must not be set")
    trunk.sip_trunk_id = new_id("ST_")
    trunk.created_at.CopyFrom(_now())
    trunk.updated_at.CopyFrom(_now())
    return trunk


def _serves(numbers: Iterable[str], wanted: set[str], *, exact: bool = False) -> bool:
    """No filter, or a trunk without numbers (it takes any), or one number in common."""
    if not wanted or not numbers:
        return True
    have = set(numbers) if exact else {normalize_number(n) for n in numbers}
    return bool(have & wanted)


def _replaced(request: Any, current: Any) -> Any:
    """``replace`` swaps the whole object (keeping its id); ``update`` starts from a copy."""
    action = request.WhichOneof("action")
    if action is None:
        raise invalid("missing or unsupported update action")
    is_rule = hasattr(current, "sip_dispatch_rule_id")
    id_field = "sip_dispatch_rule_id" if is_rule else "sip_trunk_id"
    current_id = getattr(current, id_field)
    if action == "replace" and getattr(request.replace, id_field) not in ("", current_id):
        raise invalid("the id in the object must be empty or match the id in the update")
    result = type(current)()
    result.CopyFrom(request.replace if action == "replace" else current)
    setattr(result, id_field, current_id)
    result.created_at.CopyFrom(current.created_at)
    result.updated_at.CopyFrom(_now())
    return result


def _apply_optional(target: Message, update: Message, names: Iterable[str]) -> None:
    for name in names:
        if update.HasField(name):
            setattr(target, name, getattr(update, name))


def _apply_lists(target: Message, update: Message, names: Iterable[str]) -> None:
    for name in names:
        if update.HasField(name):
            values = apply_list_update(getattr(target, name), getattr(update, name))
            target.ClearField(name)
            getattr(target, name).extend(values)


def _apply_inbound_update(
    trunk: sip.SIPInboundTrunkInfo, update: sip.SIPInboundTrunkUpdate
) -> None:
    _apply_lists(trunk, update, ("numbers", "allowed_addresses", "allowed_numbers"))
    _apply_optional(
        trunk,
        update,
        ("auth_username", "auth_password", "auth_realm", "name", "metadata", "media_encryption"),
    )


def _apply_outbound_update(
    trunk: sip.SIPOutboundTrunkInfo, update: sip.SIPOutboundTrunkUpdate
) -> None:
    _apply_lists(trunk, update, ("numbers",))
    _apply_optional(
        trunk,
        update,
        (
            "address",
            "transport",
            "destination_country",
            "auth_username",
            "auth_password",
            "name",
            "metadata",
            "media_encryption",
            "from_host",
        ),
    )


def _apply_rule_update(rule: sip.SIPDispatchRuleInfo, update: sip.SIPDispatchRuleUpdate) -> None:
    _apply_lists(rule, update, ("trunk_ids",))
    if update.HasField("rule"):
        rule.rule.CopyFrom(update.rule)
    _apply_optional(rule, update, ("name", "metadata", "media_encryption"))
    for key, value in update.attributes.items():
        if value:  # an empty value deletes the attribute
            rule.attributes[key] = value
        else:
            rule.attributes.pop(key, None)


def _rule_from_create(request: sip.CreateSIPDispatchRuleRequest) -> sip.SIPDispatchRuleInfo:
    """The current form carries a whole ``dispatch_rule``; older clients send loose fields."""
    rule = sip.SIPDispatchRuleInfo()
    if request.HasField("dispatch_rule"):
        rule.CopyFrom(request.dispatch_rule)
        return rule
    if request.HasField("rule"):
        rule.rule.CopyFrom(request.rule)
    if request.HasField("room_config"):
        rule.room_config.CopyFrom(request.room_config)
    rule.trunk_ids.extend(request.trunk_ids)
    rule.inbound_numbers.extend(request.inbound_numbers)
    rule.attributes.update(request.attributes)
    rule.hide_phone_number = request.hide_phone_number
    rule.name = request.name
    rule.metadata = request.metadata
    rule.room_preset = request.room_preset
    return rule


def _pin(rule: sip.SIPDispatchRuleInfo) -> str:
    kind = rule.rule.WhichOneof("rule")
    return getattr(getattr(rule.rule, kind), "pin", "") if kind else ""


def _check_conflicts(rules: Sequence[sip.SIPDispatchRuleInfo]) -> None:
    """Two rules may not claim the same trunk + called number + caller number + PIN; an
    empty list is its own "any" key, so catch-alls only collide with catch-alls."""
    claimed: dict[tuple[str, str, str, str], sip.SIPDispatchRuleInfo] = {}
    for rule in rules:
        for trunk in rule.trunk_ids or [""]:
            for number in rule.numbers or [""]:
                for caller in rule.inbound_numbers or [""]:
                    key = (_pin(rule), trunk, normalize_number(number), normalize_number(caller))
                    if (other := claimed.get(key)) is not None:
                        raise invalid(
                            "Conflicting SIP Dispatch Rules: same Trunk+Number+PIN combination "
                            f"for {rule.sip_dispatch_rule_id or '<new>'!r} and "
                            f"{other.sip_dispatch_rule_id or '<new>'!r}"
                        )
                    claimed[key] = rule
