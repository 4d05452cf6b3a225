"""The livekit-agents side of the ``rules`` provider: an ``llm.LLM`` that asks a
`RulesEngine` what to say and streams it back like any model would."""

from __future__ import annotations

import json
import uuid
from typing import Any

from livekit.agents import APIError, llm
from livekit.agents.llm import ChatChunk, ChoiceDelta, CompletionUsage, FunctionToolCall
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN, APIConnectOptions

from plugins.llm.rules import RuleFailed, RuleReply, RulesEngine

_CALL_PREFIX = "rules"


class RulesLLM(llm.LLM):
    def __init__(self, engine: RulesEngine) -> None:
        super().__init__()
        self.engine = engine

    @property
    def model(self) -> str:
        return "rules"

    @property
    def provider(self) -> str:
        return "dialplan"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: Any = NOT_GIVEN,
        tool_choice: Any = NOT_GIVEN,
        extra_kwargs: Any = NOT_GIVEN,
    ) -> RulesStream:
        return RulesStream(
            self,
            chat_ctx=chat_ctx,
            tools=tools or [],
            conn_options=conn_options,
            tool_choice=tool_choice,
        )


class RulesStream(llm.LLMStream):
    def __init__(self, rules_llm: RulesLLM, *, tool_choice: Any, **kwargs: Any) -> None:
        super().__init__(rules_llm, **kwargs)
        self._engine = rules_llm.engine
        self._tool_choice = tool_choice

    async def _run(self) -> None:
        try:
            reply = self._decide()
        except RuleFailed as exc:  # the turn fails like a provider's would, with its cause
            raise APIError(str(exc), retryable=False) from None
        request_id = uuid.uuid4().hex[:12]
        tool_calls: list[FunctionToolCall] = []
        if reply.tool and self._tool_choice != "none":
            tool_calls.append(
                FunctionToolCall(
                    name=reply.tool,
                    arguments=json.dumps(reply.arguments or {}),
                    call_id=f"{_CALL_PREFIX}_{reply.rule_index}_{request_id}",
                )
            )
        if reply.text or tool_calls:
            self._event_ch.send_nowait(
                ChatChunk(
                    id=request_id,
                    delta=ChoiceDelta(
                        role="assistant", content=reply.text or None, tool_calls=tool_calls
                    ),
                )
            )
        words = len(reply.text.split())
        self._event_ch.send_nowait(
            ChatChunk(
                id=request_id,
                usage=CompletionUsage(completion_tokens=words, prompt_tokens=0, total_tokens=words),
            )
        )

    def _decide(self) -> RuleReply:
        items = [item for item in self._chat_ctx.items if item.type != "agent_config_update"]
        last = items[-1] if items else None
        engine = self._engine
        if last is not None and last.type == "function_call_output":
            prefix, _, rest = last.call_id.partition("_")
            rule_index, _, _ = rest.partition("_")
            if prefix != _CALL_PREFIX or not rule_index.isdigit():
                return RuleReply()
            if engine.arriving():  # the goto's transition tool answered: it refused
                return engine.transition_refused(last.output)
            return engine.after_tool(int(rule_index), last.output, last.is_error)
        if last is not None and last.type == "message" and last.role == "user":
            if engine.arriving():  # a step begins with the line that moved the call
                return engine.begin_step(last.text_content or "")
            offered = frozenset(tool.info.name for tool in self._tools if hasattr(tool, "info"))
            return engine.respond(last.text_content or "", offered)
        callers = [
            item.text_content or ""
            for item in items
            if item.type == "message" and item.role == "user"
        ]
        return engine.begin_step(callers[-1] if callers else None)
