"""The ``end_call`` tool: the LLM hangs up, optionally after a goodbye.

[[tools]]
use = "end_call"
goodbye = "Thanks for calling, {{ customer_name }}. Goodbye!"
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from runtime import (
    CallContext,
    DisconnectedBy,
    RegisterTool,
    ToolDefinition,
    check_snippet,
    hookimpl,
    render_snippet,
    snippet_names,
)


class EndCallOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    goodbye: str = Field("", description="said before hanging up (template over variables)")
    description: str = Field(
        "End the call. Use it when the caller says goodbye or the conversation is finished.",
        description="what the LLM is told about when to use this tool",
    )

    @field_validator("goodbye")
    @classmethod
    def _valid_template(cls, value: str) -> str:
        return check_snippet(value)

    def variables_used(self) -> dict[str, frozenset[str]]:
        return {"goodbye": snippet_names(self.goodbye)}


def create_tool(options: EndCallOptions, call: CallContext | None) -> ToolDefinition:
    async def end_call(arguments: dict[str, Any], call: CallContext) -> str:
        goodbye = render_snippet(options.goodbye, call.template_values()) or None
        reason = str(arguments.get("reason") or "end_call tool")
        call.request_end(DisconnectedBy.BOT, cause=reason, goodbye=goodbye)
        return "the call is ending"

    return ToolDefinition(
        name="end_call",
        description=options.description,
        handler=end_call,
        parameters={
            "type": "object",
            "properties": {"reason": {"type": "string", "description": "why the call ends"}},
            "required": [],
        },
        ends_turn=True,
    )


@hookimpl
def register_tools(register: RegisterTool) -> None:
    register(
        name="end_call",
        factory=create_tool,
        options=EndCallOptions,
        description="hang up (disconnected_by = bot), optionally after a goodbye",
        per_call=False,  # the handler gets the call; the definition is the same for all
    )
