"""`dialplan provision` against the local LiveKit server: what it sends, and that it is
idempotent, updates in place, deletes only its own objects and writes nothing on a dry run.

Stays on the stand-in: the exact requests sent, foreign objects and dry runs; idempotence
and in-place updates on the real server: tests/phone/test_provision.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from livekit import api

from runtime.fleet.config import FleetConfig
from runtime.fleet.provision import MANAGED_METADATA, ProvisionError, provision
from tests.fleet.livekit_server import LiveKitTestServer

MAIN, SUPPORT = "+15550100", "+15550101"


def fleet(**changes: Any) -> FleetConfig:
    data: dict[str, Any] = {
        "worker": {"agent_name": "dialplan-test"},
        "trunks": {
            "inbound": [
                {
                    "name": "main",
                    "numbers": [MAIN, SUPPORT],
                    "allowed_addresses": ["192.0.2.0/24"],
                    "auth_username": "carrier",
                    "auth_password": "${env:TEST_SIP_PASSWORD}",
                    "headers_to_attributes": {"X-Customer-Id": "customer_id"},
                    "krisp": True,
                }
            ],
            "outbound": [
                {
                    "name": "carrier",
                    "address": "sip.carrier.test",
                    "numbers": ["+15559000"],
                    "transport": "tls",
                }
            ],
        },
        "routes": [
            {"number": MAIN, "bot": "receptionist", "variables": {"office": "Lyon"}},
            {"number": SUPPORT, "bot": "support"},
        ],
    }
    data.update(changes)
    return FleetConfig.model_validate(data)


@pytest.fixture(autouse=True)
def sip_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SIP_PASSWORD", "s3cret")


async def test_first_run_creates_trunks_and_one_rule_per_route(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    report = await provision(fleet(), livekit_api, dry_run=False)

    assert [(c.action, c.kind, c.name) for c in report.changes] == [
        ("create", "inbound trunk", "main"),
        ("create", "outbound trunk", "carrier"),
        ("create", "dispatch rule", f"dialplan {MAIN}"),
        ("create", "dispatch rule", f"dialplan {SUPPORT}"),
    ]
    (inbound_request,) = livekit_server.calls("CreateSIPInboundTrunk")
    trunk = inbound_request.trunk
    assert (trunk.name, list(trunk.numbers)) == ("main", [MAIN, SUPPORT])
    assert list(trunk.allowed_addresses) == ["192.0.2.0/24"]
    assert (trunk.auth_username, trunk.auth_password) == ("carrier", "s3cret")
    assert dict(trunk.headers_to_attributes) == {"X-Customer-Id": "customer_id"}
    assert trunk.krisp_enabled and trunk.metadata == MANAGED_METADATA
    (outbound_request,) = livekit_server.calls("CreateSIPOutboundTrunk")
    assert outbound_request.trunk.address == "sip.carrier.test"
    assert outbound_request.trunk.transport == api.SIPTransport.SIP_TRANSPORT_TLS

    inbound_id = next(iter(livekit_server.sip.inbound))
    main_rule = livekit_server.calls("CreateSIPDispatchRule")[0].dispatch_rule
    assert main_rule.name == f"dialplan {MAIN}"
    assert json.loads(main_rule.metadata) == {"managed_by": "dialplan"}
    assert main_rule.rule.dispatch_rule_individual.room_prefix == "call_"
    assert list(main_rule.numbers) == [MAIN]
    assert list(main_rule.trunk_ids) == [inbound_id]
    assert dict(main_rule.attributes) == {"dialplan.bot": "receptionist"}
    (agent,) = main_rule.room_config.agents
    assert agent.agent_name == "dialplan-test"
    assert json.loads(agent.metadata) == {"bot": "receptionist", "variables": {"office": "Lyon"}}
    assert report.lines()[-1] == "4 created"


async def test_a_second_run_writes_nothing(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    await provision(fleet(), livekit_api, dry_run=False)
    livekit_server.requests.clear()

    report = await provision(fleet(), livekit_api, dry_run=False)

    assert livekit_server.writes() == []
    assert {c.action for c in report.changes} == {"unchanged"}
    assert report.lines()[-1] == "LiveKit already matches the fleet config"


async def test_a_changed_route_updates_its_rule_in_place(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    await provision(fleet(), livekit_api, dry_run=False)
    rule_ids = set(livekit_server.sip.rules)
    livekit_server.requests.clear()
    routes = [{"number": MAIN, "bot": "sales", "variables": {"office": "Lyon"}}, fleet().routes[1]]

    report = await provision(fleet(routes=routes), livekit_api, dry_run=False)

    assert [(w.service, w.method) for w in livekit_server.writes()] == [
        ("SIP", "UpdateSIPDispatchRule")
    ]
    (update,) = livekit_server.calls("UpdateSIPDispatchRule")
    assert update.WhichOneof("action") == "replace"
    assert update.replace.attributes["dialplan.bot"] == "sales"
    assert set(livekit_server.sip.rules) == rule_ids  # same rule, new content
    (changed,) = report.writes
    assert changed.differences[0] == "bot: receptionist → sales"
    assert "attributes: dialplan.bot=receptionist → dialplan.bot=sales" in changed.differences
    assert f"update dispatch rule 'dialplan {MAIN}'" in report.lines()[2]


async def test_changed_variables_show_in_the_difference(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    await provision(fleet(), livekit_api, dry_run=False)
    routes = [{"number": MAIN, "bot": "receptionist", "variables": {"office": "Paris"}}]

    report = await provision(fleet(routes=routes), livekit_api, dry_run=False)

    update = next(c for c in report.changes if c.action == "update")
    assert update.differences == ('variables: {"office": "Lyon"} → {"office": "Paris"}',)


async def test_a_removed_route_deletes_only_its_own_rule(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    foreign = await livekit_api.sip.create_dispatch_rule(
        api.CreateSIPDispatchRuleRequest(
            dispatch_rule=api.SIPDispatchRuleInfo(
                name="someone else's",
                rule=api.SIPDispatchRule(
                    dispatch_rule_direct=api.SIPDispatchRuleDirect(room_name="lobby")
                ),
                numbers=["+15550199"],
            )
        )
    )
    await provision(fleet(), livekit_api, dry_run=False)
    support_rule = next(r for r in livekit_server.sip.rules.values() if SUPPORT in r.numbers)
    livekit_server.requests.clear()

    report = await provision(fleet(routes=fleet().routes[:1]), livekit_api, dry_run=False)

    (delete,) = livekit_server.writes()
    assert delete.method == "DeleteSIPDispatchRule"
    assert delete.message.sip_dispatch_rule_id == support_rule.sip_dispatch_rule_id
    assert foreign.sip_dispatch_rule_id in livekit_server.sip.rules
    assert [c.action for c in report.changes if c.kind == "dispatch rule"] == [
        "unchanged",
        "delete",
    ]


async def test_a_trunk_change_replaces_the_trunk_and_keeps_the_rules(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    await provision(fleet(), livekit_api, dry_run=False)
    config = fleet()
    trunks = config.trunks.model_dump(mode="json")
    trunks["inbound"][0]["allowed_addresses"] = ["198.51.100.7"]
    livekit_server.requests.clear()

    report = await provision(fleet(trunks=trunks), livekit_api, dry_run=False)

    (update,) = livekit_server.writes()
    assert update.method == "UpdateSIPInboundTrunk"
    assert update.message.WhichOneof("action") == "replace"
    assert list(update.message.replace.allowed_addresses) == ["198.51.100.7"]
    assert report.writes[0].differences == ("allowed_addresses: 192.0.2.0/24 → 198.51.100.7",)


async def test_a_changed_secret_is_updated_but_never_printed(
    livekit_api: api.LiveKitAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    await provision(fleet(), livekit_api, dry_run=False)
    monkeypatch.setenv("TEST_SIP_PASSWORD", "rotated")

    report = await provision(fleet(), livekit_api, dry_run=False)

    (update,) = report.writes
    assert update.differences == ("auth_password: changed",)
    assert "rotated" not in "\n".join(report.lines())


async def test_a_dry_run_writes_nothing(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    report = await provision(fleet(), livekit_api, dry_run=True)

    assert livekit_server.writes() == []
    assert {m.method for m in livekit_server.requests} == {
        "ListSIPInboundTrunk",
        "ListSIPOutboundTrunk",
        "ListSIPDispatchRule",
    }
    assert [c.action for c in report.changes] == ["create"] * 4
    assert report.lines()[0] == "would create inbound trunk 'main'"
    assert report.lines()[-1] == "dry run, nothing written: 4 to create"


async def test_a_dry_run_shows_the_update_a_real_run_would_make(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    await provision(fleet(), livekit_api, dry_run=False)
    livekit_server.requests.clear()
    routes = [{"number": MAIN, "bot": "sales"}, fleet().routes[1]]

    report = await provision(fleet(routes=routes), livekit_api, dry_run=True)

    assert livekit_server.writes() == []
    (update,) = report.writes
    assert update.action == "update" and "bot: receptionist → sales" in update.differences


async def test_a_missing_secret_names_its_variable(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_SIP_PASSWORD")

    with pytest.raises(ProvisionError, match=r"TEST_SIP_PASSWORD is not set") as missing:
        await provision(fleet(), livekit_api, dry_run=False)

    assert "trunks.inbound 'main'" in str(missing.value)
    assert livekit_server.requests == []


async def test_an_unmanaged_object_with_a_wanted_name_stops_the_run(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    theirs = api.SIPInboundTrunkInfo(name="main", allowed_addresses=["203.0.113.1"])
    await livekit_api.sip.create_inbound_trunk(api.CreateSIPInboundTrunkRequest(trunk=theirs))
    livekit_server.requests.clear()

    with pytest.raises(ProvisionError, match=r"inbound trunk named 'main'.*did not create"):
        await provision(fleet(), livekit_api, dry_run=False)

    assert livekit_server.writes() == []


async def test_a_rule_name_taken_by_someone_else_stops_the_run_before_any_write(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    hand_made = api.SIPDispatchRuleInfo(
        name=f"dialplan {SUPPORT}",
        rule=api.SIPDispatchRule(dispatch_rule_direct=api.SIPDispatchRuleDirect(room_name="x")),
        numbers=["+15550111"],
    )
    await livekit_api.sip.create_dispatch_rule(
        api.CreateSIPDispatchRuleRequest(dispatch_rule=hand_made)
    )
    livekit_server.requests.clear()

    with pytest.raises(
        ProvisionError, match=re.escape(f"dispatch rule named 'dialplan {SUPPORT}'")
    ):
        await provision(fleet(), livekit_api, dry_run=False)

    assert livekit_server.writes() == []  # not even the trunks


async def test_a_route_without_an_inbound_trunk_takes_the_number_from_any_trunk(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    config = fleet(trunks={}, routes=[{"number": "+15550177", "bot": "receptionist"}])

    await provision(config, livekit_api, dry_run=False)

    (created,) = livekit_server.calls("CreateSIPDispatchRule")
    assert list(created.dispatch_rule.trunk_ids) == []
    assert list(created.dispatch_rule.numbers) == ["+15550177"]


async def test_a_trunk_removed_from_the_config_is_deleted_after_its_rules(
    livekit_server: LiveKitTestServer, livekit_api: api.LiveKitAPI
) -> None:
    await provision(fleet(), livekit_api, dry_run=False)
    livekit_server.requests.clear()

    await provision(fleet(trunks={}, routes=[]), livekit_api, dry_run=False)

    assert [w.method for w in livekit_server.writes()] == [
        "DeleteSIPDispatchRule",
        "DeleteSIPDispatchRule",
        "DeleteSIPTrunk",
        "DeleteSIPTrunk",
    ]
    assert not livekit_server.sip.inbound and not livekit_server.sip.rules


async def test_refused_credentials_are_a_clear_error(livekit_server: LiveKitTestServer) -> None:
    client = api.LiveKitAPI(livekit_server.url, livekit_server.api_key, "wrong-secret" * 4)
    try:
        with pytest.raises(ProvisionError, match=r"refused the API key and secret \(HTTP 401\)"):
            await provision(fleet(), client, dry_run=False)
    finally:
        await client.aclose()
