"""`dialplan provision` and `dialplan doctor` against the real livekit-server: what its list
responses carry is what provision compares, so a second run must change nothing."""

from __future__ import annotations

import asyncio
import json

from livekit import api

from phonelab.project import Project
from tests.phone.conftest import FLEET_TOML, INBOUND_NUMBER


def dispatch_rules(project: Project) -> list[api.SIPDispatchRuleInfo]:
    async def read() -> list[api.SIPDispatchRuleInfo]:
        env = project.stack.env()
        client = api.LiveKitAPI(
            env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"]
        )
        try:
            rules = await client.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())
            return list(rules.items)
        finally:
            await client.aclose()

    return asyncio.run(read())


def routed_bot(project: Project) -> str:
    (rule,) = [r for r in dispatch_rules(project) if INBOUND_NUMBER in r.name]
    (dispatch,) = rule.room_config.agents
    return str(json.loads(dispatch.metadata)["bot"])


def test_provision_creates_then_finds_nothing_to_change(project: Project) -> None:
    # the fixture's first run created the trunks and the rule on the real server
    again = project.provision()
    assert "LiveKit already matches the fleet config" in again.stdout, again.stdout
    assert "create" not in again.stdout and "update" not in again.stdout
    assert routed_bot(project) == "receptionist"

    doctor = project.run("doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "error" not in doctor.stdout


def test_a_changed_route_updates_its_rule_in_place(project: Project) -> None:
    (before,) = [
        r.sip_dispatch_rule_id for r in dispatch_rules(project) if INBOUND_NUMBER in r.name
    ]
    project.write_config(FLEET_TOML.replace('bot = "receptionist"', 'bot = "dentist"'))
    try:
        changed = project.provision()
        assert "update dispatch rule" in changed.stdout and "1 updated" in changed.stdout
        assert routed_bot(project) == "dentist"
        (after,) = [
            r.sip_dispatch_rule_id for r in dispatch_rules(project) if INBOUND_NUMBER in r.name
        ]
        assert after == before  # updated, not replaced: calls in flight keep their rule
    finally:
        project.write_config(FLEET_TOML)
        project.provision()
    assert routed_bot(project) == "receptionist"


def test_doctor_names_a_wrong_agent_name(project: Project) -> None:
    project.write_config(
        FLEET_TOML.replace('agent_name = "dialplan-lab"', 'agent_name = "dialplan-other"')
    )
    try:
        doctor = project.run("doctor")
    finally:
        project.write_config(FLEET_TOML)
    assert doctor.returncode == 1
    assert f"for {INBOUND_NUMBER} dispatches" in doctor.stdout
    assert "'dialplan-other'" in doctor.stdout and "no worker would answer" in doctor.stdout


def test_doctor_names_a_missing_trunk_and_a_missing_rule(project: Project) -> None:
    more = (
        FLEET_TOML + '\n[[trunks.inbound]]\nname = "second"\nnumbers = ["+15550200"]\n'
        '\n[[routes]]\nnumber = "+15550200"\nbot = "dentist"\n'
    )
    project.write_config(more)
    try:
        doctor = project.run("doctor")
        assert doctor.returncode == 1
        assert "inbound trunk 'second' is not in LiveKit" in doctor.stdout
        assert "no dispatch rule in LiveKit takes calls to +15550200" in doctor.stdout
        assert "fix: run `dialplan provision`" in doctor.stdout
        project.provision()
        assert project.run("doctor").returncode == 0
    finally:
        project.write_config(FLEET_TOML)
        cleaned = project.provision()  # the extra trunk and rule are dialplan's: removed
    assert "delete inbound trunk 'second'" in cleaned.stdout, cleaned.stdout
