"""The bot-file tables of a conversation flow.

    [flow]
    start = "triage"
    context = "keep"                     # at transitions: keep | reset | summary
    global_tools = ["end_call"]          # bound tools offered in every step

    [steps.triage]
    instructions = "Find out whether the caller wants to book or has an emergency."
    [[steps.triage.next]]
    to = "booking"
    when = "the caller wants an appointment"          # the LLM chooses: a tool
    capture = { patient_name = { type = "string", description = "the caller's name" } }

    [steps.booking]
    instructions = "dentist/booking.j2"
    tools = ["calendar_slots", "calendar_book"]
    [[steps.booking.next]]
    to = "wrap_up"
    after = "calendar_book"                           # the runtime decides, after the tool
    if = "result.booked"

    [steps.emergency]
    say = "I'm putting you through to our on-call dentist."
    then = "transfer_call"                            # a fixed line, then a tool or a step

Every name here is checked against the rest of the bot by `runtime.flow.compile`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from runtime.errors import type_choice
from runtime.identifiers import VARIABLE_NAME

ContextMode = Literal["keep", "reset", "summary"]
CaptureType = Literal["string", "number", "bool", "list"] | list[str]
CAPTURE_TYPES = ("string", "number", "bool", "list")
TransitionKind = Literal["llm", "after", "condition", "error"]
ANY_TOOL = "*"  # `on_error = "*"`: any tool of the step failing


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CaptureSpec(_Strict):
    """One value captured from the conversation. Written `name = "string"`,
    `name = ["morning", "afternoon"]` (allowed values) or as a table."""

    type: CaptureType = Field(
        "string",
        description='"string", "number", "bool", "list" (of strings) or a list of allowed values',
    )
    description: str = Field("", description="what the LLM is told this value is")
    required: bool = Field(True, description="the LLM must give it to take the transition")
    default: Any = Field(
        None, description="its value before it is captured (templates may then read it anywhere)"
    )

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: Any) -> Any:
        # one message naming the choices, not one per member of the union
        if isinstance(value, list):
            if not value:
                raise ValueError(
                    "an empty list of allowed values allows nothing: list the values the "
                    'LLM may give (e.g. ["morning", "afternoon"]), or use type = "string"'
                )
            if not all(isinstance(item, str) for item in value):
                raise ValueError("allowed values are strings: quote each one")
            twice = sorted({item for item in value if value.count(item) > 1})
            if twice:
                raise ValueError(
                    f"{', '.join(map(repr, twice))} is listed twice: list each allowed value once"
                )
            return value
        if value not in CAPTURE_TYPES:
            hint = type_choice(value, CAPTURE_TYPES) if isinstance(value, str) else ""
            raise ValueError(
                f"{value!r} is not a capture type: use "
                + ", ".join(f'"{t}"' for t in CAPTURE_TYPES)
                + ' or a list of allowed values (e.g. ["morning", "afternoon"])'
                + (f" ({hint.split('?')[0]}?)" if hint.startswith("did you mean") else "")
            )
        return value


def _capture_specs(value: Any) -> Any:
    """Shorthands: `name = "string"` and `name = ["a", "b"]` are `{ type = ... }`."""
    if not isinstance(value, dict):
        return value
    specs: dict[str, Any] = {}
    for name, spec in value.items():
        if not isinstance(name, str) or not VARIABLE_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid capture name (letters, digits, _)")
        # anything but a table is a type (a wrong one is told so, with the choices)
        specs[name] = spec if isinstance(spec, dict | CaptureSpec) else {"type": spec}
    return specs


class Transition(_Strict):
    """A way out of a step. Exactly one trigger: `when` (the LLM chooses it), `after` a tool
    (optionally with `if`), `if` alone (a condition over captured values), or `on_error`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    to: str = Field(description="the step entered")
    when: str | None = Field(
        None, description="the LLM takes this transition when this holds (plain words)"
    )
    name: str | None = Field(
        None, description="the tool name the LLM sees for a `when` transition (default go_to_<to>)"
    )
    after: str | None = Field(None, description="taken when this bound tool returns")
    condition: str | None = Field(
        None,
        alias="if",
        description="a Jinja expression: with `after`, over the tool's `result`; alone, over "
        "`captured` values (checked whenever they change)",
    )
    on_error: str | None = Field(
        None, description='taken when this tool fails ("*": any tool), or a transfer fails'
    )
    capture: dict[str, CaptureSpec] = Field(
        default_factory=dict, description="values the LLM gives when taking a `when` transition"
    )
    context: ContextMode | None = Field(
        None, description="what the next step remembers (default: the step's, then the flow's)"
    )

    _capture_specs = field_validator("capture", mode="before")(_capture_specs)

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str | None) -> str | None:
        if value is not None and not VARIABLE_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid tool name (letters, digits, _)")
        return value

    @model_validator(mode="after")
    def _one_trigger(self) -> Transition:
        triggers = [
            key
            for key, present in (
                ("when", self.when is not None),
                ("after", self.after is not None),
                ("on_error", self.on_error is not None),
            )
            if present
        ]
        if len(triggers) > 1:
            raise ValueError(
                f"give one trigger, not {' and '.join(triggers)}: `when` (the LLM chooses), "
                "`after` a tool (with an optional `if`), `if` alone, or `on_error`"
            )
        if not triggers and self.condition is None:
            raise ValueError(
                "say when to take it: `when` (plain words, the LLM chooses), `after` a tool, "
                "`if` (a condition over captured values) or `on_error` (a tool fails)"
            )
        if self.condition is not None and (self.when is not None or self.on_error is not None):
            raise ValueError("`if` goes with `after` or alone, not with `when` or `on_error`")
        if self.capture and self.when is None:
            raise ValueError(
                "only a `when` transition captures values (the LLM gives them); a tool "
                "sets values with `capture` on its [[tools]] entry"
            )
        if self.name is not None and self.when is None:
            raise ValueError("`name` is the tool name of a `when` transition")
        return self

    @property
    def kind(self) -> TransitionKind:
        if self.when is not None:
            return "llm"
        if self.after is not None:
            return "after"
        if self.on_error is not None:
            return "error"
        return "condition"

    def tool_name(self) -> str:
        return self.name or f"go_to_{self.to}"


class Step(_Strict):
    """One step of the conversation: what the LLM is told, what it may use, where it goes."""

    instructions: str = Field(
        "", description="added to the system prompt in this step: a file under prompts/ or text"
    )
    say: str = Field("", description="a line said on entering the step, without the LLM")
    then: str | None = Field(
        None, description="after `say`: the next step, or a bound tool to run (e.g. end_call)"
    )
    tools: list[str] = Field(default_factory=list, description="bound tools usable in this step")
    capture: dict[str, CaptureSpec] = Field(
        default_factory=dict,
        description="values the LLM records while in this step (a `remember` tool)",
    )
    context: ContextMode | None = Field(
        None, description="what this step remembers when entered (default: the flow's)"
    )
    next: list[Transition] = Field(default_factory=list, description="the ways out of this step")

    _capture_specs = field_validator("capture", mode="before")(_capture_specs)

    @model_validator(mode="after")
    def _then_needs_say(self) -> Step:
        if self.then is not None and not self.say:
            raise ValueError("`then` follows a fixed line: give the step a `say`")
        asks_llm = self.instructions or self.capture or any(t.kind != "error" for t in self.next)
        if self.then is not None and asks_llm:
            raise ValueError(
                "a step with `say` and `then` never asks the LLM: drop its `instructions`, "
                "`capture` and every `next` but `on_error` ones (or drop `then` to let the "
                "LLM talk after the line)"
            )
        return self


class FlowConfig(_Strict):
    start: str = Field(description="the step a call starts in")
    context: ContextMode = Field(
        "keep",
        description="at a transition, the next step keeps the whole conversation, resets to "
        "its own instructions, or resets with a summary of what was said",
    )
    global_tools: list[str] = Field(
        default_factory=list, description="bound tools usable in every step (end_call ...)"
    )
    summary: str = Field(
        "",
        description="the summary a `summary` context starts with (template over variables and "
        "`captured`); default: the bot's LLM summarizes (the `rules` LLM lists the captured "
        "values)",
    )
