"""``dialplan provision``: make LiveKit's SIP trunks and dispatch rules match dialplan.toml.

    [[trunks.inbound]]   one inbound trunk, named as in the file
    [[trunks.outbound]]  one outbound trunk, named as in the file
    [[routes]]           one dispatch rule ``dialplan <number>``: a room ``call_...`` per
                         call, the fleet's agent dispatched with ``{"bot", "variables"}``

Everything dialplan creates carries the metadata ``{"managed_by": "dialplan"}``. Only those
objects are ever updated (in place, by ``replace``) or deleted, and they are matched by
name, so a second run changes nothing. An object someone else made with a name dialplan
wants is an error, never adopted. Secrets are read from the environment here, at apply time.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
from livekit import api
from livekit.protocol import sip

from runtime.fleet.config import FleetConfig
from runtime.fleet.provision_plan import (
    MANAGED_METADATA,
    Change,
    ProvisionError,
    Step,
    desired_inbound,
    desired_outbound,
    desired_rule,
    inbound_view,
    is_managed,
    outbound_view,
    plan,
    rule_name,
    rule_view,
)

__all__ = [
    "MANAGED_METADATA",
    "Change",
    "LiveState",
    "ProvisionError",
    "ProvisionReport",
    "is_managed",
    "provision",
    "refusal",
    "rule_name",
]

_DONE = {"create": "created", "update": "updated", "delete": "deleted"}


@dataclass
class ProvisionReport:
    dry_run: bool
    changes: list[Change] = field(default_factory=list)

    @property
    def writes(self) -> list[Change]:
        return [c for c in self.changes if c.action != "unchanged"]

    def lines(self) -> list[str]:
        lines = [change.line(dry_run=self.dry_run) for change in self.changes]
        counts: Counter[str] = Counter(change.action for change in self.writes)
        if not counts:
            lines.append("LiveKit already matches the fleet config")
        elif self.dry_run:
            todo = ", ".join(f"{counts[a]} to {a}" for a in _DONE if counts[a])
            lines.append(f"dry run, nothing written: {todo}")
        else:
            lines.append(", ".join(f"{counts[a]} {done}" for a, done in _DONE.items() if counts[a]))
        return lines


@dataclass(frozen=True)
class LiveState:
    """What LiveKit holds now, dialplan's or not."""

    inbound: list[sip.SIPInboundTrunkInfo]
    outbound: list[sip.SIPOutboundTrunkInfo]
    rules: list[sip.SIPDispatchRuleInfo]

    @classmethod
    async def read(cls, client: api.LiveKitAPI) -> LiveState:
        inbound = await client.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())
        outbound = await client.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())
        rules = await client.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())
        return cls(list(inbound.items), list(outbound.items), list(rules.items))


def refusal(exc: api.TwirpError) -> str:
    """What LiveKit's refusal means; a token it cannot verify gets a bare 401, no Twirp code."""
    if exc.status == 401:
        return "LiveKit refused the API key and secret (HTTP 401)"
    return f"LiveKit refused the request: {exc.message or exc.code} ({exc.code})"


async def provision(
    config: FleetConfig, client: api.LiveKitAPI, *, dry_run: bool
) -> ProvisionReport:
    """Make LiveKit match ``config``; with ``dry_run`` only say what that would change."""
    inbound = [desired_inbound(t) for t in config.trunks.inbound]
    outbound = [desired_outbound(t) for t in config.trunks.outbound]
    try:
        live = await LiveState.read(client)
        return await _Provisioner(config, client, live, dry_run).run(inbound, outbound)
    except api.TwirpError as exc:
        raise ProvisionError(
            f"{refusal(exc)}: check LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET"
        ) from None
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise ProvisionError(
            f"cannot reach the LiveKit server ({exc or type(exc).__name__}): "
            "check LIVEKIT_URL and that the server is up"
        ) from None


# --- applying ----------------------------------------------------------------------


class _Provisioner:
    """Applies the plan in an order LiveKit accepts: trunks before the rules naming them,
    stale rules out before new ones come in, stale trunks last."""

    def __init__(
        self, config: FleetConfig, client: api.LiveKitAPI, live: LiveState, dry_run: bool
    ) -> None:
        self.config = config
        self.sip = client.sip
        self.live = live
        self.dry_run = dry_run

    async def run(
        self, inbound: list[sip.SIPInboundTrunkInfo], outbound: list[sip.SIPOutboundTrunkInfo]
    ) -> ProvisionReport:
        inbound_steps = plan("inbound trunk", inbound, self.live.inbound, _trunk_id, inbound_view)
        outbound_steps = plan(
            "outbound trunk", outbound, self.live.outbound, _trunk_id, outbound_view
        )
        # planned once before any write, so a rule name someone else holds stops the run
        # while LiveKit is still untouched; again once new trunks have their ids
        self._plan_rules(inbound_steps, _expected_ids(inbound_steps))
        inbound_ids = await self._apply_trunks(inbound_steps)
        await self._apply_trunks(outbound_steps)
        rule_steps = self._plan_rules(inbound_steps, inbound_ids)
        await self._apply_rules(rule_steps)
        for step in [*inbound_steps, *outbound_steps]:
            if step.change.action == "delete":
                request = api.DeleteSIPTrunkRequest(sip_trunk_id=step.change.object_id)
                await self._write(step, partial(self.sip.delete_trunk, request))
        steps = [*inbound_steps, *outbound_steps, *rule_steps]
        return ProvisionReport(self.dry_run, [step.change for step in steps])

    async def _apply_trunks(self, steps: list[Step]) -> dict[str, str]:
        """Creates and updates (deletes wait for the rules); returns name → trunk id."""
        ids = _expected_ids(steps)
        for step in steps:
            if step.change.action == "create":
                created = await self._write(step, partial(self._create_trunk, step.desired))
                if created is not None:
                    ids[step.change.name] = created.sip_trunk_id
            elif step.change.action == "update":
                await self._write(step, partial(self._update_trunk, step))
        return ids

    def _create_trunk(self, desired: Any) -> Awaitable[Any]:
        if isinstance(desired, sip.SIPInboundTrunkInfo):
            return self.sip.create_inbound_trunk(api.CreateSIPInboundTrunkRequest(trunk=desired))
        return self.sip.create_outbound_trunk(api.CreateSIPOutboundTrunkRequest(trunk=desired))

    def _update_trunk(self, step: Step) -> Awaitable[Any]:
        if step.change.kind == "inbound trunk":
            return self.sip.update_inbound_trunk(step.change.object_id, step.desired)
        return self.sip.update_outbound_trunk(step.change.object_id, step.desired)

    def _plan_rules(self, inbound_steps: list[Step], inbound_ids: dict[str, str]) -> list[Step]:
        leaving = {s.change.object_id for s in inbound_steps if s.change.action == "delete"}
        # rules are compared by trunk *name*; a trunk on its way out keeps its bare id
        trunk_names = {
            t.sip_trunk_id: t.name for t in self.live.inbound if t.sip_trunk_id not in leaving
        }
        trunk_names.update({trunk_id: name for name, trunk_id in inbound_ids.items()})
        desired = []
        for route in self.config.routes:
            trunk = self.config.inbound_trunk_for(route)
            trunk_id = inbound_ids.get(trunk.name) if trunk else None
            desired.append(desired_rule(route, self.config.worker.agent_name, trunk_id))
        return plan(
            "dispatch rule",
            desired,
            self.live.rules,
            lambda rule: rule.sip_dispatch_rule_id,
            lambda rule: rule_view(rule, trunk_names),
        )

    async def _apply_rules(self, steps: list[Step]) -> None:
        # deletes first, so a number moving between rules never collides with itself
        for step in sorted(steps, key=lambda s: s.change.action != "delete"):
            change, desired = step.change, step.desired
            if change.action == "delete":
                request = api.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=change.object_id)
                await self._write(step, partial(self.sip.delete_dispatch_rule, request))
            elif change.action == "update":
                update = partial(self.sip.update_dispatch_rule, change.object_id, desired)
                await self._write(step, update)
            elif change.action == "create":
                create = api.CreateSIPDispatchRuleRequest(dispatch_rule=desired)
                await self._write(step, partial(self.sip.create_dispatch_rule, create))

    async def _write(self, step: Step, send: Callable[[], Awaitable[Any]]) -> Any:
        """Sends one change, unless this is a dry run (then nothing reaches LiveKit)."""
        if self.dry_run:
            return None
        try:
            return await send()
        except api.TwirpError as exc:
            raise ProvisionError(
                f"LiveKit refused to {step.change.action} {step.change.kind} "
                f"{step.change.name!r}: {exc.message or exc} ({exc.code})"
            ) from None


def _trunk_id(trunk: sip.SIPInboundTrunkInfo | sip.SIPOutboundTrunkInfo) -> str:
    return trunk.sip_trunk_id


def _expected_ids(steps: list[Step]) -> dict[str, str]:
    """Name → id of the trunks that stay; one still to be created has a stand-in id."""
    return {
        step.change.name: step.change.object_id or f"<new {step.change.name}>"
        for step in steps
        if step.change.action != "delete"
    }
