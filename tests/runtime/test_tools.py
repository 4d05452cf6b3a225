"""Plugin tools with typed arguments, and what the call's timeline records of tool calls."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from runtime import CallContext, RegisterTool, ToolDefinition, ToolFailure, hookimpl, typed_tool
from runtime.call import CallRequest
from runtime.catalog import load_catalog
from runtime.livekit_tools import RESULT_EXCERPT_CHARS
from runtime.registry import load_registry
from runtime.resolve import plan_call
from runtime.session import build_call_session


class Party(BaseModel):
    size: int = Field(ge=1, le=12, description="number of guests")
    name: str = Field(description="who the table is for")


class TablesPlugin:
    """A restaurant's table booking, as a third-party plugin would write it."""

    @staticmethod
    @hookimpl
    def register_tools(register: RegisterTool) -> None:
        def create(options: Any, call: CallContext) -> ToolDefinition:
            async def book(party: Party, call: CallContext) -> dict[str, Any]:
                # typed access to the arguments, and to the call (variables, caller)
                return {
                    "table_for": party.size,
                    "name": party.name,
                    "venue": call.variables["venue"],
                }

            return typed_tool("book_table", "book a table", Party, book)

        register(name="book_table", factory=create)

        def create_menu(options: Any, call: CallContext) -> ToolDefinition:
            async def menu(party: Party, call: CallContext) -> str:
                return "dish " * 400

            return typed_tool("menu", "the whole menu", Party, menu)

        register(name="menu", factory=create_menu)


BOT = """
[prompt]
system = "You book tables."
[variables]
venue = "Luigi's"
[llm]
provider = "rules"
default = "Pardon?"
[[llm.rules]]
match = "table for (?P<size>\\\\w+)"
tool = "book_table"
arguments = { size = "{{ match.size }}", name = "Ann" }
reply = "Booked at {{ result.venue }} for {{ result.table_for }}."
on_error = "Sorry: {{ error }}"
[[llm.rules]]
match = "menu"
tool = "menu"
arguments = { size = 2, name = "Ann" }
reply = "Here it is."
[[tools]]
use = "book_table"
[[tools]]
use = "menu"
"""


async def converse(bot_dir: Callable[..., Path], line: str) -> Any:
    registry = load_registry(extra_plugins=[("tables", TablesPlugin())])
    snapshot = load_catalog(bot_dir("tables", BOT), registry)
    assert not snapshot.problems, snapshot.problems
    call_session = build_call_session(plan_call(snapshot, CallRequest(bot="tables"), registry))
    await call_session.start()
    await call_session.say_text(line)
    return await call_session.close()


async def test_typed_arguments_are_validated_and_converted(bot_dir: Callable[..., Path]) -> None:
    record = await converse(bot_dir, "a table for 4 please")
    assert record.transcript[-1].text == "Booked at Luigi's for 4."
    [event] = [e.data for e in record.events if e.type == "tool_call"]
    assert event["outcome"] == "ok" and event["arguments"] == {"size": "4", "name": "Ann"}
    assert event["result"] == '{"table_for": 4, "name": "Ann", "venue": "Luigi\'s"}'
    assert event["latency_ms"] >= 0


async def test_invalid_arguments_tell_the_llm_which_field(bot_dir: Callable[..., Path]) -> None:
    record = await converse(bot_dir, "a table for twenty")
    assert record.transcript[-1].text.startswith("Sorry: invalid arguments for book_table: size:")
    [event] = [e.data for e in record.events if e.type == "tool_call"]
    assert event["outcome"] == "error" and "size" in event["error"] and event["result"] is None


async def test_long_results_are_cut_in_the_timeline(bot_dir: Callable[..., Path]) -> None:
    record = await converse(bot_dir, "the menu?")
    [event] = [e.data for e in record.events if e.type == "tool_call"]
    assert len(event["result"]) < RESULT_EXCERPT_CHARS + 30
    assert event["result"].endswith("... (2000 chars)")


def test_the_llm_sees_the_models_schema() -> None:
    async def handler(party: Party, call: CallContext) -> str:
        return "ok"

    tool = typed_tool("book_table", "book", Party, handler)
    assert tool.parameters["required"] == ["size", "name"]
    assert tool.parameters["properties"]["size"]["description"] == "number of guests"
    assert tool.parameters["properties"]["size"]["maximum"] == 12


async def test_validation_errors_are_tool_failures() -> None:
    async def handler(party: Party, call: CallContext) -> str:
        return "ok"

    tool = typed_tool("book_table", "book", Party, handler)
    with pytest.raises(ToolFailure, match=r"name: Field required"):
        await tool.handler({"size": 2}, None)  # type: ignore[arg-type]
