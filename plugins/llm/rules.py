"""The ``rules`` LLM provider: a deterministic engine configured in the bot file.

Ordered rules match the caller's utterance (a case-insensitive regular expression) and
answer with a reply template and/or a tool call. It needs no network and no keys, so it
drives the demo bot, scenario tests and offline fallback.

    [llm]
    provider = "rules"
    default = "Sorry, could you say that again?"
    [[llm.rules]]
    match = "\\b(?P<day>monday|tuesday)\\b"
    tool = "book_appointment"
    arguments = { day = "{{ match.day }}" }
    reply = "You're booked for {{ result.day }}."
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from runtime import (
    CallContext,
    RegisterProvider,
    check_snippet,
    hookimpl,
    render_snippet,
    snippet_names,
)


def _check_template(value: str) -> str:
    return check_snippet(value)


# what replies see besides the call's variables
ENGINE_NAMES = frozenset({"match", "utterance", "result", "error"})


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    match: str = Field(description="regular expression searched in the caller's utterance")
    reply: str = Field("", description="template; sees variables, `match` groups, `result`")
    tool: str | None = Field(None, description="name of a bot tool to call when this matches")
    arguments: dict[str, Any] = Field(
        default_factory=dict, description="tool arguments; string values are templates"
    )
    on_error: str = Field("", description="said when the tool fails (default: `default`)")

    @field_validator("match")
    @classmethod
    def _valid_regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
        return value

    @field_validator("reply", "on_error")
    @classmethod
    def _valid_template(cls, value: str) -> str:
        return _check_template(value)


class RulesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rules: list[Rule] = Field(default_factory=list, description="tried in order; first wins")
    default: str = Field(
        "Sorry, I didn't catch that. Could you say it again?",
        description="reply when no rule matches",
    )
    opening: str = Field(
        "Hello! How can I help you?", description="what the bot says when asked to open the call"
    )

    @field_validator("default", "opening")
    @classmethod
    def _valid_template(cls, value: str) -> str:
        return _check_template(value)

    def variables_used(self) -> dict[str, frozenset[str]]:
        """Call variables each reply reads (beside the engine's own names), so a typo is
        a validation error instead of a failure in the middle of a call."""
        texts = {"default": self.default, "opening": self.opening}
        for i, rule in enumerate(self.rules):
            texts |= {f"rules[{i}].reply": rule.reply, f"rules[{i}].on_error": rule.on_error}
            texts |= {
                f"rules[{i}].arguments.{key}": value
                for key, value in rule.arguments.items()
                if isinstance(value, str)
            }
        used = {key: snippet_names(text) - ENGINE_NAMES for key, text in texts.items()}
        return {key: names for key, names in used.items() if names}

    def referenced_tools(self) -> dict[str, str]:
        """Tool names these rules call, by key path, so validation can check the bot
        binds them."""
        return {f"rules[{i}].tool": rule.tool for i, rule in enumerate(self.rules) if rule.tool}


@dataclass(frozen=True)
class RuleReply:
    """What the engine decided for one turn."""

    text: str = ""
    tool: str | None = None
    arguments: dict[str, Any] | None = None
    rule_index: int | None = None


class RulesEngine:
    """Matching and rendering, with no livekit in sight (so it is trivially testable)."""

    def __init__(self, options: RulesOptions, variables: dict[str, Any]) -> None:
        self.options = options
        self.variables = variables
        self._patterns = [re.compile(rule.match, re.IGNORECASE) for rule in options.rules]
        # the match that called a tool, so the reply after the tool still sees `match`
        self._tool_context: dict[int, dict[str, Any]] = {}

    def opening(self) -> RuleReply:
        return RuleReply(text=self._render(self.options.opening, {}))

    def respond(self, utterance: str) -> RuleReply:
        for index, (rule, pattern) in enumerate(
            zip(self.options.rules, self._patterns, strict=True)
        ):
            found = pattern.search(utterance)
            if found is None:
                continue
            context = {
                "match": {**found.groupdict(), "text": found.group(0)},
                "utterance": utterance,
            }
            if rule.tool:
                arguments = {
                    key: self._render(value, context) if isinstance(value, str) else value
                    for key, value in rule.arguments.items()
                }
                self._tool_context[index] = context
                return RuleReply(tool=rule.tool, arguments=arguments, rule_index=index)
            return RuleReply(text=self._render(rule.reply, context), rule_index=index)
        return RuleReply(text=self._render(self.options.default, {"utterance": utterance}))

    def after_tool(self, rule_index: int, output: str, is_error: bool) -> RuleReply:
        rule = self.options.rules[rule_index]
        context = self._tool_context.pop(rule_index, {})
        if is_error:
            return RuleReply(
                text=self._render(
                    rule.on_error or self.options.default, {**context, "error": output}
                )
            )
        try:
            result: Any = json.loads(output)
        except ValueError:
            result = output
        return RuleReply(text=self._render(rule.reply, {**context, "result": result}))

    def _render(self, template: str, extra: dict[str, Any]) -> str:
        return render_snippet(template, {**self.variables, **extra})


def create_llm(options: RulesOptions, call: CallContext) -> Any:
    from plugins.llm.rules_llm import RulesLLM

    return RulesLLM(RulesEngine(options, dict(call.variables)))


@hookimpl
def register_providers(register: RegisterProvider) -> None:
    register(
        kind="llm",
        name="rules",
        factory=create_llm,
        options=RulesOptions,
        description="deterministic pattern -> reply/tool rules (offline, for demos and tests)",
    )
