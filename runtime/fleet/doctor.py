"""``dialplan doctor``: which calls would fail, why, and what to do about it.

Without LiveKit credentials only the fleet config is checked. With them, the server is read
(never written): every routed number needs a dispatch rule that sends its calls to the
agent the workers register as, and every trunk in the config must exist in LiveKit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from livekit import api
from livekit.protocol import sip

from runtime.errors import suggest
from runtime.fleet.config import FleetConfig, Route
from runtime.fleet.provision import LiveState, is_managed, refusal
from runtime.fleet.worker import LIVEKIT_CREDENTIALS, missing_credentials

Severity = Literal["error", "warning"]

PROVISION = "run `dialplan provision`"


@dataclass(frozen=True)
class Finding:
    severity: Severity
    problem: str
    fix: str

    def lines(self) -> list[str]:
        return [f"{self.severity}: {self.problem}", f"  fix: {self.fix}"]


@dataclass
class DoctorReport:
    findings: list[Finding] = field(default_factory=list)
    server_checked: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def lines(self) -> list[str]:
        lines = [line for finding in self.findings for line in finding.lines()]
        if not self.server_checked:
            lines.append("LiveKit itself was not checked")
        if not self.findings:
            lines.append("all checks passed")
        else:
            lines.append(f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        return lines


async def diagnose(
    config: FleetConfig,
    bot_ids: Collection[str],
    client: api.LiveKitAPI | None,
    env: Mapping[str, str],
) -> DoctorReport:
    report = DoctorReport(config_findings(config, bot_ids))
    missing = missing_credentials(env)
    for name in missing:
        problem = f"{name} is not set: nothing can reach LiveKit"
        report.findings.append(Finding("error", problem, LIVEKIT_CREDENTIALS[name]))
    if not missing and client is not None:
        report.findings += await server_findings(config, client, env["LIVEKIT_URL"])
        report.server_checked = True
    return report


# --- the fleet config on its own --------------------------------------------------------


def config_findings(config: FleetConfig, bot_ids: Collection[str]) -> list[Finding]:
    findings = []
    known = sorted(bot_ids)
    for route in config.routes:
        if route.bot not in bot_ids:
            findings.append(
                Finding(
                    "error",
                    f"the route for {route.number} names bot {route.bot!r}, which is not in the "
                    "bots directory: its calls would be refused",
                    suggest(route.bot, known, what="bots"),
                )
            )
        if config.inbound_trunk_for(route) is None:
            findings.append(
                Finding(
                    "warning",
                    f"{route.number} is routed but no [[trunks.inbound]] lists it: its calls "
                    "arrive only if LiveKit provides the number or a trunk made elsewhere has it",
                    f"add {route.number} to the numbers of an inbound trunk (then {PROVISION})",
                )
            )
    if not config.trunks.outbound:
        findings.append(
            Finding(
                "warning",
                "no [[trunks.outbound]] configured: outbound calls (`dialplan call`, "
                "campaigns) would fail",
                f"add one with the carrier's address and caller ids, then {PROVISION}",
            )
        )
    return findings


# --- the server -------------------------------------------------------------------------


async def server_findings(config: FleetConfig, client: api.LiveKitAPI, url: str) -> list[Finding]:
    try:
        live = await LiveState.read(client)
    except api.TwirpError as exc:
        fix = "check that LIVEKIT_API_KEY/LIVEKIT_API_SECRET are a key pair of this server"
        return [Finding("error", refusal(exc), fix)]
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        return [
            Finding(
                "error",
                f"cannot reach LiveKit at {url} ({exc or type(exc).__name__})",
                "check LIVEKIT_URL and that the server is running and reachable from here",
            )
        ]
    return [*_trunk_findings(config, live), *_route_findings(config, live)]


def _trunk_findings(config: FleetConfig, live: LiveState) -> list[Finding]:
    """Each configured trunk against dialplan's own trunk of that name (by its id, as
    `provision` matches them): a foreign trunk that only shares the name is not it."""
    findings = []
    wanted = [
        ("inbound", trunk.name, f"calls to {', '.join(trunk.numbers)} are refused", live.inbound)
        for trunk in config.trunks.inbound
    ] + [
        ("outbound", trunk.name, "outbound calls through it would fail", live.outbound)
        for trunk in config.trunks.outbound
    ]
    for direction, name, consequence, present in wanted:
        if managed_trunk_id(name, present):
            continue
        foreign = [t.sip_trunk_id for t in present if t.name == name]
        if foreign:
            findings.append(
                Finding(
                    "error",
                    f"the {direction} trunk named {name!r} in LiveKit ({', '.join(foreign)}) "
                    f"was not created by dialplan, which never changes it: {consequence}",
                    "delete or rename that trunk in LiveKit, or give this one another name "
                    f"in the fleet config; then {PROVISION}",
                )
            )
            continue
        findings.append(
            Finding(
                "error",
                f"{direction} trunk {name!r} is not in LiveKit: {consequence}",
                PROVISION,
            )
        )
    return findings


def managed_trunk_id(name: str, present: Iterable[Any]) -> str | None:
    """The id of dialplan's own trunk called ``name`` (None: there is none)."""
    return next((t.sip_trunk_id for t in present if t.name == name and is_managed(t)), None)


def _route_findings(config: FleetConfig, live: LiveState) -> list[Finding]:
    findings = []
    for route in config.routes:
        trunk = config.inbound_trunk_for(route)
        trunk_id = managed_trunk_id(trunk.name, live.inbound) if trunk else None
        rule = _rule_for(route.number, trunk_id, live.rules)
        if rule is None:
            findings.append(
                Finding(
                    "error",
                    f"no dispatch rule in LiveKit takes calls to {route.number}: they are refused",
                    PROVISION,
                )
            )
            continue
        findings += _rule_problems(route, rule, trunk_id, config.worker.agent_name)
    return findings


def _rule_for(
    number: str, trunk_id: str | None, rules: list[sip.SIPDispatchRuleInfo]
) -> sip.SIPDispatchRuleInfo | None:
    """A rule naming the number wins over a catch-all one, as in LiveKit."""
    wanted = _digits(number)
    naming = [r for r in rules if wanted in {_digits(n) for n in r.numbers}]
    catch_all = [r for r in rules if not r.numbers and (not r.trunk_ids or trunk_id in r.trunk_ids)]
    return next(iter(naming or catch_all), None)


def _rule_problems(
    route: Route, rule: sip.SIPDispatchRuleInfo, trunk_id: str | None, agent_name: str
) -> list[Finding]:
    label = f"dispatch rule {rule.name or '(unnamed)'!r} ({rule.sip_dispatch_rule_id})"
    fix = (
        PROVISION
        if is_managed(rule)
        else "correct or delete the rule in LiveKit (dialplan leaves it alone)"
    )
    agents = [a.agent_name for a in rule.room_config.agents]
    problems = []
    if agent_name not in agents:
        sends_to = ", ".join(repr(a) for a in agents) or "no named agent"
        problems.append(
            Finding(
                "error",
                f"{label} for {route.number} dispatches {sends_to}, but the workers register as "
                f"{agent_name!r}: no worker would answer",
                f"{fix}, or set [worker] agent_name",
            )
        )
    if trunk_id and rule.trunk_ids and trunk_id not in rule.trunk_ids:
        problems.append(
            Finding(
                "error",
                f"{label} for {route.number} only takes calls from other trunks, not from the "
                f"one holding the number ({trunk_id})",
                fix,
            )
        )
    return problems


def _digits(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())
