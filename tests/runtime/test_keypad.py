"""The caller's keys as a turn: gathered into one entry, answered by a real AgentSession
(text mode, the `rules` LLM), recorded on the timeline and in the transcript."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime import DisconnectedBy
from runtime.call import CallRequest
from runtime.catalog import load_catalog
from runtime.keypad import Keypad, keypad_text
from runtime.registry import Registry
from runtime.resolve import plan_call
from runtime.session import CallSession, build_call_session

MENU_BOT = r"""
[prompt]
system = "You run the phone menu."
[llm]
provider = "rules"
default = "Pardon?"
[[llm.rules]]
match = "\\bpressed 1\\b"
reply = "We are open nine to five."
[[llm.rules]]
match = "\\bpressed (?P<digits>[0-9*#A-D]+)"
reply = "You entered {{ match.digits }}."
"""


async def menu_call(registry: Registry, bot_dir: Callable[..., Path]) -> CallSession:
    snapshot = load_catalog(bot_dir("menu", MENU_BOT), registry)
    assert not snapshot.problems, snapshot.problems
    call_session = build_call_session(plan_call(snapshot, CallRequest(bot="menu"), registry))
    await call_session.start()
    return call_session


async def said(call_session: CallSession, count: int, timeout: float = 5.0) -> list[tuple]:
    """The transcript once it has ``count`` entries."""
    async with asyncio.timeout(timeout):
        while len(call_session.call.transcript) < count:
            await asyncio.sleep(0.01)
    return [(entry.role, entry.text) for entry in call_session.call.transcript]


def keys_on_the_timeline(call_session: CallSession) -> list[dict[str, Any]]:
    return [event.data for event in call_session.call.events if event.type == "dtmf"]


def test_the_text_a_rules_pattern_matches() -> None:
    assert keypad_text("1") == "pressed 1"
    assert keypad_text("4711") == "pressed 4711"
    assert keypad_text("#") == "pressed #"


async def test_one_key_is_a_turn_once_no_other_key_follows(
    registry: Registry, bot_dir: Callable[..., Path]
) -> None:
    call_session = await menu_call(registry, bot_dir)
    keypad = Keypad(call_session.call, call_session.session, timeout=0.2)
    keypad.press("1")
    await asyncio.sleep(0.1)
    assert call_session.call.transcript == []  # the entry is still gathering
    lines = await said(call_session, 2)
    assert lines == [("customer", "pressed 1"), ("bot", "We are open nine to five.")]
    assert keys_on_the_timeline(call_session) == [{"direction": "in", "digit": "1"}]
    keypad.close()
    await call_session.close()


async def test_keys_in_quick_succession_are_one_entry_and_hash_ends_it_at_once(
    registry: Registry, bot_dir: Callable[..., Path]
) -> None:
    call_session = await menu_call(registry, bot_dir)
    keypad = Keypad(call_session.call, call_session.session, timeout=30)  # only # ends it
    for key in "4711#":
        keypad.press(key)
    lines = await said(call_session, 2, timeout=3)
    assert lines == [("customer", "pressed 4711"), ("bot", "You entered 4711.")]
    assert [data["digit"] for data in keys_on_the_timeline(call_session)] == list("4711#")
    keypad.press("#")  # on its own, # is the entry
    lines = await said(call_session, 4, timeout=3)
    assert lines[2:] == [("customer", "pressed #"), ("bot", "You entered #.")]
    keypad.close()
    await call_session.close()


async def test_keys_once_the_call_is_ending_are_recorded_but_not_answered(
    registry: Registry, bot_dir: Callable[..., Path]
) -> None:
    call_session = await menu_call(registry, bot_dir)
    keypad = Keypad(call_session.call, call_session.session, timeout=0.05)
    keypad.press("2")  # gathering when the call ends: dropped
    call_session.call.request_end(DisconnectedBy.CUSTOMER, cause="hung up")
    keypad.press("3")
    await asyncio.sleep(0.2)
    keypad.close()
    keypad.press("4")
    record = await call_session.close()
    assert record.transcript == []
    assert [event.data["digit"] for event in record.events if event.type == "dtmf"] == [
        "2",
        "3",
        "4",
    ]


class RecordingSession:
    """Only what the keypad asks of a session, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []

    def interrupt(self) -> None:
        self.calls.append(("interrupt", None))

    def generate_reply(self, *, user_input: str) -> None:
        self.calls.append(("reply", user_input))


async def test_the_first_key_stops_the_bot_and_odd_keys_are_only_recorded(
    registry: Registry, bot_dir: Callable[..., Path]
) -> None:
    call_session = await menu_call(registry, bot_dir)
    session = RecordingSession()
    keypad = Keypad(call_session.call, session, timeout=0.05)  # type: ignore[arg-type]
    keypad.press("x")  # not a key: on the timeline as it came, nothing else
    assert session.calls == []
    keypad.press("a")  # A-D arrive in either case
    assert session.calls == [("interrupt", None)]
    keypad.press("9")
    assert session.calls == [("interrupt", None)]  # once per entry
    await asyncio.sleep(0.2)
    assert session.calls[1:] == [("interrupt", None), ("reply", "pressed A9")]
    assert [data["digit"] for data in keys_on_the_timeline(call_session)] == ["X", "A", "9"]
    keypad.close()
    await call_session.close()
