"""What a tool plugin returns: a name, a JSON-schema of its arguments and an async handler.

Tools never import livekit; the session layer adapts them to livekit-agents function tools
and records each call (arguments, latency, outcome) in the call's timeline.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.call import CallContext

ToolHandler = Callable[[dict[str, Any], "CallContext"], Awaitable[Any]]


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
