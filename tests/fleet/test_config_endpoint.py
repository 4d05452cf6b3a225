"""The config-endpoint plugin against a real local HTTP endpoint that answers what each test
scripts and remembers what it was sent, plus calls through the real WebSocket call server."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from runtime.call import CallOverrides, CallRequest, PromptOverrides
from runtime.errors import CallRejected, CallSetupError, PluginError
from runtime.fleet.config import ConfigEndpointSettings
from runtime.fleet.config_endpoint import ConfigEndpoint, install_config_endpoint
from runtime.registry import Registry
from runtime.resolve import resolve_request
from tests.transports.conftest import fake_bot, serve  # noqa: F401  (fixtures)
from tests.transports.test_call_server import generic_call, wait_for_records, ws_url

LOGGER = "dialplan.config_endpoint"
UNUSED_URL = "http://127.0.0.1:9/call-config"  # the discard port: nothing listens


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # a dict or list is sent as JSON, a str as it is
    stall: bool = False  # hold the answer until the test ends (a timeout)


@dataclass
class Received:
    body: Any
    headers: dict[str, str]


@dataclass
class ScriptedEndpoint:
    """Answers each POST with the next scripted reply; the last one repeats."""

    url: str = ""
    replies: list[Reply] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def script(self, *replies: Reply) -> None:
        self.replies = list(replies)

    def settings(self, **changes: Any) -> ConfigEndpointSettings:
        options = {"url": self.url, "timeout": 1.0, "retries": 2, "retry_delay": 0.01}
        return ConfigEndpointSettings.model_validate({**options, **changes})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.received.append(Received(await request.json(), dict(request.headers)))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if reply.stall:
            await self.released.wait()
        if isinstance(reply.body, dict | list):
            return web.json_response(reply.body, status=reply.status)
        return web.Response(status=reply.status, text=reply.body)


@pytest.fixture
async def endpoint() -> AsyncIterator[ScriptedEndpoint]:
    scripted = ScriptedEndpoint()
    app = web.Application()
    app.router.add_post("/call-config", scripted.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    scripted.url = f"http://{host}:{port}/call-config"
    yield scripted
    scripted.released.set()
    await runner.cleanup()


def a_request(**changes: Any) -> CallRequest:
    sip = {"call_id": "SCL_1", "trunk_id": "ST_1", "headers": {"X-Customer": "42"}}
    fields: dict[str, Any] = {
        "bot": "receptionist",
        "variables": {"name": "Ada", "tier": "silver", "sip": sip},
        "overrides": CallOverrides(
            llm={"model": "small"}, prompt=PromptOverrides(greeting="Hi {{ name }}")
        ),
        "session_id": "s-1",
        "transport": "livekit",
        "caller": "+15550100",
        "callee": "+15550199",
    }
    return CallRequest(**{**fields, **changes})


# -- answers ---------------------------------------------------------------------------


async def test_a_200_answer_changes_bot_variables_and_overrides(endpoint, monkeypatch) -> None:
    monkeypatch.setenv("CONFIG_TOKEN", "t0ken")
    endpoint.script(
        Reply(
            body={
                "bot": "sales",
                "variables": {"tier": "gold", "account": "A-7"},
                "overrides": {"llm": {"provider": "rules"}, "ignore_schedule": True},
            }
        )
    )
    plugin = ConfigEndpoint(endpoint.settings(auth_token="${env:CONFIG_TOKEN}"))
    request = a_request()
    resolved = await plugin.resolve(request)

    assert resolved is not None
    assert resolved.bot == "sales"
    assert resolved.variables == {**request.variables, "tier": "gold", "account": "A-7"}
    assert resolved.overrides.llm == {"provider": "rules"}  # replaced whole, not merged
    assert resolved.overrides.prompt == request.overrides.prompt  # not named: kept
    assert resolved.overrides.ignore_schedule is True
    assert resolved.session_id == "s-1" and resolved.caller == "+15550100"

    [sent] = endpoint.received
    assert sent.body == {
        "session_id": "s-1",
        "bot": "receptionist",
        "direction": "inbound",
        "transport": "livekit",
        "caller": "+15550100",
        "callee": "+15550199",
        "variables": request.variables,
        "sip": request.variables["sip"],
    }
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["Authorization"] == "Bearer t0ken"
    assert sent.headers["X-Dialplan-Session-Id"] == "s-1"


async def test_without_a_token_or_sip_data_neither_is_sent(endpoint) -> None:
    endpoint.script(Reply(body={"variables": {"tier": "gold"}}))
    plugin = ConfigEndpoint(endpoint.settings())
    await plugin.resolve(a_request(variables={"sip": "not a table"}))
    [sent] = endpoint.received
    assert "Authorization" not in sent.headers
    assert sent.body["sip"] == {}


@pytest.mark.parametrize("reply", [Reply(204), Reply(200, {}), Reply(200, "")])
async def test_no_content_or_an_empty_answer_changes_nothing(endpoint, reply) -> None:
    endpoint.script(reply)
    assert await ConfigEndpoint(endpoint.settings()).resolve(a_request()) is None


async def test_a_404_rejects_the_call_with_the_endpoints_message(endpoint) -> None:
    endpoint.script(Reply(404, {"message": "This number is no longer in service."}))
    with pytest.raises(CallRejected) as rejected:
        await ConfigEndpoint(endpoint.settings()).resolve(a_request())
    assert rejected.value.message == "This number is no longer in service."
    assert str(rejected.value).startswith(f"config endpoint {endpoint.url} answered 404: ")
    assert "no longer in service" in str(rejected.value)
    assert len(endpoint.received) == 1


async def test_a_404_without_a_message_says_the_configured_line(endpoint) -> None:
    endpoint.script(Reply(404, "unknown number"))
    settings = endpoint.settings(rejected_message="We are closed for good.")
    with pytest.raises(CallRejected) as rejected:
        await ConfigEndpoint(settings).resolve(a_request())
    assert rejected.value.message == "We are closed for good."
    assert str(rejected.value) == f"config endpoint {endpoint.url} answered 404: unknown number"


# -- failures --------------------------------------------------------------------------


async def test_a_503_is_retried_and_the_next_answer_is_used(endpoint, caplog) -> None:
    endpoint.script(Reply(503, "busy"), Reply(body={"variables": {"tier": "gold"}}))
    resolved = await ConfigEndpoint(endpoint.settings()).resolve(a_request())
    assert resolved is not None and resolved.variables["tier"] == "gold"
    assert len(endpoint.received) == 2
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_an_endpoint_that_keeps_failing_leaves_the_defaults(endpoint, caplog) -> None:
    endpoint.script(Reply(500, "boom"))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        answer = await ConfigEndpoint(endpoint.settings(retries=2)).resolve(a_request())
    assert answer is None
    assert len(endpoint.received) == 3
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.name == LOGGER
    text = warning.getMessage()
    assert endpoint.url in text and "answered 500: boom" in text and "defaults" in text


async def test_a_slow_endpoint_is_retried_then_the_defaults_are_used(endpoint, caplog) -> None:
    endpoint.script(Reply(stall=True))
    settings = endpoint.settings(timeout=0.1, retries=1)
    answer = await ConfigEndpoint(settings).resolve(a_request())
    assert answer is None
    assert len(endpoint.received) == 2
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "no answer within 0.1s" in warning.getMessage()


async def test_an_endpoint_nobody_listens_on_is_retried_then_skipped(caplog) -> None:
    settings = ConfigEndpointSettings(url=UNUSED_URL, retries=1, retry_delay=0.01)
    assert await ConfigEndpoint(settings).resolve(a_request()) is None
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "failed 2 time(s)" in warning.getMessage()


async def test_a_401_is_not_retried_and_is_logged_as_an_error(endpoint, caplog) -> None:
    endpoint.script(Reply(401, {"error": "bad token"}))
    answer = await ConfigEndpoint(endpoint.settings()).resolve(a_request())
    assert answer is None
    assert len(endpoint.received) == 1
    [error] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert error.levelno == logging.ERROR and error.name == LOGGER
    assert endpoint.url in error.getMessage() and "answered 401" in error.getMessage()


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("<html>oops</html>", "not JSON"),
        ([1, 2], "not an object"),
        ({"overrides": {"llm": "big"}}, "overrides.llm"),
        ({"overrides": {"voice": "x"}}, "overrides.voice"),
        ({"variabels": {"tier": "gold"}}, "variabels"),
    ],
)
async def test_an_unusable_200_leaves_the_defaults(endpoint, caplog, body, problem) -> None:
    endpoint.script(Reply(200, body))
    assert await ConfigEndpoint(endpoint.settings()).resolve(a_request()) is None
    assert len(endpoint.received) == 1
    [error] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert error.levelno == logging.ERROR and problem in error.getMessage()


async def test_calls_on_two_event_loops_in_two_threads_both_resolve(endpoint) -> None:
    """The LiveKit worker runs each call on its own thread and loop."""
    endpoint.script(Reply(body={"variables": {"tier": "gold"}}))
    plugin = ConfigEndpoint(endpoint.settings())

    def call_on_its_own_loop(session_id: str) -> CallRequest | None:
        return asyncio.run(plugin.resolve(a_request(session_id=session_id)))

    answers = await asyncio.gather(
        asyncio.to_thread(call_on_its_own_loop, "thread-1"),
        asyncio.to_thread(call_on_its_own_loop, "thread-2"),
    )
    assert [a.variables["tier"] if a else None for a in answers] == ["gold", "gold"]
    assert {r.headers["X-Dialplan-Session-Id"] for r in endpoint.received} == {
        "thread-1",
        "thread-2",
    }
    await plugin.aclose()


# -- installing ------------------------------------------------------------------------


async def test_installed_it_answers_the_resolve_call_hook(endpoint, registry: Registry) -> None:
    # `registry` is built fresh for each test (tests/conftest.py): nothing leaks out
    endpoint.script(Reply(body={"bot": "sales"}))
    plugin = install_config_endpoint(registry, endpoint.settings())
    resolved = await resolve_request(a_request(), registry)
    assert resolved.bot == "sales"
    with pytest.raises(PluginError, match="already installed"):
        install_config_endpoint(registry, endpoint.settings())
    await plugin.aclose()


# -- through the call server -----------------------------------------------------------


async def test_a_rejected_call_ends_before_it_starts(endpoint, fake_bot, serve) -> None:  # noqa: F811
    endpoint.script(Reply(404, {"message": "Not today."}))
    server = await serve(fake_bot(["hello"]))
    install_config_endpoint(server.registry, endpoint.settings())
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(server, "/ws")) as ws:
        start = {"type": "start", "sample_rate": 16000, "bot": "line", "caller": "+15550100"}
        await ws.send_str(json.dumps(start))
        notices = [json.loads(m.data) async for m in ws if m.type == aiohttp.WSMsgType.TEXT]
    assert any("answered 404" in json.dumps(notice) for notice in notices)
    await wait_for_records(server)
    record = server.records[-1]
    assert record.disconnected_by == "rejected"
    assert (
        record.cause == f'config endpoint {endpoint.url} answered 404: {{"message": "Not today."}}'
    )
    [sent] = endpoint.received
    assert sent.body["transport"] == "websocket" and sent.body["caller"] == "+15550100"


async def test_the_endpoints_variables_reach_the_call_record(endpoint, fake_bot, serve) -> None:  # noqa: F811
    endpoint.script(Reply(body={"variables": {"account": "A-7"}}))
    # the stream may set `tier` because the bot declares it (others are refused)
    server = await serve(fake_bot(["bye"], variables='tier = "none"'))
    install_config_endpoint(server.registry, endpoint.settings())
    notices = await generic_call(server, {"bot": "line", "variables": {"tier": "gold"}})
    assert notices[-1]["type"] == "ended"
    await wait_for_records(server)
    record = server.records[-1]
    assert record.disconnected_by == "bot"
    assert record.variables["account"] == "A-7" and record.variables["tier"] == "gold"
    assert endpoint.received[0].body["variables"] == {"tier": "gold"}


def test_a_blocked_config_endpoint_is_not_asked(registry: Registry, caplog) -> None:
    registry.plugins.manager.set_blocked("config_endpoint")
    install_config_endpoint(registry, ConfigEndpointSettings(url=UNUSED_URL))
    assert registry.hook.resolve_call(request=a_request()) is None
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "DIALPLAN_DISABLED_PLUGINS=config_endpoint" in warning.getMessage()


def test_a_token_that_is_not_set_fails_at_install(registry: Registry) -> None:
    token = "${env:DIALPLAN_TEST_UNSET_TOKEN}"
    settings = ConfigEndpointSettings(url=UNUSED_URL, auth_token=token)
    with pytest.raises(CallSetupError, match="DIALPLAN_TEST_UNSET_TOKEN is not set"):
        install_config_endpoint(registry, settings)
    assert registry.plugins.manager.get_plugin("config_endpoint") is None
