"""transfer_call and send_dtmf: load-time checks, and real text calls whose transport
control is simulated (what the WebSocket and LiveKit transports replace)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from runtime import DisconnectedBy, ToolFailure
from runtime.call import CallRequest
from runtime.call_control import ControlUnsupported, SimulatedControl
from runtime.catalog import load_catalog
from runtime.registry import Registry
from runtime.resolve import plan_call
from runtime.session import CallSession, build_call_session

PHONE_BOT = """
[prompt]
system = "You answer the phone."
[variables]
desk = "+15550100"
[llm]
provider = "rules"
default = "Pardon?"
[[llm.rules]]
match = "person"
tool = "transfer_call"
[[llm.rules]]
match = "billing"
tool = "to_department"
arguments = {{ destination = "billing" }}
[[llm.rules]]
match = "press (?P<digits>[0-9#*]+)"
tool = "send_dtmf"
arguments = {{ digits = "{{{{ match.digits }}}}" }}
reply = "Done."
on_error = "I could not press those keys."
[[tools]]
use = "transfer_call"
to = "{{{{ desk }}}}"
allowed = ["+1555*", "sip:*@pbx.example.com"]
announcement = "Putting you through."
[[tools]]
use = "transfer_call"
name = "to_department"
targets = {{ billing = "sip:billing@pbx.example.com", sales = "+15557654321" }}
announcement = "Connecting you to {{{{ destination }}}}."
[[tools]]
use = "send_dtmf"
{extra}
"""


def start_call(
    registry: Registry, bot_dir: Callable[..., Path], extra: str = "", **variables: str
) -> CallSession:
    snapshot = load_catalog(bot_dir("phone", PHONE_BOT.format(extra=extra)), registry)
    assert not snapshot.problems, snapshot.problems
    plan = plan_call(snapshot, CallRequest(bot="phone", variables=variables), registry)
    return build_call_session(plan)


async def test_transfer_says_the_announcement_then_hands_over(
    registry: Registry, bot_dir: Callable[..., Path]
) -> None:
    call_session = start_call(registry, bot_dir, desk="sip:desk@pbx.example.com")
    control = call_session.call.control
    assert isinstance(control, SimulatedControl)
    await call_session.start()
    await call_session.say_text("can I talk to a person")
    record = await call_session.close()

    assert control.transfers == ["sip:desk@pbx.example.com"]
    assert record.disconnected_by == DisconnectedBy.BOT.value
    assert record.transferred_to == "sip:desk@pbx.example.com"
    assert record.cause == "transferred to sip:desk@pbx.example.com"
    assert record.transcript[-1].text == "Putting you through."
    transfer = next(e for e in record.events if e.type == "transfer")
    assert transfer.data["outcome"] == "ok" and transfer.data["target"].startswith("sip:desk")


async def test_a_target_outside_the_allow_list_is_refused(
    registry: Registry, bot_dir: Callable[..., Path]
) -> None:
    """A call variable set by the caller's side (a stream parameter) cannot send the
    caller anywhere the bot does not allow."""
    call_session = start_call(registry, bot_dir, desk="+19005550199")
    control = call_session.call.control
    assert isinstance(control, SimulatedControl)
    await call_session.start()
    await call_session.say_text("can I talk to a person")
    record = await call_session.close()
    assert control.transfers == [] and record.transferred_to is None
    refused = next(e for e in record.events if e.type == "transfer_refused")
    assert refused.data["target"] == "+19005550199"
    failed = next(e for e in record.events if e.type == "tool_call")
    assert failed.data["error"] == "+19005550199 is not a place callers may be transferred to"


async def test_named_targets_let_the_llm_choose(
    registry: Registry, bot_dir: Callable[..., Path]
) -> None:
    call_session = start_call(registry, bot_dir)
    await call_session.start()
    await call_session.say_text("billing please")
    record = await call_session.close()
    assert record.transferred_to == "sip:billing@pbx.example.com"
    assert record.transcript[-1].text == "Connecting you to billing."


async def test_a_failed_transfer_ends_the_call_as_an_error(
    registry: Registry, bot_dir: Callable[..., Path]
) -> None:
    class RefusingTrunk(SimulatedControl):
        async def transfer(self, target: str) -> None:
            raise RuntimeError("SIP 486 Busy Here")

    call_session = start_call(registry, bot_dir)
    call_session.call.control = RefusingTrunk()
    await call_session.start()
    await call_session.say_text("a person please")
    record = await call_session.close()
    assert record.disconnected_by == DisconnectedBy.ERROR.value
    assert record.cause == "transfer to +15550100 failed: SIP 486 Busy Here"
    assert record.transferred_to is None


async def test_no_transfer_without_a_phone_line(
    registry: Registry, bot_dir: Callable[..., Path]
) -> None:
    class BrowserCall(SimulatedControl):
        can_transfer = False

    call_session = start_call(registry, bot_dir)
    call_session.call.control = BrowserCall()
    await call_session.start()
    await call_session.say_text("a person please")
    assert call_session.call.end_request is None  # the call goes on: the LLM hears the error
    record = await call_session.close(DisconnectedBy.CUSTOMER)
    assert record.disconnected_by == DisconnectedBy.CUSTOMER.value
    event = next(e for e in record.events if e.type == "tool_call")
    assert event.data["outcome"] == "error"
    assert "no phone line" in event.data["error"]


async def test_dtmf_reaches_the_line(registry: Registry, bot_dir: Callable[..., Path]) -> None:
    call_session = start_call(registry, bot_dir)
    control = call_session.call.control
    assert isinstance(control, SimulatedControl)
    await call_session.start()
    await call_session.say_text("press 12#")
    record = await call_session.close()
    assert control.dtmf == ["12#"]
    assert [e.data for e in record.events if e.type == "dtmf"] == [{"digits": "12#"}]
    assert record.transcript[-1].text == "Done."


async def test_dtmf_the_transport_cannot_send_is_a_tool_error(
    registry: Registry, bot_dir: Callable[..., Path]
) -> None:
    class NoTones(SimulatedControl):
        async def send_dtmf(self, digits: str) -> None:
            raise ControlUnsupported("the browser widget has no keypad")

    call_session = start_call(registry, bot_dir)
    call_session.call.control = NoTones()
    await call_session.start()
    await call_session.say_text("press 5")
    record = await call_session.close()
    assert record.transcript[-1].text == "I could not press those keys."
    event = next(e for e in record.events if e.type == "tool_call")
    assert "no keypad" in event.data["error"]


async def test_dtmf_rejects_what_is_not_a_key(
    registry: Registry, bot_dir: Callable[..., Path]
) -> None:
    entry = registry.tool("send_dtmf")
    call_session = start_call(registry, bot_dir)
    definition = entry.factory(entry.options.model_validate({}), call_session.call)
    with pytest.raises(ToolFailure, match="not a DTMF sequence"):
        await definition.handler({"digits": "12; DROP"}, call_session.call)
    assert definition.parameters["required"] == ["digits"]


@pytest.mark.parametrize(
    ("tool", "message"),
    [
        (
            'use = "transfer_call"\nto = "front desk"',
            "tools[0].to: target 'front desk' is not a phone number",
        ),
        ('use = "transfer_call"', "tools[0]: give either `to`"),
        (
            'use = "transfer_call"\nto = "+15550100"\ntargets = { a = "+15550101" }',
            "give either `to` (one target) or `targets`",
        ),
        (
            'use = "transfer_call"\nto = "{{ desk_number }}"\nallowed = ["+1*"]',
            "tools[0].to: uses undefined variable `desk_number`",
        ),
        (
            'use = "transfer_call"\nto = "{{ desk }}"',
            "tools[0]: the target '{{ desk }}' reads call variables, which may come from the "
            "caller's side",
        ),
        (
            'use = "transfer_call"\ntargets = { a = "{{ nope }}" }\nallowed = ["+1*"]',
            "tools[0].targets.a: uses undefined variable `nope`",
        ),
        ('use = "send_dtmf"\ndigits = "1"', "tools[0].digits: unknown key"),
    ],
)
def test_bad_bindings_are_reported_at_load(
    registry: Registry, bot_dir: Callable[..., Path], tool: str, message: str
) -> None:
    bot = (
        '[prompt]\nsystem = "x"\n[variables]\ndesk = "+1555"\n'
        f'[llm]\nprovider = "rules"\n[[tools]]\n{tool}\n'
    )
    snapshot = load_catalog(bot_dir("phone", bot), registry)
    assert any(message in str(problem) for problem in snapshot.problems), snapshot.problems
