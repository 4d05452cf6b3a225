"""Text-mode calls through a real livekit-agents AgentSession."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import llm
from pydantic import BaseModel

from runtime import DisconnectedBy, ToolDefinition, ToolFailure, hookimpl
from runtime.call import CallOverrides, CallRequest
from runtime.catalog import load_catalog
from runtime.registry import Registry, load_registry
from runtime.resolve import plan_call
from runtime.session import build_call_session

from ..conftest import REPO

OPEN = CallOverrides(ignore_schedule=True)  # the receptionist keeps office hours


async def test_receptionist_conversation_with_end_call(registry: Registry) -> None:
    snapshot = load_catalog(REPO / "bots", registry)
    request = CallRequest(bot="receptionist", variables={"caller_name": "Ann"}, overrides=OPEN)
    plan = plan_call(snapshot, request, registry)
    call_session = build_call_session(plan)
    opening = await call_session.start(capture_run=True)
    assert opening is not None
    opening.expect.skip_next_event_if(type="agent_handoff")
    opening.expect.next_event().is_message(role="assistant")

    result = await call_session.say_text("What are your opening hours?")
    result.expect.next_event().is_message(role="assistant")
    assert "Monday to Friday" in call_session.call.transcript[-1].text

    result = await call_session.say_text("Thanks, bye!")
    result.expect.next_event().is_function_call(name="end_call")
    record = await call_session.close()

    assert record.disconnected_by == DisconnectedBy.BOT.value
    assert record.bot_version == snapshot.get("receptionist").version
    assert [e.role for e in record.transcript] == ["bot", "customer", "bot", "customer", "bot"]
    assert record.transcript[0].text.startswith("Hi Ann, thanks for calling")
    assert record.transcript[-1].text == "Thanks for calling Bright Smile Dental. Have a great day!"
    tool_events = [e for e in record.events if e.type == "tool_call"]
    assert tool_events[0].data["name"] == "end_call" and tool_events[0].data["outcome"] == "ok"
    assert record.usage and record.usage[0].model == "rules"


async def test_customer_hangup_is_recorded(registry: Registry) -> None:
    snapshot = load_catalog(REPO / "bots", registry)
    plan = plan_call(snapshot, CallRequest(bot="receptionist", overrides=OPEN), registry)
    call_session = build_call_session(plan)
    await call_session.start()
    await call_session.say_text("where are you?")
    record = await call_session.close(DisconnectedBy.CUSTOMER, cause="hung up")
    assert record.disconnected_by == "customer" and record.cause == "hung up"
    assert record.has_customer_message


class LookupOptions(BaseModel):
    fail: bool = False


class LookupPlugin:
    """A tool plugin defined in the test, registered like any other plugin."""

    @hookimpl
    def register_tools(self, register: Any) -> None:
        register(name="lookup", factory=self.create, options=LookupOptions)

    @staticmethod
    def create(options: LookupOptions, call: Any) -> ToolDefinition:
        async def lookup(arguments: dict[str, Any], call: Any) -> dict[str, Any]:
            if options.fail:
                raise ToolFailure("the order service timed out")
            return {"order": arguments["order_id"], "status": "shipped", "for": call.bot_id}

        return ToolDefinition(
            name="lookup",
            description="look up an order",
            handler=lookup,
            parameters={
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        )


TOOL_BOT = """
[prompt]
system = "static"
[llm]
provider = "rules"
[[llm.rules]]
match = "order (?P<id>\\\\d+)"
tool = "lookup"
arguments = {{ order_id = "{{{{ match.id }}}}" }}
reply = "Order {{{{ result.order }}}} is {{{{ result.status }}}}."
on_error = "Sorry, I can't check orders right now."
[[tools]]
use = "lookup"
fail = {fail}
"""


@pytest.mark.parametrize("fail", [False, True])
async def test_plugin_tool_success_and_recoverable_failure(
    bot_dir: Callable[..., Path], fail: bool
) -> None:
    registry = load_registry(extra_plugins=[("lookup", LookupPlugin())])
    snapshot = load_catalog(bot_dir("shop", TOOL_BOT.format(fail=str(fail).lower())), registry)
    assert snapshot.problems == ()
    call_session = build_call_session(plan_call(snapshot, CallRequest(bot="shop"), registry))
    await call_session.start()
    result = await call_session.say_text("where is order 42?")
    result.expect.next_event().is_function_call(name="lookup", arguments={"order_id": "42"})
    output = result.expect.next_event().is_function_call_output()
    assert output.event().item.is_error is fail
    reply = result.expect.next_event().is_message(role="assistant").event().item.text_content
    assert reply == ("Sorry, I can't check orders right now." if fail else "Order 42 is shipped.")
    record = await call_session.close()
    event = next(e for e in record.events if e.type == "tool_call")
    assert event.data["outcome"] == ("error" if fail else "ok")
    assert event.data["arguments"] == {"order_id": "42"}
    assert event.data["latency_ms"] >= 0
    if fail:
        assert event.data["error"] == "the order service timed out"


async def test_livekit_tool_schema_uses_the_bots_tool_name(
    bot_dir: Callable[..., Path],
) -> None:
    registry = load_registry(extra_plugins=[("lookup", LookupPlugin())])
    snapshot = load_catalog(bot_dir("shop", TOOL_BOT.format(fail="false")), registry)
    plan = plan_call(snapshot, CallRequest(bot="shop"), registry)
    tools = build_call_session(plan).agent.tools
    info = [llm.tool_context.get_raw_function_info(t) for t in tools]  # type: ignore[arg-type]
    assert [i.name for i in info] == ["lookup"]
    assert info[0].raw_schema["parameters"]["required"] == ["order_id"]
