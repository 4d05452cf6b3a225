"""Run one scenario: a real text-mode AgentSession with the bot's LLM and tools (mocked
ones answer from the file), turn by turn, checked with livekit's ``RunResult.expect``.

A scenario never stops at the first surprise of a turn: every expectation of the failing
turn is reported (expected vs got), then the scenario stops, because later turns would
only fail in its wake.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runtime.call import CallContext, CallOverrides, CallRequest
from runtime.call_control import SimulatedControl
from runtime.errors import DialplanError, suggest
from runtime.record import CallRecord, DisconnectedBy
from runtime.scenario_file import Scenario, ToolMock, Turn
from runtime.tools import ToolFailure, ToolHandler

if TYPE_CHECKING:
    from livekit.agents import llm
    from livekit.agents.voice.run_result import RunResult

    from runtime.catalog import CatalogSnapshot
    from runtime.registry import Registry
    from runtime.session import CallSession

# a caller line -> what the bot heard (`dialplan test --voice`: over a phone line)
Hear = Callable[[str, CallContext], Awaitable[str]]
TURN_TIMEOUT = 30.0  # seconds; a bot that never answers fails its turn instead of hanging
# timeline events that say why the bot said nothing (or not what it should)
FAILURE_EVENTS = frozenset({"turn_failed", "provider_failed", "flow_error"})


@dataclass(frozen=True)
class Mismatch:
    """One expectation that did not hold."""

    where: str  # "greeting", "turn 2", "setup"
    said: str | None  # the caller's line of that turn
    expected: str
    got: str


@dataclass
class ScenarioResult:
    bot_id: str
    name: str
    mismatches: list[Mismatch] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # expectations not checked, and why
    seconds: float = 0.0
    turns_run: int = 0
    record: CallRecord | None = None

    @property
    def passed(self) -> bool:
        return not self.mismatches


def mock_handler(mock: ToolMock) -> ToolHandler:
    async def answer(arguments: dict[str, Any], call: CallContext) -> Any:
        if mock.error is not None:
            raise ToolFailure(mock.error)
        return mock.result if mock.result is not None else "ok"

    return answer


async def run_scenario(
    snapshot: CatalogSnapshot,
    registry: Registry,
    bot_id: str,
    scenario: Scenario,
    *,
    judge: Callable[[CallContext], llm.LLM] | None = None,
    hear: Hear | None = None,
) -> ScenarioResult:
    """``hear``: what the bot hears of each caller line (default: the line, as typed)."""
    from runtime.resolve import plan_call
    from runtime.session import build_call_session

    result = ScenarioResult(bot_id, scenario.name)
    started = time.perf_counter()
    try:
        # a scenario tests the conversation, at any hour: the schedule is not under test
        request = CallRequest(
            bot=bot_id,
            variables=scenario.variables,
            overrides=CallOverrides(ignore_schedule=True),
            caller=scenario.caller,
            callee=scenario.callee,
        )
        plan = plan_call(snapshot, request, registry)
    except DialplanError as exc:
        result.mismatches.append(Mismatch("setup", None, "the call starts", str(exc)))
        return result
    bound = sorted(tool.name for tool in plan.tools)
    unknown = sorted(set(scenario.mocks) - set(bound))
    for name in unknown:
        result.mismatches.append(
            Mismatch(
                "setup",
                None,
                f"mocks.{name}: a tool the bot binds",
                f"bot {bot_id!r} binds no tool {name!r}; "
                + suggest(name, bound, what="bound tools"),
            )
        )
    if unknown:
        return result
    handlers = {name: mock_handler(mock) for name, mock in scenario.mocks.items()}
    try:
        call_session = build_call_session(
            plan,
            text_only=True,
            tool_handlers=handlers,
            start_step=scenario.start_step,
            start_captured=scenario.captured,
        )
    except DialplanError as exc:
        result.mismatches.append(Mismatch("setup", None, "the call starts", str(exc)))
        return result
    call_session.call.control = SimulatedControl(scenario.transfer_fails)
    runner = _Runner(call_session, result, judge, hear)
    try:
        await runner.run(scenario)
    except Exception as exc:  # a bug or a crash is this scenario's failure, not the suite's
        where = f"turn {result.turns_run + 1}" if result.turns_run else "greeting"
        result.mismatches.append(
            Mismatch(where, None, "the call to go on", f"{type(exc).__name__}: {exc}")
        )
    finally:
        try:
            result.record = await call_session.close(
                DisconnectedBy.CUSTOMER, cause="the scenario's caller hung up"
            )
        except Exception as exc:
            result.mismatches.append(
                Mismatch("hang-up", None, "a call record", f"{type(exc).__name__}: {exc}")
            )
        result.seconds = round(time.perf_counter() - started, 3)
    return result


class _Runner:
    def __init__(
        self,
        call_session: CallSession,
        result: ScenarioResult,
        judge: Callable[[CallContext], llm.LLM] | None,
        hear: Hear | None = None,
    ) -> None:
        self.call_session = call_session
        self.hear = hear
        self.call = call_session.call
        self.result = result
        self.judge = judge
        self.heard = 0  # bot transcript entries already checked
        self.seen_events = 0  # timeline events already looked at for failures
        self.failure = ""  # why the turn being checked failed, if it did

    def mismatch(self, where: str, said: str | None, expected: str, got: str) -> None:
        self.result.mismatches.append(Mismatch(where, said, expected, got + self.failure))

    def bot_lines(self) -> str:
        """What the bot said since the last check (replies, goodbyes). Why a turn failed,
        when one did (a provider error, a template failing on this call), is kept aside
        for the report of any mismatch of this turn, never matched against."""
        lines = [e.text for e in self.call.transcript[self.heard :] if e.role == "bot"]
        self.heard = len(self.call.transcript)
        failures = [
            str(event.data.get("error"))
            for event in self.call.events[self.seen_events :]
            if event.type in FAILURE_EVENTS
        ]
        self.seen_events = len(self.call.events)
        self.failure = (
            " [the turn failed: " + "; ".join(dict.fromkeys(failures)) + "]" if failures else ""
        )
        return " / ".join(line for line in lines if line) or "(nothing)"

    async def run(self, scenario: Scenario) -> None:
        await asyncio.wait_for(self.call_session.start(), TURN_TIMEOUT)
        await asyncio.wait_for(self.call_session.session.wait_for_idle(), TURN_TIMEOUT)
        greeting = self.bot_lines()
        if scenario.expect_greeting and not re.search(scenario.expect_greeting, greeting):
            self.mismatch("greeting", None, f"/{scenario.expect_greeting}/", greeting)
            return
        for number, turn in enumerate(scenario.turns, start=1):
            where = f"turn {number}"
            end = self.call.end_request
            if end is not None:
                self.mismatch(where, turn.say, "the call still going", _ended(end.disconnected_by))
                return
            heard = turn.say if self.hear is None else await self.hear(turn.say, self.call)
            # a mismatch shows what the bot heard when that is not what the caller said
            said = turn.say if heard == turn.say else f"{turn.say} [heard: {heard or '(nothing)'}]"
            if not heard:  # on a call, the bot would not have answered at all
                self.mismatch(where, said, "words the bot heard", "nothing recognized")
                return
            try:
                run = await asyncio.wait_for(self.call_session.say_text(heard), TURN_TIMEOUT)
            except TimeoutError:
                self.mismatch(where, said, "a reply", f"no reply within {TURN_TIMEOUT:.0f} s")
                return
            self.result.turns_run = number
            before = len(self.result.mismatches)
            await self.check_turn(where, turn, run, said)
            if len(self.result.mismatches) > before:
                return

    async def check_turn(self, where: str, turn: Turn, run: RunResult[Any], said: str) -> None:
        reply = self.bot_lines()
        if turn.expect_reply is not None and not re.search(turn.expect_reply, reply):
            self.mismatch(where, said, f"a reply matching /{turn.expect_reply}/", reply)
        if turn.expect_no_reply and reply != "(nothing)":
            self.mismatch(where, said, "no reply", reply)
        calls = _tool_calls(run)
        if turn.expect_tool is not None:
            try:
                run.expect.contains_function_call(
                    name=turn.expect_tool.name,
                    **(
                        {"arguments": turn.expect_tool.arguments}
                        if turn.expect_tool.arguments is not None
                        else {}
                    ),
                )
            except AssertionError:
                expected = turn.expect_tool.name + (
                    json.dumps(turn.expect_tool.arguments)
                    if turn.expect_tool.arguments is not None
                    else "(...)"
                )
                self.mismatch(where, said, f"a call of {expected}", ", ".join(calls) or "no tool")
        if turn.expect_no_tool and calls:
            self.mismatch(where, said, "no tool call", ", ".join(calls))
        if turn.expect_end is not None:
            end = self.call.end_request
            got = _ended(end.disconnected_by) if end else "the call still going"
            if end is None or end.disconnected_by != turn.expect_end:
                self.mismatch(where, said, _ended(turn.expect_end), got)
        if turn.expect_step is not None and self.call.step != turn.expect_step:
            self.mismatch(where, said, f"step {turn.expect_step!r}", f"step {self.call.step!r}")
        for name, value in (turn.expect_captured or {}).items():
            got = self.call.captured.get(name, "(not captured)")
            if got != value:
                self.mismatch(where, said, f"captured.{name} = {value!r}", repr(got))
        if turn.expect_intent is not None:
            await self.check_intent(where, said, turn.expect_intent, run)

    async def check_intent(self, where: str, said: str, intent: str, run: RunResult[Any]) -> None:
        if self.judge is None:
            self.result.skipped.append(f"{where}: intent {intent!r} (no judge LLM: --judge)")
            return
        try:
            message = run.expect.contains_message(role="assistant")
            await message.judge(self.judge(self.call), intent=intent)
        except AssertionError as exc:
            self.mismatch(where, said, f"intent: {intent}", _first_line(str(exc)))


def _tool_calls(run: RunResult[Any]) -> list[str]:
    from livekit.agents.voice.run_result import FunctionCallEvent

    return [
        f"{event.item.name}({event.item.arguments})"
        for event in run.events
        if isinstance(event, FunctionCallEvent)
    ]


def _ended(reason: DisconnectedBy) -> str:
    return f"the call ended (disconnected_by = {reason.value})"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "(no reason given)"
