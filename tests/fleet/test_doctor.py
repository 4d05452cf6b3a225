"""`dialplan doctor`: each finding, against the local LiveKit server.

Stays on the stand-in: trunks made by someone else, refused keys and an unreachable server
on demand; the real server's findings: tests/phone/test_provision.py.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from livekit import api

from runtime.fleet.config import FleetConfig
from runtime.fleet.doctor import DoctorReport, Finding, diagnose
from runtime.fleet.provision import provision
from tests.fleet.livekit_server import LiveKitTestServer

MAIN = "+15550100"
BOTS = ("receptionist", "sales")


def fleet(**changes: Any) -> FleetConfig:
    data: dict[str, Any] = {
        "worker": {"agent_name": "dialplan-test"},
        "trunks": {
            "inbound": [{"name": "main", "numbers": [MAIN], "allowed_addresses": ["192.0.2.1"]}],
            "outbound": [{"name": "carrier", "address": "sip.carrier.test", "numbers": ["+1555"]}],
        },
        "routes": [{"number": MAIN, "bot": "receptionist"}],
    }
    data.update(changes)
    return FleetConfig.model_validate(data)


def problems(report: DoctorReport) -> list[tuple[str, str]]:
    return [(f.severity, f.problem) for f in report.findings]


def only(report: DoctorReport, severity: str = "error") -> Finding:
    (finding,) = [f for f in report.findings if f.severity == severity]
    return finding


async def test_a_provisioned_fleet_passes(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    await provision(fleet(), livekit_api, dry_run=False)
    livekit_server.requests.clear()

    report = await diagnose(fleet(), BOTS, livekit_api, livekit_server.env())

    assert report.ok and report.findings == [] and report.server_checked
    assert report.lines() == ["all checks passed"]
    assert livekit_server.writes() == []  # the doctor only reads


async def test_missing_credentials_skip_the_server(livekit_server: LiveKitTestServer) -> None:
    env = {"LIVEKIT_URL": livekit_server.url}

    report = await diagnose(fleet(), BOTS, None, env)

    assert problems(report) == [
        ("error", "LIVEKIT_API_KEY is not set: nothing can reach LiveKit"),
        ("error", "LIVEKIT_API_SECRET is not set: nothing can reach LiveKit"),
    ]
    assert not report.ok and not report.server_checked
    assert "LiveKit itself was not checked" in report.lines()
    assert livekit_server.requests == []


async def test_an_unreachable_server(livekit_server: LiveKitTestServer) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"  # bound, never listening
        client = api.LiveKitAPI(url, livekit_server.api_key, livekit_server.api_secret)
        env = {**livekit_server.env(), "LIVEKIT_URL": url}
        try:
            report = await diagnose(fleet(), BOTS, client, env)
        finally:
            await client.aclose()

    finding = only(report)
    assert finding.problem.startswith(f"cannot reach LiveKit at {url}")
    assert "LIVEKIT_URL" in finding.fix


async def test_refused_credentials(livekit_server: LiveKitTestServer) -> None:
    env = {**livekit_server.env(), "LIVEKIT_API_SECRET": "wrong-secret" * 4}
    client = api.LiveKitAPI(env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"])
    try:
        report = await diagnose(fleet(), BOTS, client, env)
    finally:
        await client.aclose()

    finding = only(report)
    assert finding.problem == "LiveKit refused the API key and secret (HTTP 401)"
    assert "LIVEKIT_API_SECRET" in finding.fix


async def test_a_routed_number_without_a_dispatch_rule(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    await provision(fleet(routes=[]), livekit_api, dry_run=False)  # trunks only

    report = await diagnose(fleet(), BOTS, livekit_api, livekit_server.env())

    finding = only(report)
    assert finding.problem == f"no dispatch rule in LiveKit takes calls to {MAIN}: they are refused"
    assert finding.fix == "run `dialplan provision`"


async def test_a_rule_for_another_agent_name(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    await provision(fleet(), livekit_api, dry_run=False)
    renamed = fleet(worker={"agent_name": "dialplan-prod"})

    report = await diagnose(renamed, BOTS, livekit_api, livekit_server.env())

    finding = only(report)
    assert f"for {MAIN} dispatches 'dialplan-test'" in finding.problem
    assert "workers register as 'dialplan-prod': no worker would answer" in finding.problem
    assert finding.fix.startswith("run `dialplan provision`")


async def test_an_unmanaged_rule_without_agents_is_reported_with_its_own_fix(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    await provision(fleet(routes=[]), livekit_api, dry_run=False)
    await livekit_api.sip.create_dispatch_rule(
        api.CreateSIPDispatchRuleRequest(
            dispatch_rule=api.SIPDispatchRuleInfo(
                name="hand made",
                rule=api.SIPDispatchRule(
                    dispatch_rule_individual=api.SIPDispatchRuleIndividual(room_prefix="x_")
                ),
                numbers=[MAIN],
            )
        )
    )

    report = await diagnose(fleet(), BOTS, livekit_api, livekit_server.env())

    finding = only(report)
    assert "dispatch rule 'hand made'" in finding.problem
    assert "dispatches no named agent" in finding.problem
    assert finding.fix.startswith("correct or delete the rule in LiveKit")


async def test_a_rule_that_only_takes_calls_from_another_trunk(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    await provision(fleet(routes=[]), livekit_api, dry_run=False)
    elsewhere = api.SIPInboundTrunkInfo(name="elsewhere", allowed_addresses=["203.0.113.9"])
    other = await livekit_api.sip.create_inbound_trunk(
        api.CreateSIPInboundTrunkRequest(trunk=elsewhere)
    )
    await livekit_api.sip.create_dispatch_rule(
        api.CreateSIPDispatchRuleRequest(
            dispatch_rule=api.SIPDispatchRuleInfo(
                name="misfiled",
                rule=api.SIPDispatchRule(
                    dispatch_rule_individual=api.SIPDispatchRuleIndividual(room_prefix="call_")
                ),
                numbers=[MAIN],
                trunk_ids=[other.sip_trunk_id],
                room_config=api.RoomConfiguration(
                    agents=[api.RoomAgentDispatch(agent_name="dialplan-test")]
                ),
            )
        )
    )

    report = await diagnose(fleet(), BOTS, livekit_api, livekit_server.env())

    finding = only(report)
    assert "'misfiled'" in finding.problem
    assert "only takes calls from other trunks" in finding.problem


async def test_a_route_naming_an_unknown_bot(livekit_server: LiveKitTestServer) -> None:
    config = fleet(routes=[{"number": MAIN, "bot": "recepcionist"}])

    report = await diagnose(config, BOTS, None, {})

    finding = next(f for f in report.findings if "recepcionist" in f.problem)
    assert finding.severity == "error"
    assert finding.fix.startswith("did you mean `receptionist`?")


async def test_a_number_without_an_inbound_trunk(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    config = fleet(routes=[{"number": "+15550177", "bot": "sales"}])
    await provision(config, livekit_api, dry_run=False)

    report = await diagnose(config, BOTS, livekit_api, livekit_server.env())

    assert report.ok  # a number LiveKit itself provides needs no trunk
    finding = only(report, "warning")
    assert finding.problem.startswith("+15550177 is routed but no [[trunks.inbound]] lists it")


async def test_no_outbound_trunk_configured(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    config = fleet(trunks={"inbound": fleet().trunks.model_dump(mode="json")["inbound"]})
    await provision(config, livekit_api, dry_run=False)

    report = await diagnose(config, BOTS, livekit_api, livekit_server.env())

    finding = only(report, "warning")
    assert "no [[trunks.outbound]] configured: outbound calls" in finding.problem


async def test_configured_trunks_missing_on_the_server(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    report = await diagnose(fleet(), BOTS, livekit_api, livekit_server.env())

    assert problems(report) == [
        ("error", f"inbound trunk 'main' is not in LiveKit: calls to {MAIN} are refused"),
        (
            "error",
            "outbound trunk 'carrier' is not in LiveKit: outbound calls through it would fail",
        ),
        ("error", f"no dispatch rule in LiveKit takes calls to {MAIN}: they are refused"),
    ]
    assert report.lines()[-1] == "3 error(s), 0 warning(s)"


@pytest.mark.parametrize("catch_all_trunk", [True, False])
async def test_a_catch_all_rule_serves_a_number(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI, catch_all_trunk: bool
) -> None:
    await provision(fleet(routes=[]), livekit_api, dry_run=False)
    trunk_id = next(iter(livekit_server.sip.inbound))
    await livekit_api.sip.create_dispatch_rule(
        api.CreateSIPDispatchRuleRequest(
            dispatch_rule=api.SIPDispatchRuleInfo(
                name="everything",
                rule=api.SIPDispatchRule(
                    dispatch_rule_individual=api.SIPDispatchRuleIndividual(room_prefix="call_")
                ),
                trunk_ids=[trunk_id] if catch_all_trunk else [],
                room_config=api.RoomConfiguration(
                    agents=[api.RoomAgentDispatch(agent_name="dialplan-test")]
                ),
            )
        )
    )

    report = await diagnose(fleet(), BOTS, livekit_api, livekit_server.env())

    assert report.findings == []


async def test_a_foreign_trunk_sharing_a_name_is_not_taken_for_dialplans_own(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    """Trunks are matched by id among dialplan's own, as `provision` matches them: a
    namesake someone else created neither hides ours nor gets blamed in its place."""
    await provision(fleet(), livekit_api, dry_run=False)
    namesake = api.SIPInboundTrunkInfo(name="main", allowed_addresses=["203.0.113.9"])
    await livekit_api.sip.create_inbound_trunk(api.CreateSIPInboundTrunkRequest(trunk=namesake))

    report = await diagnose(fleet(), BOTS, livekit_api, livekit_server.env())
    assert report.ok and report.findings == [], report.lines()


async def test_only_a_foreign_trunk_of_that_name_is_reported_as_such(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    await provision(fleet(trunks={"inbound": []}), livekit_api, dry_run=False)
    namesake = api.SIPInboundTrunkInfo(name="main", allowed_addresses=["203.0.113.9"])
    foreign = await livekit_api.sip.create_inbound_trunk(
        api.CreateSIPInboundTrunkRequest(trunk=namesake)
    )

    report = await diagnose(fleet(), BOTS, livekit_api, livekit_server.env())
    finding = next(f for f in report.findings if "'main'" in f.problem)
    assert finding.problem == (
        f"the inbound trunk named 'main' in LiveKit ({foreign.sip_trunk_id}) was not created "
        f"by dialplan, which never changes it: calls to {MAIN} are refused"
    )
    assert finding.fix.startswith("delete or rename that trunk in LiveKit")
