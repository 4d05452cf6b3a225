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

In a bot with a flow, a rule can be scoped to steps and take a transition of its step:

    [[llm.rules]]
    steps = ["triage"]
    match = "\\bmy name is (?P<name>[a-z]+)"
    goto = "booking"                             # the `when` transition to that step
    capture = { patient_name = "{{ match.name }}" }
    reply = "Thanks {{ captured.patient_name }}, which day suits you?"   # said on arrival
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
ENGINE_NAMES = frozenset({"match", "utterance", "result", "error", "captured", "step"})


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    match: str = Field(description="regular expression searched in the caller's utterance")
    reply: str = Field("", description="template; sees variables, `match` groups, `result`")
    tool: str | None = Field(None, description="name of a bot tool to call when this matches")
    arguments: dict[str, Any] = Field(
        default_factory=dict, description="tool arguments; string values are templates"
    )
    on_error: str = Field("", description="said when the tool fails (default: `default`)")
    steps: list[str] = Field(
        default_factory=list, description="flow steps this rule is active in (default: all)"
    )
    goto: str | None = Field(
        None, description="take the current step's `when` transition to this step"
    )
    capture: dict[str, Any] = Field(
        default_factory=dict,
        description="values the transition captures; string values are templates "
        "(`{{ match.name }}`)",
    )

    @model_validator(mode="after")
    def _one_action(self) -> Rule:
        if self.goto is not None and self.tool is not None:
            raise ValueError("a rule either calls a `tool` or takes a transition (`goto`)")
        if self.capture and self.goto is None:
            raise ValueError("`capture` goes with `goto` (a tool's arguments are `arguments`)")
        return self

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
            for table in ("arguments", "capture"):
                texts |= {
                    f"rules[{i}].{table}.{key}": value
                    for key, value in getattr(rule, table).items()
                    if isinstance(value, str)
                }
        used = {key: snippet_names(text) - ENGINE_NAMES for key, text in texts.items()}
        return {key: names for key, names in used.items() if names}

    def referenced_tools(self) -> dict[str, str]:
        """Tool names these rules call, by key path, so validation can check the bot
        binds them."""
        return {f"rules[{i}].tool": rule.tool for i, rule in enumerate(self.rules) if rule.tool}

    def referenced_steps(self) -> dict[str, tuple[list[str], str | None]]:
        """Per rule that names flow steps: (the steps it is scoped to, its `goto`), so
        validation can check the steps exist and each has that transition."""
        return {
            f"rules[{i}]": (rule.steps, rule.goto)
            for i, rule in enumerate(self.rules)
            if rule.steps or rule.goto
        }


@dataclass(frozen=True)
class RuleReply:
    """What the engine decided for one turn."""

    text: str = ""
    tool: str | None = None
    arguments: dict[str, Any] | None = None
    rule_index: int | None = None


class RulesEngine:
    """Matching and rendering, with no livekit in sight (so it is trivially testable).

    ``call`` (when given) is read live: the step the call is in scopes the rules, its
    captured values are visible to replies, and a `goto` finds its transition tool."""

    def __init__(
        self, options: RulesOptions, variables: dict[str, Any], call: CallContext | None = None
    ) -> None:
        self.options = options
        self.variables = variables
        self.call = call
        self._patterns = [re.compile(rule.match, re.IGNORECASE) for rule in options.rules]
        # the match that called a tool, so the reply after the tool still sees `match`
        self._tool_context: dict[int, dict[str, Any]] = {}
        self._opened = False
        # a `goto` taken: its reply is said when the next step begins
        self._arriving: tuple[int, dict[str, Any]] | None = None

    def opening(self) -> RuleReply:
        self._opened = True
        return RuleReply(text=self._render(self.options.opening, {}))

    def arriving(self) -> bool:
        return self._arriving is not None

    def begin_step(self, last_utterance: str | None) -> RuleReply:
        """The LLM is asked to speak without a new caller line: the call opens, or a step
        begins. A step reached by a `goto` says that rule's reply; without one, the
        caller's last line is answered by the new step's own rules (not its gotos)."""
        in_flow = self.call is not None and self.call.step is not None
        if not in_flow or (not self._opened and self._arriving is None):
            return self.opening()
        self._opened = True
        arriving, self._arriving = self._arriving, None
        if arriving is None:
            return RuleReply()
        index, context = arriving
        rule = self.options.rules[index]
        if rule.reply:
            return RuleReply(text=self._render(rule.reply, context), rule_index=index)
        if last_utterance:
            return self.respond(last_utterance, transitions=False)
        return RuleReply()

    def transition_refused(self, error: str) -> RuleReply:
        """The goto's transition refused its captures: say why, stay in the step."""
        arriving, self._arriving = self._arriving, None
        rule = self.options.rules[arriving[0]] if arriving else None
        context = arriving[1] if arriving else {}
        template = (rule.on_error if rule else "") or self.options.default
        return RuleReply(text=self._render(template, {**context, "error": error}))

    def _active(self, rule: Rule, offered: frozenset[str] | None) -> bool:
        step = self.call.step if self.call is not None else None
        if rule.steps and step not in rule.steps:
            return False
        # e.g. a booking tool the current step does not offer
        return offered is None or not rule.tool or rule.tool in offered

    def respond(
        self, utterance: str, offered: frozenset[str] | None = None, *, transitions: bool = True
    ) -> RuleReply:
        self._opened = True
        for index, (rule, pattern) in enumerate(
            zip(self.options.rules, self._patterns, strict=True)
        ):
            if not self._active(rule, offered):
                continue
            transition = None
            if rule.goto is not None:
                transition = self.call.transition_tool(rule.goto) if self.call else None
                if not transitions or transition is None:
                    continue  # the current step has no way to that step
            found = pattern.search(utterance)
            if found is None:
                continue
            context = {
                "match": {**found.groupdict(), "text": found.group(0)},
                "utterance": utterance,
            }
            if transition is not None:
                values = {
                    key: self._render(value, context) if isinstance(value, str) else value
                    for key, value in rule.capture.items()
                }
                self._arriving = (index, context)
                return RuleReply(tool=transition, arguments=values, rule_index=index)
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
        flow: dict[str, Any] = {}
        if self.call is not None:
            # a value the flow declares but has not captured yet reads as None here, so a
            # reply can test it (`{% if captured.service %}`) on any path
            compiled = self.call.bot.flow
            captured = (
                compiled.conditions_context(self.call.captured)
                if compiled is not None
                else dict(self.call.captured)
            )
            flow = {"captured": captured, "step": self.call.step}
        return render_snippet(template, {**self.variables, **flow, **extra})


def create_llm(options: RulesOptions, call: CallContext) -> Any:
    from plugins.llm.rules_llm import RulesLLM

    return RulesLLM(RulesEngine(options, dict(call.variables), call))


@hookimpl
def register_providers(register: RegisterProvider) -> None:
    register(
        kind="llm",
        name="rules",
        factory=create_llm,
        options=RulesOptions,
        description="deterministic pattern -> reply/tool rules (offline, for demos and tests)",
    )
