"""What a tool plugin returns: a name, a JSON-schema of its arguments and an async handler.

Tools never import livekit; the session layer adapts them to livekit-agents function tools
and records each call (arguments, latency, outcome) in the call's timeline.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from runtime.call import CallContext

ToolHandler = Callable[[dict[str, Any], "CallContext"], Awaitable[Any]]
Arguments = TypeVar("Arguments", bound=BaseModel)


class ToolFailure(Exception):
    """Raised by a tool handler for an error the LLM should see and recover from
    (a timeout, a non-2xx answer). The call goes on."""


@dataclass(frozen=True)
class ToolDefinition:
    name: str
    description: str
    handler: ToolHandler
    parameters: dict[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}, "required": []}
    )
    # a tool whose result ends the turn without another LLM step (e.g. end_call)
    ends_turn: bool = False

    def schema(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


def typed_tool(
    name: str,
    description: str,
    arguments: type[Arguments],
    handler: Callable[[Arguments, CallContext], Awaitable[Any]],
    *,
    ends_turn: bool = False,
) -> ToolDefinition:
    """A tool whose arguments are a pydantic model: the LLM sees the model's JSON schema
    (field descriptions included), and the handler gets a validated instance. Arguments
    that do not validate become a `ToolFailure` naming each bad field, so the LLM can
    correct itself instead of the tool guessing."""
    schema = arguments.model_json_schema()
    schema.pop("title", None)
    schema.setdefault("required", [])

    async def validated(raw: dict[str, Any], call: CallContext) -> Any:
        try:
            parsed = arguments.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, error['loc'])) or 'arguments'}: {error['msg']}"
                for error in exc.errors()
            )
            raise ToolFailure(f"invalid arguments for {name}: {problems}") from None
        return await handler(parsed, call)

    return ToolDefinition(name, description, validated, schema, ends_turn)
