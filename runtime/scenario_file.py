"""Scenario files: a bot's conversations pinned as tests, ``bots/<id>.scenarios.toml``.

[[scenarios]]
name = "books a cleaning"
variables = { caller_name = "Ann" }
expect_greeting = "Hi Ann"

[scenarios.mocks.calendar_slots]        # this tool answers without running
result = { date = "2026-11-23", slots = ["09:00", "09:30"] }

[[scenarios.turns]]
say = "can I come in on monday?"
expect_reply = "09:00"                  # a regular expression, searched
expect_tool = { name = "calendar_slots", arguments = { date = "monday" } }

[[scenarios.turns]]
say = "thanks, bye"
expect_end = "bot"                      # the call ends, with this disconnected_by

A bot with a flow can be tested one step at a time, and its moves checked:

[[scenarios]]
name = "books from the booking step"
start_step = "booking"                  # no greeting: the call starts in this step
captured = { service = "cleaning" }     # as if captured on the way here
transfer_fails = "486 Busy Here"        # a transfer on this call does not connect

[[scenarios.turns]]
say = "book 9:00 on monday for Ann Lee"
expect_step = "confirmation"            # the step the call is in after the turn
expect_captured = { booking_ref = "BK7Q2" }
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runtime import toml_parser
from runtime.catalog import SCENARIO_SUFFIX
from runtime.errors import Problem
from runtime.record import DisconnectedBy
from runtime.toml_problems import located_problem, toml_problem


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return value


class ToolMock(_Strict):
    """What a mocked tool answers instead of running: a result, or an error the LLM sees."""

    result: Any = None
    error: str | None = None

    @model_validator(mode="after")
    def _one_outcome(self) -> ToolMock:
        if self.result is not None and self.error is not None:
            raise ValueError("give either `result` or `error`, not both")
        return self


class ExpectedTool(_Strict):
    name: str
    arguments: dict[str, Any] | None = Field(
        None, description="these keys must have these values (other keys may exist)"
    )


class Turn(_Strict):
    say: str = Field(description="what the caller says")
    expect_reply: str | None = Field(None, description="regex searched in the bot's reply")
    expect_no_reply: bool = False
    expect_tool: ExpectedTool | None = None
    expect_no_tool: bool = False
    expect_end: DisconnectedBy | None = Field(None, description="the call ends, for this reason")
    expect_intent: str | None = Field(
        None, description="judged by an LLM when one is configured (`dialplan test --judge`)"
    )
    expect_step: str | None = Field(None, description="the flow step the call is in after it")
    expect_captured: dict[str, Any] | None = Field(
        None, description="these captured values, exactly (others may exist)"
    )

    _valid_reply = field_validator("expect_reply")(_regex)

    @field_validator("expect_tool", mode="before")
    @classmethod
    def _tool_name_alone(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class Scenario(_Strict):
    name: str
    variables: dict[str, Any] = Field(default_factory=dict)
    mocks: dict[str, ToolMock] = Field(default_factory=dict, description="by tool name")
    expect_greeting: str | None = None
    start_step: str | None = Field(
        None, description="start the call in this flow step (no greeting), to test it alone"
    )
    captured: dict[str, Any] = Field(
        default_factory=dict, description="captured values the call starts with"
    )
    transfer_fails: str | None = Field(
        None, description="transfers on this call fail with this cause (e.g. a SIP status)"
    )
    caller: str | None = Field(None, description="the caller's number (call.caller)")
    callee: str | None = Field(None, description="the number called (call.callee)")
    turns: list[Turn] = Field(min_length=1)

    _valid_greeting = field_validator("expect_greeting")(_regex)

    @model_validator(mode="after")
    def _greeting_needs_start(self) -> Scenario:
        if self.start_step is not None and self.expect_greeting is not None:
            raise ValueError(
                "a scenario that starts in a step hears no greeting: drop `expect_greeting`"
            )
        return self

    @model_validator(mode="after")
    def _end_is_last(self) -> Scenario:
        for index, turn in enumerate(self.turns[:-1]):
            if turn.expect_end is not None:
                raise ValueError(
                    f"turns[{index}] expects the call to end, but turns follow it; "
                    "move `expect_end` to the last turn"
                )
        return self


class ScenarioFile(_Strict):
    bot: str | None = Field(None, description="default: the file name before .scenarios.toml")
    scenarios: list[Scenario] = Field(min_length=1)


def bot_id_of(path: Path) -> str:
    return path.name[: -len(SCENARIO_SUFFIX)]


def load_scenario_file(path: Path) -> ScenarioFile | list[Problem]:
    try:
        data = toml_parser.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return [Problem(path, f"cannot read the file: {exc.strerror}")]
    except toml_parser.TOMLDecodeError as exc:
        return [toml_problem(path, exc)]
    data.setdefault("bot", bot_id_of(path))
    try:
        return ScenarioFile.model_validate(data)
    except ValidationError as exc:
        return [located_problem(path, "", ScenarioFile, error) for error in exc.errors()]


def scenario_files(bots_dir: Path, bot_ids: list[str] | None = None) -> list[Path]:
    """The scenario files beside the bots (all, or those of ``bot_ids``)."""
    found = sorted(bots_dir.glob(f"*{SCENARIO_SUFFIX}"))
    if bot_ids:
        found = [path for path in found if bot_id_of(path) in bot_ids]
    return found
