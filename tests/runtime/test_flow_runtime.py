"""Flows at run time, in real text-mode AgentSessions: transitions chosen by an LLM (a
scripted one on livekit's real base classes, registered as a provider by a plugin, that
answers with text or tool calls and remembers what it was offered), transitions the runtime
takes after tools and on conditions, captured values, the three context modes, failures
that must never hang or crash a call, and reloads that must not touch a running call."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from livekit.agents import APIConnectOptions, llm
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS, NOT_GIVEN
from pydantic import BaseModel, ConfigDict

from runtime import CallContext, RegisterProvider, hookimpl
from runtime.call import CallOverrides, CallRequest
from runtime.catalog import CatalogSnapshot, load_catalog
from runtime.dispositions import apply_dispositions
from runtime.record import CallRecord, DisconnectedBy
from runtime.registry import Registry, load_registry
from runtime.resolve import plan_call
from runtime.session import CallSession, build_call_session
from runtime.tools import ToolFailure

# -- an LLM that calls tools on cue -----------------------------------------------------


@dataclass(frozen=True)
class Call:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass
class Seen:
    """One request the LLM got: its system prompt, the tools offered, the messages."""

    system: str
    tools: list[str]
    messages: list[tuple[str, str]]


@dataclass
class Script:
    replies: list[str | Call] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)


class ToolCallingLLM(llm.LLM):
    def __init__(self, script: Script) -> None:
        super().__init__()
        self.script = script

    @property
    def model(self) -> str:
        return "tool-calling-1"

    def chat(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool] | None = None,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
        parallel_tool_calls: Any = NOT_GIVEN,
        tool_choice: Any = NOT_GIVEN,
        extra_kwargs: Any = NOT_GIVEN,
    ) -> _Stream:
        messages = [
            (item.role, item.text_content or "")
            for item in chat_ctx.items
            if isinstance(item, llm.ChatMessage)
        ]
        system = next((text for role, text in messages if role == "system"), "")
        names = [t.info.name for t in tools or [] if hasattr(t, "info")]
        self.script.seen.append(Seen(system, names, messages))
        reply = self.script.replies.pop(0) if self.script.replies else ""
        return _Stream(self, reply, chat_ctx=chat_ctx, tools=tools or [], conn_options=conn_options)


class _Stream(llm.LLMStream):
    def __init__(self, model: ToolCallingLLM, reply: str | Call, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self._reply = reply

    async def _run(self) -> None:
        if isinstance(self._reply, Call):
            call = llm.FunctionToolCall(
                name=self._reply.name,
                arguments=json.dumps(self._reply.arguments),
                call_id=f"call_{id(self)}",
            )
            delta = llm.ChoiceDelta(role="assistant", tool_calls=[call])
        else:
            delta = llm.ChoiceDelta(role="assistant", content=self._reply or None)
        self._event_ch.send_nowait(llm.ChatChunk(id="r", delta=delta))


class ScriptName(BaseModel):
    model_config = ConfigDict(extra="forbid")
    script: str = "main"


class ToolCallingPlugin:
    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}

    def script(self, *replies: str | Call, name: str = "main") -> Script:
        self.scripts[name] = Script(list(replies))
        return self.scripts[name]

    @hookimpl
    def register_providers(self, register: RegisterProvider) -> None:
        register(kind="llm", name="scripted", factory=self.create, options=ScriptName)

    def create(self, options: ScriptName, call: CallContext) -> ToolCallingLLM:
        return ToolCallingLLM(self.scripts[options.script])


@pytest.fixture
def llm_plugin() -> ToolCallingPlugin:
    return ToolCallingPlugin()


@pytest.fixture
def flow_registry(llm_plugin: ToolCallingPlugin) -> Registry:
    return load_registry(extra_plugins=[("tool-calling-llm", llm_plugin)])


# -- a small clinic flow ------------------------------------------------------------------

CLINIC = """
description = "clinic"
[prompt]
system = "You are the clinic's phone assistant."
context = "The caller's number is {{{{ call.caller or 'unknown' }}}}."
greeting = "Clinic, hello."
[flow]
start = "triage"
context = "{context}"
global_tools = ["end_call"]
[steps.triage]
instructions = "Triage the call."
[[steps.triage.next]]
to = "booking"
when = "the caller wants an appointment"
capture.patient = {{ type = "string", description = "the caller's name" }}
capture.visit = ["cleaning", "filling"]
[steps.booking]
instructions = "Book for {{{{ captured.patient }}}} ({{{{ captured.visit }}}})."
tools = ["book"]
[[steps.booking.next]]
to = "done"
after = "book"
if = "result.booked"
[[steps.booking.next]]
to = "sorry"
on_error = "book"
[steps.done]
say = "Booked, {{{{ captured.patient }}}}: reference {{{{ captured.ref }}}}."
then = "end_call"
[steps.sorry]
say = "The calendar is down."
then = "end_call"
[llm]
provider = "scripted"
[[tools]]
use = "end_call"
goodbye = "Bye."
[[tools]]
use = "calendar_book"
name = "book"
database = "var/cal.sqlite"
timezone = "UTC"
hours = {{ "mon-sun" = "00:00-24:00" }}
capture = {{ ref = "result.reference" }}
"""


def snapshot_of(bot_dir: Callable[..., Path], registry: Registry, toml: str) -> CatalogSnapshot:
    bots = bot_dir("clinic", toml)
    snapshot = load_catalog(bots, registry)
    assert not snapshot.problems, "\n".join(map(str, snapshot.problems))
    return snapshot


def start(
    snapshot: CatalogSnapshot,
    registry: Registry,
    handlers: dict[str, Any] | None = None,
    **options: Any,
) -> CallSession:
    request = CallRequest(bot="clinic", overrides=CallOverrides(ignore_schedule=True))
    plan = plan_call(snapshot, request, registry)
    return build_call_session(plan, tool_handlers=handlers, **options)


async def booked(arguments: dict[str, Any], call: CallContext) -> dict[str, Any]:
    return {"booked": True, "reference": "R42", "name": arguments.get("name")}


async def calendar_down(arguments: dict[str, Any], call: CallContext) -> Any:
    raise ToolFailure("calendar unreachable")


async def converse(session: CallSession, *lines: str) -> CallRecord:
    await session.start()
    await session.session.wait_for_idle()
    for line in lines:
        await session.say_text(line)
        if session.call.end_request is not None:
            break
    return await session.close()


def entered(record: CallRecord) -> list[tuple[str | None, str]]:
    return [(e.data.get("from"), e.data["step"]) for e in record.events if e.type == "step_entered"]


# -- transitions -----------------------------------------------------------------------


async def test_llm_transition_with_captures_then_a_tool_transition_then_a_fixed_line(
    bot_dir: Callable[..., Path], flow_registry: Registry, llm_plugin: ToolCallingPlugin
) -> None:
    script = llm_plugin.script(
        Call("go_to_booking", {"patient": "Ann Lee", "visit": "Cleaning"}),
        "Which day?",  # booking opens (generate_reply on entering)
        Call("book", {"date": "tomorrow", "time": "10:00", "name": "Ann Lee"}),
    )
    snapshot = snapshot_of(bot_dir, flow_registry, CLINIC.format(context="keep"))
    session = start(snapshot, flow_registry, {"book": booked})
    record = await converse(session, "I'd like a cleaning, I'm Ann Lee", "tomorrow at ten")

    assert entered(record) == [(None, "triage"), ("triage", "booking"), ("booking", "done")]
    assert record.steps == ["triage", "booking", "done"] and record.step == "done"
    # the allowed value comes back as declared, whatever case the LLM used
    assert record.captured == {"patient": "Ann Lee", "visit": "cleaning", "ref": "R42"}
    assert record.disconnected_by == DisconnectedBy.BOT.value
    said = [e.text for e in record.transcript if e.role == "bot"]
    assert said[-2:] == ["Booked, Ann Lee: reference R42.", "Bye."]
    # the step the call moved to speaks: the booking step is not asked to answer the tool
    assert len(script.seen) == 3
    # each step's agent: its instructions after the static prompt, its own tools
    triage, booking = script.seen[0], script.seen[1]
    assert triage.system.startswith("You are the clinic's phone assistant.\n\nTriage the call.")
    assert triage.system.endswith("The caller's number is unknown.")
    assert sorted(triage.tools) == ["end_call", "go_to_booking"]
    assert "Book for Ann Lee (cleaning)." in booking.system
    assert sorted(booking.tools) == ["book", "end_call"]
    step_events = [e for e in record.events if e.type == "step_entered" and "latency_ms" in e.data]
    assert all(e.data["latency_ms"] >= 0 and e.data["transition"] for e in step_events)
    assert step_events[0].data["reason"] == "chosen: the caller wants an appointment"


async def test_arguments_that_fail_the_capture_types_are_an_error_the_llm_recovers_from(
    bot_dir: Callable[..., Path], flow_registry: Registry, llm_plugin: ToolCallingPlugin
) -> None:
    script = llm_plugin.script(
        Call("go_to_booking", {"visit": "polish"}),  # no patient, a value not allowed
        Call("go_to_booking", {"patient": "Bo", "visit": "filling"}),
        "Which day?",
    )
    snapshot = snapshot_of(bot_dir, flow_registry, CLINIC.format(context="keep"))
    record = await converse(start(snapshot, flow_registry), "a filling please, Bo")

    refused = [e.data for e in record.events if e.type == "transition_refused"]
    assert len(refused) == 1
    assert "patient: required" in refused[0]["error"]
    assert "visit: expected one of 'cleaning', 'filling', got 'polish'" in refused[0]["error"]
    assert record.steps == ["triage", "booking"]
    assert record.captured == {"patient": "Bo", "visit": "filling"}
    # the LLM saw the refusal as its tool's error output before trying again
    retry = script.seen[1].messages
    assert all(role != "system" or "Triage" in text for role, text in retry)


async def test_a_tool_failure_takes_the_steps_on_error_way(
    bot_dir: Callable[..., Path], flow_registry: Registry, llm_plugin: ToolCallingPlugin
) -> None:
    llm_plugin.script(
        Call("go_to_booking", {"patient": "Ann", "visit": "cleaning"}),
        "Which day?",
        Call("book", {"date": "tomorrow", "time": "10:00", "name": "Ann"}),
    )
    snapshot = snapshot_of(bot_dir, flow_registry, CLINIC.format(context="keep"))
    session = start(snapshot, flow_registry, {"book": calendar_down})
    record = await converse(session, "cleaning for Ann", "tomorrow at ten")
    assert record.steps == ["triage", "booking", "sorry"]
    assert [e.text for e in record.transcript if e.role == "bot"][-2:] == [
        "The calendar is down.",
        "Bye.",
    ]
    reason = [e.data["reason"] for e in record.events if e.type == "step_entered"][-1]
    assert reason == "book failed: calendar unreachable"


async def test_an_after_transition_whose_condition_is_false_stays_in_the_step(
    bot_dir: Callable[..., Path], flow_registry: Registry, llm_plugin: ToolCallingPlugin
) -> None:
    async def not_booked(arguments: dict[str, Any], call: CallContext) -> dict[str, Any]:
        return {"booked": False, "reference": None}

    llm_plugin.script(
        Call("go_to_booking", {"patient": "Ann", "visit": "cleaning"}),
        "Which day?",
        Call("book", {"date": "tomorrow", "time": "10:00", "name": "Ann"}),
        "That did not work, another time?",
    )
    snapshot = snapshot_of(bot_dir, flow_registry, CLINIC.format(context="keep"))
    record = await converse(
        start(snapshot, flow_registry, {"book": not_booked}), "cleaning for Ann", "ten"
    )
    assert record.step == "booking"
    assert "ref" not in record.captured  # a capture reading `null` sets nothing
    assert record.transcript[-1].text == "That did not work, another time?"


async def test_a_condition_that_fails_to_evaluate_is_logged_and_the_call_stays(
    bot_dir: Callable[..., Path], flow_registry: Registry, llm_plugin: ToolCallingPlugin
) -> None:
    toml = CLINIC.format(context="keep").replace('if = "result.booked"', 'if = "result.booked > 1"')
    llm_plugin.script(
        Call("go_to_booking", {"patient": "Ann", "visit": "cleaning"}),
        "Which day?",
        Call("book", {"date": "tomorrow", "time": "10:00", "name": "Ann"}),
        "Anything else?",
    )

    async def odd(arguments: dict[str, Any], call: CallContext) -> dict[str, Any]:
        return {"booked": "yes", "reference": "R1"}  # "yes" > 1 cannot be compared

    snapshot = snapshot_of(bot_dir, flow_registry, toml)
    record = await converse(start(snapshot, flow_registry, {"book": odd}), "Ann", "ten")
    errors = [e.data for e in record.events if e.type == "flow_error"]
    assert errors and errors[0]["key"] == "steps.booking.next[0].if"
    assert "cannot evaluate 'result.booked > 1'" in errors[0]["error"]
    assert record.step == "booking"
    assert record.transcript[-1].text == "Anything else?"


# -- context at a transition ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["keep", "reset", "summary"])
async def test_what_the_next_step_remembers(
    mode: str,
    bot_dir: Callable[..., Path],
    flow_registry: Registry,
    llm_plugin: ToolCallingPlugin,
) -> None:
    replies: list[str | Call] = [Call("go_to_booking", {"patient": "Ann", "visit": "cleaning"})]
    if mode == "summary":
        replies.append("Ann wants a cleaning.")  # the summary request
    replies.append("Which day?")
    script = llm_plugin.script(*replies)
    snapshot = snapshot_of(bot_dir, flow_registry, CLINIC.format(context=mode))
    record = await converse(start(snapshot, flow_registry), "I'm Ann and I need a cleaning")
    assert record.steps == ["triage", "booking"]
    booking = script.seen[-1]
    texts = [text for _role, text in booking.messages]
    if mode == "keep":
        assert "I'm Ann and I need a cleaning" in texts
        assert "Clinic, hello." in texts
    elif mode == "reset":
        assert [role for role, _ in booking.messages] == ["system"]
    else:
        summary_request = script.seen[1]
        assert "Summarize this phone conversation" in summary_request.messages[0][1]
        assert "user: I'm Ann and I need a cleaning" in summary_request.messages[1][1]
        assert "I'm Ann and I need a cleaning" not in texts
        assert "Summary of the call so far: Ann wants a cleaning." in texts


async def test_a_summary_template_is_used_as_written(
    bot_dir: Callable[..., Path], flow_registry: Registry, llm_plugin: ToolCallingPlugin
) -> None:
    toml = CLINIC.format(context="summary").replace(
        'global_tools = ["end_call"]',
        'global_tools = ["end_call"]\nsummary = "Patient {{ captured.patient }} wants a '
        '{{ captured.visit }}."',
    )
    script = llm_plugin.script(Call("go_to_booking", {"patient": "Ann", "visit": "cleaning"}), "")
    snapshot = snapshot_of(bot_dir, flow_registry, toml)
    await converse(start(snapshot, flow_registry), "Ann, cleaning")
    texts = [text for _role, text in script.seen[-1].messages]
    assert "Summary of the call so far: Patient Ann wants a cleaning." in texts
    assert len(script.seen) == 2  # no LLM request for the summary


# -- calls keep their version; steps can be entered directly ------------------------------


async def test_a_reload_never_changes_a_running_call(
    bot_dir: Callable[..., Path], flow_registry: Registry, llm_plugin: ToolCallingPlugin
) -> None:
    script = llm_plugin.script(
        Call("go_to_booking", {"patient": "Ann", "visit": "cleaning"}), "Which day?"
    )
    snapshot = snapshot_of(bot_dir, flow_registry, CLINIC.format(context="keep"))
    session = start(snapshot, flow_registry)
    await session.start()
    # the bot file changes under the running call: new booking instructions
    changed = CLINIC.format(context="keep").replace("Book for", "Reserve for")
    reloaded = snapshot_of(bot_dir, flow_registry, changed)
    assert reloaded.get("clinic").version != snapshot.get("clinic").version
    await session.say_text("cleaning for Ann")
    record = await session.close()
    assert record.bot_version == snapshot.get("clinic").version
    assert "Book for Ann (cleaning)." in script.seen[-1].system


async def test_a_call_can_start_in_any_step_with_values_captured(
    bot_dir: Callable[..., Path], flow_registry: Registry, llm_plugin: ToolCallingPlugin
) -> None:
    script = llm_plugin.script("Which day?")
    snapshot = snapshot_of(bot_dir, flow_registry, CLINIC.format(context="keep"))
    session = start(
        snapshot,
        flow_registry,
        start_step="booking",
        start_captured={"patient": "Zoe", "visit": "filling"},
    )
    record = await converse(session, "hello")
    assert record.steps == ["booking"]
    assert "Clinic, hello." not in [e.text for e in record.transcript]  # no greeting
    assert "Book for Zoe (filling)." in script.seen[0].system


# -- conditions over captured values --------------------------------------------------------

COLLECT = """
[prompt]
system = "Collect details."
[flow]
start = "collect"
[steps.collect]
instructions = "Ask for name and day."
capture = { name = "string", day = "string" }
[[steps.collect.next]]
to = "confirm"
if = "captured.name and captured.day"
[steps.confirm]
say = "So, {{ captured.name }} on {{ captured.day }}."
then = "end_call"
[llm]
provider = "scripted"
[[tools]]
use = "end_call"
"""


async def test_a_condition_over_captured_values_moves_on_once_it_holds(
    bot_dir: Callable[..., Path], flow_registry: Registry, llm_plugin: ToolCallingPlugin
) -> None:
    script = llm_plugin.script(
        Call("remember", {"name": "Ann"}), "And which day?", Call("remember", {"day": "Friday"})
    )
    bots = bot_dir("clinic", COLLECT)
    snapshot = load_catalog(bots, flow_registry)
    assert not snapshot.problems, snapshot.problems
    record = await converse(start(snapshot, flow_registry), "I'm Ann", "Friday")
    assert record.steps == ["collect", "confirm"]
    assert record.captured == {"name": "Ann", "day": "Friday"}
    assert [e.text for e in record.transcript if e.role == "bot"][-1] == "So, Ann on Friday."
    assert "remember" in script.seen[0].tools


LOOP = """
[prompt]
system = "Loop."
[flow]
start = "a"
[steps.a]
capture = { x = "string" }
[[steps.a.next]]
to = "b"
if = "captured.x"
[steps.b]
[[steps.b.next]]
to = "a"
if = "captured.x"
[llm]
provider = "scripted"
"""


async def test_conditions_that_keep_firing_into_each_other_stop(
    bot_dir: Callable[..., Path], flow_registry: Registry, llm_plugin: ToolCallingPlugin
) -> None:
    llm_plugin.script(Call("remember", {"x": "1"}), "still here")
    bots = bot_dir("clinic", LOOP)
    snapshot = load_catalog(bots, flow_registry)
    assert not snapshot.problems, snapshot.problems
    record = await converse(start(snapshot, flow_registry), "go")
    loops = [e.data for e in record.events if e.type == "flow_error"]
    assert loops and "condition transitions in a row" in loops[0]["error"]
    assert len(record.steps) <= 13  # the start, then at most ten hops and a few more
    assert record.disconnected_by == DisconnectedBy.CUSTOMER.value  # no crash, no hang


# -- values a tool sets, without a flow ---------------------------------------------------

FLAT = """
[prompt]
system = "Book things."
[llm]
provider = "rules"
[[llm.rules]]
match = "book"
tool = "book"
arguments = { date = "tomorrow", time = "10:00", name = "Al" }
reply = "Booked {{ result.reference }}."
[[tools]]
use = "calendar_book"
name = "book"
database = "var/cal.sqlite"
timezone = "UTC"
hours = { "mon-sun" = "00:00-24:00" }
capture = { ref = "result.reference", who = "result.name | upper" }
[[dispositions]]
name = "booked"
when = "captured.ref is defined"
"""


async def test_a_bot_without_a_flow_captures_from_tools_for_its_record(
    bot_dir: Callable[..., Path], flow_registry: Registry
) -> None:
    bots = bot_dir("clinic", FLAT)
    snapshot = load_catalog(bots, flow_registry)
    assert not snapshot.problems, snapshot.problems
    record = await converse(start(snapshot, flow_registry, {"book": booked}), "book me")
    assert record.captured == {"ref": "R42", "who": "AL"}
    assert record.steps == [] and record.step is None

    assert apply_dispositions(record, snapshot.get("clinic")).disposition == "booked"
