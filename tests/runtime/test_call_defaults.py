"""What every call of a bot version shares (worked out once) and what stays per call."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from runtime import ToolDefinition, hookimpl
from runtime.call import NO_OVERRIDES, CallContext, CallOverrides, CallRequest
from runtime.catalog import load_catalog
from runtime.registry import Registry, load_registry
from runtime.resolve import plan_call
from runtime.schema import DAY_NAMES
from runtime.session import CallSession, build_call_session

from ..conftest import REPO

OPEN = CallOverrides(ignore_schedule=True)


def tools_by_name(call_session: CallSession) -> dict[str, Any]:
    return {tool.id: tool for tool in call_session.agent.tools}


def receptionist_call(registry: Registry, snapshot: Any, name: str) -> CallSession:
    request = CallRequest(bot="receptionist", variables={"caller_name": name}, overrides=OPEN)
    return build_call_session(plan_call(snapshot, request, registry))


async def test_calls_share_built_in_tools_and_each_records_its_own_tool_calls(
    registry: Registry,
) -> None:
    snapshot = load_catalog(REPO / "bots", registry)
    ann, bob = (receptionist_call(registry, snapshot, name) for name in ("Ann", "Bob"))
    assert tools_by_name(ann)["end_call"] is tools_by_name(bob)["end_call"]
    assert tools_by_name(ann)["transfer_call"] is tools_by_name(bob)["transfer_call"]
    await asyncio.gather(ann.start(), bob.start())

    await asyncio.gather(ann.say_text("thanks, bye"), bob.say_text("what are your hours?"))
    ann_record = await ann.close()
    await bob.say_text("goodbye")
    bob_record = await bob.close()

    for record, name in ((ann_record, "Ann"), (bob_record, "Bob")):
        tool_calls = [e for e in record.events if e.type == "tool_call"]
        assert [e.data["name"] for e in tool_calls] == ["end_call"], record.events
        assert record.disconnected_by == "bot"
        assert record.transcript[0].text.startswith(f"Hi {name},")
    assert any("Monday to Friday" in entry.text for entry in bob_record.transcript)


async def test_a_reloaded_version_builds_its_own_tools(registry: Registry) -> None:
    first = receptionist_call(registry, load_catalog(REPO / "bots", registry), "Ann")
    again = receptionist_call(registry, load_catalog(REPO / "bots", registry), "Ann")
    assert tools_by_name(first)["end_call"] is not tools_by_name(again)["end_call"]


async def test_a_mocked_handler_replaces_the_shared_tool_for_that_call_only(
    registry: Registry,
) -> None:
    snapshot = load_catalog(REPO / "bots", registry)
    said: list[dict[str, Any]] = []

    async def mock_end_call(arguments: dict[str, Any], call: CallContext) -> str:
        said.append(arguments)
        return "mocked"

    request = CallRequest(bot="receptionist", overrides=OPEN)
    mocked = build_call_session(
        plan_call(snapshot, request, registry), tool_handlers={"end_call": mock_end_call}
    )
    plain = receptionist_call(registry, snapshot, "Ann")
    assert tools_by_name(mocked)["end_call"] is not tools_by_name(plain)["end_call"]
    await mocked.start()
    await mocked.say_text("bye")
    record = await mocked.close()
    assert len(said) == 1  # the mock ran, once
    assert [e.data["result"] for e in record.events if e.type == "tool_call"] == ["mocked"]


class CountingTools:
    """One tool built per call (the default) and one shared by the bot version."""

    def __init__(self) -> None:
        self.calls_seen: list[object] = []

    @hookimpl
    def register_tools(self, register: Any) -> None:
        register(name="per_call_tool", factory=self.create("per_call_tool"))
        register(name="shared_tool", factory=self.create("shared_tool"), per_call=False)

    def create(self, name: str) -> Callable[[Any, Any], ToolDefinition]:
        def factory(options: Any, call: Any) -> ToolDefinition:
            self.calls_seen.append((name, call))

            async def handler(arguments: dict[str, Any], call: CallContext) -> str:
                return call.session_id

            return ToolDefinition(name=name, description=name, handler=handler)

        return factory


TWO_TOOLS_BOT = """
[prompt]
system = "static"
[llm]
provider = "rules"
[[tools]]
use = "per_call_tool"
[[tools]]
use = "shared_tool"
"""


async def test_plugins_choose_per_call_or_per_version_tools(bot_dir: Callable[..., Path]) -> None:
    plugin = CountingTools()
    registry = load_registry(extra_plugins=[("counting", plugin)])
    snapshot = load_catalog(bot_dir("two", TWO_TOOLS_BOT), registry)
    sessions = [
        build_call_session(plan_call(snapshot, CallRequest(bot="two"), registry)) for _ in range(3)
    ]
    per_call = [call for name, call in plugin.calls_seen if name == "per_call_tool"]
    shared = [call for name, call in plugin.calls_seen if name == "shared_tool"]
    assert per_call == [s.call for s in sessions]  # each call's own context
    assert shared == [None]  # once for the version, with no call to hold on to
    assert len({id(tools_by_name(s)["per_call_tool"]) for s in sessions}) == 3
    assert len({id(tools_by_name(s)["shared_tool"]) for s in sessions}) == 1


LINES_BOT = """
[prompt]
system = "static"
[llm]
provider = "rules"
[variables]
name = "there"
[limits]
silence_reminders = ["Are you still there?", "Still there, {{{{ name }}}}?"]
max_duration_message = "{max_duration_message}"
"""


def test_plain_ending_lines_are_shared_and_templated_ones_rendered_per_call(
    bot_dir: Callable[..., Path], registry: Registry
) -> None:
    plain = LINES_BOT.replace("{{{{ name }}}}", "friend").format(max_duration_message="Time!")
    snapshot = load_catalog(bot_dir("plain", plain), registry)
    first, second = (plan_call(snapshot, CallRequest(bot="plain"), registry) for _ in range(2))
    assert first.lines is second.lines
    assert first.lines.silence_reminders == ("Are you still there?", "Still there, friend?")
    assert first.lines.timeout == "Time!"

    templated = LINES_BOT.format(max_duration_message="Bye {{ name }}")
    snapshot = load_catalog(bot_dir("templated", templated), registry)
    ann = plan_call(snapshot, CallRequest(bot="templated", variables={"name": "Ann"}), registry)
    bob = plan_call(snapshot, CallRequest(bot="templated", variables={"name": "Bob"}), registry)
    assert ann.lines.silence_reminders[1] == "Still there, Ann?"
    assert (ann.lines.timeout, bob.lines.timeout) == ("Bye Ann", "Bye Bob")


def closed_today_bot() -> str:
    other = DAY_NAMES[(dt.datetime.now(dt.timezone.utc).weekday() + 3) % 7]
    return (
        '[prompt]\nsystem = "static"\n[llm]\nprovider = "rules"\n'
        '[schedule]\ntimezone = "Europe/Berlin"\n'
        f'hours = {{ {other} = "00:00-24:00" }}\n'
        'closed_message = "Closed, {{ name }}."\n[variables]\nname = "friend"\n'
    )


def test_opening_hours_and_the_closed_line_come_from_the_version(
    bot_dir: Callable[..., Path], registry: Registry
) -> None:
    snapshot = load_catalog(bot_dir("shop", closed_today_bot()), registry)
    plan = plan_call(snapshot, CallRequest(bot="shop", variables={"name": "Ann"}), registry)
    assert plan.outside_hours is not None and "Europe/Berlin" in plan.outside_hours
    assert plan.lines.closed == "Closed, Ann."
    staff = plan_call(snapshot, CallRequest(bot="shop", overrides=OPEN), registry)
    assert staff.outside_hours is None and staff.lines.closed == ""


def test_requests_without_overrides_share_one_frozen_empty_set() -> None:
    first, second = CallRequest(bot="a"), CallRequest(bot="a")
    assert first.overrides is NO_OVERRIDES and second.overrides is NO_OVERRIDES
    with pytest.raises(ValidationError, match="frozen"):
        first.overrides.ignore_schedule = True  # type: ignore[misc]
    assert first.session_id != second.session_id
    assert len(first.session_id) == 32 and int(first.session_id, 16) >= 0
