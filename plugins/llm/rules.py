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

import jinja2
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runtime import (
    CallContext,
    RegisterProvider,
    check_snippet,
    hookimpl,
    regex_phrases,
    render_snippet,
    snippet_attributes,
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
    def _groups_exist(self) -> Rule:
        """`match.NAME` must be a named group of this rule's pattern (or `match.text`):
        the pattern is fixed, so a typo is found now, not in the middle of a call."""
        groups = sorted(re.compile(self.match).groupindex)
        texts = {"reply": self.reply, "on_error": self.on_error}
        for table in ("arguments", "capture"):
            texts |= {
                f"{table}.{key}": value
                for key, value in getattr(self, table).items()
                if isinstance(value, str)
            }
        if not self.tool and "result" in snippet_names(self.reply):
            raise ValueError(
                "reply reads `result`, which only a rule that calls a `tool` has (the "
                "tool's answer); call a tool, or drop `result` from the reply"
            )
        for key, text in texts.items():
            for name in sorted(snippet_attributes(text, "match") - {*groups, "text"}):
                named = ", ".join(groups) if groups else "none"
                raise ValueError(
                    f"{key} reads match.{name}, but the pattern has no group named {name!r} "
                    f"(its named groups: {named}; write (?P<{name}>...) in `match`, or fix "
                    "the name)"
                )
        return self

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

    def vocabulary(self, step: str | None) -> list[str]:
        """The words the rules active in ``step`` listen for, for speech recognizers
        biased toward what callers of this bot say (`runtime.speech_vocabulary`)."""
        return [
            phrase
            for rule in self.rules
            if not rule.steps or step in rule.steps
            for phrase in regex_phrases(rule.match)
        ]

    def referenced_steps(self) -> dict[str, tuple[list[str], str | None]]:
        """Per rule that names flow steps: (the steps it is scoped to, its `goto`), so
        validation can check the steps exist and each has that transition."""
        return {
            f"rules[{i}]": (rule.steps, rule.goto)
            for i, rule in enumerate(self.rules)
            if rule.steps or rule.goto
        }


class RuleFailed(Exception):
    """A rule's template failed on this call's data and there is nothing else to say: the
    turn fails like a provider error (the session apologizes; the error is recorded)."""


class _TemplateFailed(RuleFailed):
    """One template failed to render; its message names the key and the cause."""


@dataclass(frozen=True)
class RuleReply:
    """What the engine decided for one turn."""

    text: str = ""
    tool: str | None = None
    arguments: dict[str, Any] | None = None
    rule_index: int | None = None


_COMMA = re.compile(r",\s*")


def _without_commas(utterance: str) -> str:
    return _COMMA.sub(" ", utterance)


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
        return RuleReply(text=self._render("opening", self.options.opening, {}))

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
            return RuleReply(text=self._rule_text(index, "reply", context), rule_index=index)
        if last_utterance:
            return self.respond(last_utterance, transitions=False)
        return RuleReply()

    def transition_refused(self, error: str) -> RuleReply:
        """The goto's transition refused its captures: say why, stay in the step."""
        arriving, self._arriving = self._arriving, None
        if arriving is None or not self.options.rules[arriving[0]].on_error:
            return RuleReply(text=self._render("default", self.options.default, {"error": error}))
        index, context = arriving
        return RuleReply(text=self._rule_text(index, "on_error", {**context, "error": error}))

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
            # a recognizer's commas are not the caller's words ("two, fifteen, pm")
            found = pattern.search(utterance) or pattern.search(_without_commas(utterance))
            if found is None:
                continue
            context = {
                "match": {**found.groupdict(), "text": found.group(0)},
                "utterance": utterance,
            }
            if transition is not None or rule.tool:
                table = "capture" if transition is not None else "arguments"
                try:
                    values = self._values(index, table, context)
                except _TemplateFailed as failure:
                    return RuleReply(text=self._fallback(index, failure, context))
                if transition is not None:
                    self._arriving = (index, context)
                    return RuleReply(tool=transition, arguments=values, rule_index=index)
                self._tool_context[index] = context
                return RuleReply(tool=rule.tool, arguments=values, rule_index=index)
            return RuleReply(text=self._rule_text(index, "reply", context), rule_index=index)
        return RuleReply(
            text=self._render("default", self.options.default, {"utterance": utterance})
        )

    def after_tool(self, rule_index: int, output: str, is_error: bool) -> RuleReply:
        rule = self.options.rules[rule_index]
        context = self._tool_context.pop(rule_index, {})
        if is_error:
            if not rule.on_error:
                return RuleReply(
                    text=self._render("default", self.options.default, {"error": output})
                )
            return RuleReply(
                text=self._rule_text(rule_index, "on_error", {**context, "error": output})
            )
        try:
            result: Any = json.loads(output)
        except ValueError:
            result = output
        return RuleReply(text=self._rule_text(rule_index, "reply", {**context, "result": result}))

    def _values(self, index: int, table: str, context: dict[str, Any]) -> dict[str, Any]:
        """A rule's `arguments` or `capture`: string values rendered as templates."""
        values: dict[str, Any] = {}
        for key, value in getattr(self.options.rules[index], table).items():
            if isinstance(value, str):
                value = self._render(f"rules[{index}].{table}.{key}", value, context)
            values[key] = value
        return values

    def _rule_text(self, index: int, field: str, context: dict[str, Any]) -> str:
        """A rule's `reply` or `on_error`. A reply that fails on this call's data (a field
        the tool's result lacks) says the rule's `on_error` instead; when that fails too,
        or there is none, the turn fails like a provider error would."""
        try:
            return self._render(
                f"rules[{index}].{field}", getattr(self.options.rules[index], field), context
            )
        except _TemplateFailed as failure:
            if field == "on_error":
                raise RuleFailed(str(failure)) from None
            return self._fallback(index, failure, context)

    def _fallback(self, index: int, failure: _TemplateFailed, context: dict[str, Any]) -> str:
        if self.call is not None:
            self.call.add_event("error", source="rules", error=str(failure))
        if not self.options.rules[index].on_error:
            raise RuleFailed(str(failure))
        return self._rule_text(index, "on_error", {**context, "error": str(failure)})

    def _render(self, key: str, template: str, extra: dict[str, Any]) -> str:
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
        try:
            return render_snippet(template, {**self.variables, **flow, **extra})
        except (jinja2.TemplateError, ValueError, TypeError, LookupError) as exc:
            raise _TemplateFailed(f"llm.{key}: cannot render {template!r}: {exc}") from None


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
