"""The `http` tool, loaded through the registry like any bot's tool, against a real aiohttp
server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from runtime import CallContext, DisconnectedBy, ToolDefinition, ToolFailure
from runtime.call import CallRequest
from runtime.catalog import load_catalog
from runtime.record import CallEvent
from runtime.registry import Registry
from runtime.resolve import plan_call
from runtime.session import build_call_session

SECRET = "tok-3f9a-very-secret"
BIG_BODY_BYTES = 5 * 1024 * 1024


@dataclass
class FakeApi:
    """A small CRM: records every request it receives and misbehaves on demand."""

    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    failures_left: int = 0  # /flaky answers 503 this many times first
    released: asyncio.Event = field(default_factory=asyncio.Event)  # ends /hang

    def hits(self, path: str) -> int:
        return sum(1 for request in self.received if request["path"] == path)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.record])
        app.router.add_get("/customers/{id}", self.customer)
        app.router.add_post("/bookings", self.booking)
        app.router.add_get("/slots", self.slots)
        app.router.add_get("/flaky", self.flaky)
        app.router.add_get("/hang", self.hang)
        app.router.add_get("/big", self.big)
        app.router.add_get("/html", self.html)
        app.router.add_get("/echo-secret", self.echo_secret)
        return app

    @web.middleware
    async def record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        self.received.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "headers": dict(request.headers),
                "body": body.decode(),
            }
        )
        return await handler(request)

    async def customer(self, request: web.Request) -> web.Response:
        if request.match_info["id"] == "404":
            return web.json_response({"error": "no such customer"}, status=404)
        return web.json_response({"id": request.match_info["id"], "name": "Ann", "tier": "gold"})

    async def booking(self, request: web.Request) -> web.Response:
        return web.json_response({"booked": await request.json()}, status=201)

    async def slots(self, request: web.Request) -> web.Response:
        return web.json_response({"slots": ["9:00", "10:30"]})

    async def html(self, request: web.Request) -> web.Response:
        return web.Response(text="<html>oops</html>")

    async def flaky(self, request: web.Request) -> web.Response:
        if self.failures_left > 0:
            self.failures_left -= 1
            return web.json_response({"error": "busy"}, status=503)
        return web.json_response({"ok": True})

    async def hang(self, request: web.Request) -> web.Response:
        await self.released.wait()
        return web.json_response({})

    async def big(self, request: web.Request) -> web.StreamResponse:
        if "announced" in request.query:  # with a Content-Length
            return web.Response(body=b"x" * BIG_BODY_BYTES)
        response = web.StreamResponse()  # chunked: the size is not announced up front
        await response.prepare(request)
        chunk = b"x" * (64 * 1024)
        try:
            for _ in range(BIG_BODY_BYTES // len(chunk)):
                await response.write(chunk)
        except ConnectionError:
            pass  # the tool stopped reading at its cap and hung up: the point of the test
        return response

    async def echo_secret(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "")
        return web.json_response({"error": f"bad token {token}"}, status=401)


@pytest.fixture
async def api() -> AsyncIterator[FakeApi]:
    fake = FakeApi()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    fake.url = str(server.make_url("")).rstrip("/")
    yield fake
    fake.released.set()
    await server.close()


BOT = """
[prompt]
system = "static"
[variables]
api = "{api}"
tier = "gold"
[llm]
provider = "rules"
{rules}
[[tools]]
use = "http"
name = "crm"
description = "look up the caller in the CRM"
{tool}
"""

CUSTOMER_TOOL = """
url = "{{ api }}/customers/{{ args.id }}"
parameters = '{"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}'
"""

MakeTool = Callable[..., tuple[ToolDefinition, CallContext]]


def bot_toml(api: FakeApi, tool: str, rules: str = "") -> str:
    return BOT.format(api=api.url, tool=tool, rules=rules)


@pytest.fixture
def make_tool(bot_dir: Callable[..., Path], registry: Registry, api: FakeApi) -> Iterator[MakeTool]:
    """The tool as a call builds it: bot file -> catalog -> call plan -> plugin factory."""
    calls: list[CallContext] = []

    def make(tool: str, **options: Any) -> tuple[ToolDefinition, CallContext]:
        text = tool + "".join(f"\n{key} = {json.dumps(value)}" for key, value in options.items())
        snapshot = load_catalog(bot_dir("shop", bot_toml(api, text)), registry)
        assert snapshot.problems == ()
        request = CallRequest(bot="shop", session_id="call-1", caller="+15550100")
        plan = plan_call(snapshot, request, registry)
        call = plan.new_context()
        calls.append(call)
        resolved = plan.tools[0]
        return resolved.entry.factory(resolved.options, call), call

    yield make
    for call in calls:  # lets each tool close its client session
        call.request_end(DisconnectedBy.CUSTOMER)


def http_events(call: CallContext) -> list[CallEvent]:
    return [event for event in call.events if event.type == "http_request"]


async def failure_of(tool: ToolDefinition, call: CallContext, **arguments: Any) -> str:
    with pytest.raises(ToolFailure) as failure:
        await tool.handler(arguments, call)
    return str(failure.value)


# -- requests that succeed ---------------------------------------------------------------


async def test_get_renders_url_query_and_headers_with_a_secret_from_the_environment(
    make_tool: MakeTool, api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_TOKEN", SECRET)
    tool, call = make_tool(
        CUSTOMER_TOOL
        + """
query = { tier = "{{ tier }}", session = "{{ call.session_id }}", limit = 5, full = true }
headers = { Authorization = "Bearer {{ secrets.token }}", X-Caller = "{{ call.caller }}" }
secrets = { token = "${env:CRM_TOKEN}" }
"""
    )
    result = await tool.handler({"id": "c 42"}, call)

    assert json.loads(result) == {"id": "c 42", "name": "Ann", "tier": "gold"}
    [request] = api.received
    assert (request["method"], request["path"]) == ("GET", "/customers/c 42")
    assert request["query"] == {"tier": "gold", "session": "call-1", "limit": "5", "full": "true"}
    assert request["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert request["headers"]["X-Caller"] == "+15550100"
    [event] = http_events(call)
    assert event.data["url"].startswith(f"{api.url}/customers/c%2042?tier=gold")
    assert (event.data["status"], event.data["attempts"], event.data["error"]) == (200, 1, None)
    assert event.data["bytes"] == len(json.dumps({"id": "c 42", "name": "Ann", "tier": "gold"}))
    assert event.data["latency_ms"] > 0


async def test_post_sends_a_json_body_keeping_the_arguments_types(
    make_tool: MakeTool, api: FakeApi
) -> None:
    tool, call = make_tool(
        """
method = "post"
url = "{{ api }}/bookings"
[tools.body]
day = "{{ args.day }}"
party = "{{ args.party }}"
note = "{{ tier }} {{ args.party }}"
[tools.body.meta]
source = "phone"
tags = ["{{ tier }}", 1]
[tools.parameters]
type = "object"
properties = { day = { type = "string" }, party = { type = "integer" } }
"""
    )
    result = await tool.handler({"day": "Monday", "party": 4}, call)

    meta = {"source": "phone", "tags": ["gold", 1]}
    sent = {"day": "Monday", "party": 4, "note": "gold 4", "meta": meta}
    assert json.loads(api.received[0]["body"]) == sent
    assert api.received[0]["headers"]["Content-Type"] == "application/json"
    assert json.loads(result) == {"booked": sent}
    assert http_events(call)[0].data["status"] == 201


async def test_an_optional_argument_the_llm_left_out_is_not_sent(
    make_tool: MakeTool, api: FakeApi
) -> None:
    tool, call = make_tool(
        """
method = "POST"
url = "{{ api }}/bookings"
query = { day = "{{ args.day }}", note = "{{ args.note }}" }
body = { day = "{{ args.day }}", note = "{{ args.note }}" }
[tools.parameters]
type = "object"
properties = { day = { type = "string" }, note = { type = "string" } }
"""
    )
    await tool.handler({"day": "Monday"}, call)
    assert api.received[0]["query"] == {"day": "Monday"}
    assert json.loads(api.received[0]["body"]) == {"day": "Monday"}


async def test_a_text_body_is_sent_as_rendered(make_tool: MakeTool, api: FakeApi) -> None:
    tool, call = make_tool(
        """
method = "POST"
url = "{{ api }}/bookings"
headers = { Content-Type = "application/json" }
body = '{"tier": {{ tier | tojson }}}'
"""
    )
    assert json.loads(await tool.handler({}, call)) == {"booked": {"tier": "gold"}}


async def test_response_template_shapes_what_the_llm_sees(make_tool: MakeTool) -> None:
    tool, call = make_tool(
        """
url = "{{ api }}/slots"
response = "{{ tier }}: {{ response.slots | join(' or ') }} (HTTP {{ status }})"
"""
    )
    assert await tool.handler({}, call) == "gold: 9:00 or 10:30 (HTTP 200)"


async def test_a_long_answer_is_cut_for_the_llm(make_tool: MakeTool) -> None:
    tool, call = make_tool('url = "{{ api }}/big"', expect_json=False, max_response_bytes=10**7)
    result = await tool.handler({}, call)
    assert result.startswith("xxxx") and result.endswith(
        f"[cut: {BIG_BODY_BYTES} characters in all]"
    )
    assert len(result) < 4100


# -- failures the LLM sees ---------------------------------------------------------------


async def test_a_4xx_fails_with_its_status_and_body_and_is_not_retried(
    make_tool: MakeTool, api: FakeApi
) -> None:
    tool, call = make_tool(CUSTOMER_TOOL, retries=3)
    failure = await failure_of(tool, call, id="404")
    assert failure == 'the API answered HTTP 404 Not Found: {"error": "no such customer"}'
    assert api.hits("/customers/404") == 1
    assert http_events(call)[0].data["error"] == failure


async def test_a_5xx_is_retried_until_it_succeeds(make_tool: MakeTool, api: FakeApi) -> None:
    api.failures_left = 2
    tool, call = make_tool('url = "{{ api }}/flaky"', retries=2)
    assert json.loads(await tool.handler({}, call)) == {"ok": True}
    assert api.hits("/flaky") == 3
    assert http_events(call)[0].data["attempts"] == 3


async def test_retries_are_limited(make_tool: MakeTool, api: FakeApi) -> None:
    api.failures_left = 5
    tool, call = make_tool('url = "{{ api }}/flaky"')  # default: one retry
    failure = await failure_of(tool, call)
    assert failure.startswith("the API answered HTTP 503 Service Unavailable")
    assert failure.endswith("(after 2 attempts)")
    assert api.hits("/flaky") == 2


async def test_connection_refused_is_retried_then_fails(
    make_tool: MakeTool, unused_tcp_port: int
) -> None:
    tool, call = make_tool(f'url = "http://127.0.0.1:{unused_tcp_port}/x"')
    failure = await failure_of(tool, call)
    assert failure.startswith("cannot reach the API: Cannot connect to host 127.0.0.1")
    assert http_events(call)[0].data["attempts"] == 2


async def test_a_hanging_api_times_out_within_the_timeout(
    make_tool: MakeTool, api: FakeApi
) -> None:
    tool, call = make_tool('url = "{{ api }}/hang"', timeout="0.2s")
    started = time.perf_counter()
    failure = await failure_of(tool, call)
    elapsed = time.perf_counter() - started
    assert failure == "no answer within 200ms"
    assert 0.2 <= elapsed < 0.5  # the timeout bounds the whole call, retries included
    assert http_events(call)[0].data["status"] is None


async def test_a_cancelled_invocation_is_on_the_timeline(make_tool: MakeTool, api: FakeApi) -> None:
    tool, call = make_tool('url = "{{ api }}/hang"')
    invocation = asyncio.ensure_future(tool.handler({}, call))
    while not api.received:  # the request has reached the server
        await asyncio.sleep(0.005)
    invocation.cancel()
    with pytest.raises(asyncio.CancelledError):
        await invocation
    assert http_events(call)[0].data["error"] == "cancelled"


@pytest.mark.parametrize(("query", "bytes_read"), [("", 100_000), ("?announced", 0)])
async def test_an_oversized_answer_stops_at_the_cap(
    make_tool: MakeTool, query: str, bytes_read: int
) -> None:
    tool, call = make_tool(f'url = "{{{{ api }}}}/big{query}"', max_response_bytes=100_000)
    assert await failure_of(tool, call) == "the response is larger than 100000 bytes"
    assert http_events(call)[0].data["bytes"] == bytes_read


async def test_an_answer_that_is_not_json_fails(make_tool: MakeTool) -> None:
    tool, call = make_tool('url = "{{ api }}/html"')
    failure = await failure_of(tool, call)
    assert failure == "the API answered HTTP 200 with something that is not JSON: <html>oops</html>"
    tool, call = make_tool('url = "{{ api }}/html"', expect_json=False)
    assert await tool.handler({}, call) == "<html>oops</html>"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "invalid arguments: 'id' is a required property;"),
        ({"id": 42}, "invalid arguments: 42 is not of type 'string' (at id);"),
    ],
)
async def test_arguments_that_do_not_match_parameters_fail_before_any_request(
    make_tool: MakeTool, api: FakeApi, arguments: dict[str, Any], message: str
) -> None:
    tool, call = make_tool(CUSTOMER_TOOL)
    assert (await failure_of(tool, call, **arguments)).startswith(message)
    assert api.received == []
    assert http_events(call)[0].data["attempts"] == 0


async def test_a_missing_secret_fails_the_tool_not_the_call(
    make_tool: MakeTool, api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CRM_TOKEN", raising=False)
    tool, call = make_tool(
        'url = "{{ api }}/slots"\nheaders = { Authorization = "{{ secrets.token }}" }\n'
        'secrets = { token = "${env:CRM_TOKEN}" }'
    )
    failure = await failure_of(tool, call)
    assert failure.startswith("the tool is not configured: environment variable CRM_TOKEN")
    assert api.received == []


async def test_secret_values_never_reach_events_or_failures(
    make_tool: MakeTool, api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_TOKEN", SECRET)
    tool, call = make_tool(
        """
url = "{{ api }}/echo-secret?key={{ secrets.token }}"
headers = { Authorization = "{{ secrets.token }}" }
secrets = { token = "${env:CRM_TOKEN}" }
"""
    )
    failure = await failure_of(tool, call)  # the API echoes the token in its error
    assert api.received[0]["headers"]["Authorization"] == SECRET  # it was sent
    assert failure == 'the API answered HTTP 401 Unauthorized: {"error": "bad token ***"}'
    event = http_events(call)[0]
    assert event.data["url"].endswith("/echo-secret?key=***")
    assert SECRET not in json.dumps([e.model_dump(mode="json") for e in call.events])


async def test_the_client_session_closes_when_the_call_ends(make_tool: MakeTool) -> None:
    tool, call = make_tool('url = "{{ api }}/slots"')
    await tool.handler({}, call)
    await tool.handler({}, call)
    http_tool = tool.handler.__self__  # type: ignore[attr-defined]
    client = http_tool._client
    assert client is not None and not client.closed  # one session, reused
    call.request_end(DisconnectedBy.CUSTOMER)
    await http_tool._closer
    assert client.closed


# -- problems found when the bot loads ---------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "problem"),
    [
        (
            'url = "{{ api }}/x"\nparameters = \'{"type": "object", '
            '"properties": {"date": {"type": "strin"}}}\'',
            "tools[0].parameters: 'strin' is not valid under any of the given schemas "
            "at properties.date.type",
        ),
        (
            'url = "{{ api }}/x"\nparameters = { type = "array" }',
            'tools[0].parameters: needs `type = "object"` at the top level',
        ),
        (
            'url = "{{ api }}/customers/{{ customer_id }}"',
            "tools[0].url: uses undefined variable `customer_id`",
        ),
        (
            'url = "{{ api }}/x"\nbody = { who = { name = "{{ caller_name }}" } }',
            "tools[0].body.who.name: uses undefined variable `caller_name`",
        ),
        (
            CUSTOMER_TOOL + 'query = { x = "{{ args.idd }}" }',
            "tools[0].query.x: reads `args.idd`, which is not a property in `parameters` "
            "(did you mean `id`?",
        ),
        (
            'url = "{{ api }}/x"\nheaders = { A = "{{ secrets.tok }}" }',
            "tools[0].headers.A: reads `secrets.tok`, which is not a name in `secrets`",
        ),
        (
            'url = "{{ api }}/x"\nheaders = { A = "{% if %}" }',
            "tools[0].headers.A: template syntax error: Expected an expression",
        ),
        (
            'url = "{{ api }}/x"\nsecrets = { token = "hunter2" }',
            'tools[0].secrets.token: secrets are read from the environment only: write "${env:',
        ),
        (
            'url = "{{ api }}/x"\nresponse = "{{ secrets.token }}"',
            "tools[0].response: cannot read `secrets`",
        ),
        ('url = "ftp://example.com/x"', "tools[0].url: 'ftp://example.com/x' is not an absolute"),
        ('url = "{{ api }}/x"\ntimeout = "2m"', "tools[0].timeout: Input should be less than"),
        ('url = "{{ api }}/x"\nretry = 2', "tools[0].retry: unknown key (did you mean `retries`?"),
    ],
)
def test_problems_are_reported_at_their_key_when_the_bot_loads(
    bot_dir: Callable[..., Path], registry: Registry, api: FakeApi, tool: str, problem: str
) -> None:
    snapshot = load_catalog(bot_dir("shop", bot_toml(api, tool)), registry)
    [found] = [str(p).split(": ", 1)[1] for p in snapshot.problems]
    assert found.startswith(problem)


def test_variables_used_names_each_templates_call_variables(
    bot_dir: Callable[..., Path], registry: Registry, api: FakeApi
) -> None:
    tool = (
        CUSTOMER_TOOL
        + 'headers = { X-Tier = "{{ tier }}{{ call.caller }}" }\n'
        + 'body = { a = ["{{ args.id }}", "{{ tier }}"] }\n'
        + 'response = "{{ response.name }} {{ api }} {{ status }}"'
    )
    snapshot = load_catalog(bot_dir("shop", bot_toml(api, tool)), registry)
    options = snapshot.get("shop").tools[0].options
    assert options.variables_used() == {  # type: ignore[attr-defined]
        "url": {"api"},
        "headers.X-Tier": {"tier"},
        "body.a[1]": {"tier"},
        "response": {"api"},
    }


# -- in a real AgentSession ----------------------------------------------------------------

RULES = """
[[llm.rules]]
match = "customer (?P<id>\\\\w+)"
tool = "crm"
arguments = { id = "{{ match.id }}" }
reply = "That is {{ result.name }}, a {{ result.tier }} customer."
on_error = "Sorry, I cannot look that up right now."
"""


@pytest.mark.parametrize("customer", ["c42", "404"])
async def test_a_rules_bot_calls_the_http_tool_in_a_text_call(
    bot_dir: Callable[..., Path], registry: Registry, api: FakeApi, customer: str
) -> None:
    snapshot = load_catalog(bot_dir("shop", bot_toml(api, CUSTOMER_TOOL, RULES)), registry)
    assert snapshot.problems == ()
    call_session = build_call_session(plan_call(snapshot, CallRequest(bot="shop"), registry))
    await call_session.start()

    result = await call_session.say_text(f"please find customer {customer}")
    result.expect.next_event().is_function_call(name="crm", arguments={"id": customer})
    failed = customer == "404"
    assert result.expect.next_event().is_function_call_output().event().item.is_error is failed
    reply = result.expect.next_event().is_message(role="assistant").event().item.text_content
    record = await call_session.close()

    if failed:
        assert reply == "Sorry, I cannot look that up right now."
    else:
        assert reply == "That is Ann, a gold customer."
    [tool_call] = [e for e in record.events if e.type == "tool_call"]
    assert tool_call.data["name"] == "crm" and tool_call.data["arguments"] == {"id": customer}
    assert tool_call.data["outcome"] == ("error" if failed else "ok")
    [http_request] = [e for e in record.events if e.type == "http_request"]
    assert http_request.data["status"] == (404 if failed else 200)
    assert tool_call.data["error"] == http_request.data["error"]
