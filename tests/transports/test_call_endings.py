"""Every way a call ends, end to end over a real loopback WebSocket: the watchdog or event
names the reason, the caller hears the last words, and the server closes the socket."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from runtime.schema import DAY_NAMES
from tests.transports.conftest import FAKE_BOT
from tests.transports.test_call_server import wait_for_records, ws_url
from tests.voice_fakes import tone

RATE = 16000
FRAME = RATE // 50 * 2  # 20 ms of 16-bit PCM


def write_bot(
    bot_dir: Callable[..., Path],
    *,
    limits: str = "",
    extra: str = "",
    lines: tuple[str, ...] = ("what are your hours", "bye"),
    llm: str = "rules",
) -> Path:
    """The transports' test bot (conftest's FAKE_BOT) with limits, more tables, or another
    LLM provider in place of its rules."""
    text = FAKE_BOT.replace("{lines}", json.dumps(list(lines)))
    if llm != "rules":
        rules = text[text.index("[llm]") : text.index("[[tools]]")]
        text = text.replace(rules, f'[llm]\nprovider = "{llm}"\n')
    return bot_dir("line", f"{text}\n[limits]\n{limits}\n{extra}\n")


@dataclass
class Line:
    """What the caller's side saw: notices, bot audio, and how the socket was closed."""

    notices: list[dict[str, Any]] = field(default_factory=list)
    bot_audio_bytes: int = 0
    close_code: int | None = None

    @property
    def transcript(self) -> list[tuple[str, str]]:
        return [(n["role"], n["text"]) for n in self.notices if n["type"] == "transcript"]


async def call_line(server: Any, speech_at: tuple[float, ...] = (), limit: float = 20) -> Line:
    """Hold a line open, speaking a 0.6 s tone at each of ``speech_at`` (seconds after the
    start) and silence otherwise, until the server hangs up; never hangs up itself."""
    line = Line()
    speech = tone(0.6, RATE, 300.0)
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(server, "/ws")) as ws:
        start = {"type": "start", "sample_rate": RATE, "bot": "line", "marks": True}
        await ws.send_str(json.dumps(start))

        async def send() -> None:
            clock = 0.0
            pending = sorted(speech_at)
            while not ws.closed:
                if pending and clock >= pending[0]:
                    pending.pop(0)
                    for i in range(0, len(speech), FRAME):
                        await ws.send_bytes(speech[i : i + FRAME])
                        await asyncio.sleep(0.02)
                        clock += 0.02
                    continue
                await ws.send_bytes(bytes(FRAME))
                await asyncio.sleep(0.02)
                clock += 0.02

        sender = asyncio.create_task(send())
        async with asyncio.timeout(limit):
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    data = json.loads(message.data)
                    line.notices.append(data)
                    if data["type"] == "mark":
                        await ws.send_str(json.dumps(data))
                elif message.type == aiohttp.WSMsgType.BINARY:
                    line.bot_audio_bytes += len(message.data)
        line.close_code = ws.close_code
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    return line


async def test_max_duration_cuts_the_call_off_as_timeout(bot_dir, serve) -> None:
    bots = write_bot(
        bot_dir,
        limits='max_duration = "1.5s"\nmax_duration_message = "Sorry, we are out of time."',
    )
    server = await serve(bots)
    line = await call_line(server)
    await wait_for_records(server)
    record = server.records[-1]
    assert record.disconnected_by == "timeout"
    assert "limits.max_duration (1.5 s)" in (record.cause or "")
    assert ("bot", "Sorry, we are out of time.") in line.transcript
    assert line.close_code == 1000  # the server hung up, the line is down
    assert line.notices[-1]["type"] == "ended"
    assert 1.5 <= record.duration < 8


async def test_dead_air_gets_reminders_then_ends_as_rnr(bot_dir, serve) -> None:
    bots = write_bot(
        bot_dir, limits='silence_timeout = "1.5s"\nsilence_reminders = ["Are you still there?"]'
    )
    server = await serve(bots)
    line = await call_line(server)
    await wait_for_records(server)
    record = server.records[-1]
    assert record.disconnected_by == "rnr"
    assert "no one spoke" in (record.cause or "")
    assert ("bot", "Are you still there?") in line.transcript
    reminders = [e for e in record.events if e.type == "silence_reminder"]
    assert len(reminders) == 1
    # the reminder comes halfway through the silence; the hang-up at its end
    ended = next(e for e in record.events if e.type == "end_requested")
    assert ended.at - reminders[0].at >= 0.7
    assert line.close_code == 1000


async def test_a_caller_who_keeps_talking_is_not_dead_air(bot_dir, serve) -> None:
    bots = write_bot(
        bot_dir,
        limits='silence_timeout = "2.5s"',
        lines=("what are your hours", "what are your hours", "bye"),
    )
    server = await serve(bots)
    await call_line(server, speech_at=(1.5, 3.5, 5.5))
    await wait_for_records(server)
    record = server.records[-1]
    assert record.disconnected_by == "bot", record.cause
    assert not [e for e in record.events if e.type == "silence_reminder"]


def closed_all_day_today() -> str:
    """Opening hours that are never now: only on another weekday (UTC)."""
    today = dt.datetime.now(dt.timezone.utc).weekday()
    other = DAY_NAMES[(today + 3) % 7]
    return (
        '[schedule]\ntimezone = "UTC"\n'
        f'hours = {{ {other} = "09:00-17:00" }}\n'
        'closed_message = "We are closed right now. Please call back during opening hours."'
    )


async def test_outside_opening_hours_the_bot_says_so_and_ends(bot_dir, serve) -> None:
    server = await serve(write_bot(bot_dir, extra=closed_all_day_today()))
    line = await call_line(server)
    await wait_for_records(server)
    record = server.records[-1]
    assert record.disconnected_by == "outside_hours"
    assert "outside opening hours" in (record.cause or "")
    assert line.transcript == [
        ("bot", "We are closed right now. Please call back during opening hours.")
    ]
    assert line.bot_audio_bytes > 0 and line.close_code == 1000


async def test_a_failing_provider_ends_the_call_with_an_apology(bot_dir, serve) -> None:
    bots = write_bot(
        bot_dir,
        llm="broken",
        limits='max_provider_errors = 0\nerror_message = "Sorry, we have a problem."',
    )
    server = await serve(bots)
    line = await call_line(server, speech_at=(1.0,))
    await wait_for_records(server)
    record = server.records[-1]
    assert record.disconnected_by == "error"
    assert "the model is overloaded" in (record.cause or "")
    assert record.transcript[-1].text == "Sorry, we have a problem."
    # the call lasted until the apology was said (and its audio sent), not until the error
    assert record.duration >= record.transcript[-1].at - 0.05
    assert record.ended_at is not None
    assert record.duration == round((record.ended_at - record.started_at).total_seconds(), 3)
    assert any(e.type == "provider_failed" for e in record.events)
    assert line.close_code == 1011


async def test_a_frame_the_server_refuses_is_an_error_not_the_caller_hanging_up(
    fake_bot, serve
) -> None:
    server = await serve(fake_bot(["hello"]))
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(server, "/ws")) as ws:
        await ws.send_str(json.dumps({"type": "start", "sample_rate": RATE, "bot": "line"}))
        await asyncio.sleep(0.3)
        await ws.send_bytes(b"\x00" * (2 << 20))  # over the 1 MiB frame limit
        async for _message in ws:
            pass
        assert ws.close_code == 1009
    await wait_for_records(server)
    record = server.records[-1]
    assert record.disconnected_by == "error"
    assert record.cause == (
        "the server refused a frame and closed the stream: "
        "Message size 2097152 exceeds limit 1048576"
    )


async def test_end_call_is_bot_and_hanging_up_is_customer(fake_bot, serve) -> None:
    server = await serve(fake_bot(["bye"]))
    await call_line(server, speech_at=(1.0,))
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(server, "/ws")) as ws:
        await ws.send_str(json.dumps({"type": "start", "sample_rate": RATE, "bot": "line"}))
        await asyncio.sleep(0.5)
        await ws.close()
    await wait_for_records(server, 2)
    assert [r.disconnected_by for r in server.records] == ["bot", "customer"]


VOICEMAIL = """
[voicemail]
action = "leave_message"
message = "Hi, this is the test line calling back. Please call us on 555 0100."
"""


async def outbound_call(server: Any, speech_seconds: float, limit: float = 30) -> Line:
    """An outbound call answered by someone (or something) speaking for ``speech_seconds``
    at once, then silent until the server hangs up."""
    line = Line()
    speech = tone(speech_seconds, RATE, 300.0)
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(server, "/ws")) as ws:
        start = {"type": "start", "sample_rate": RATE, "bot": "line", "direction": "outbound"}
        await ws.send_str(json.dumps(start))

        async def send() -> None:
            chunks = [bytes(FRAME)] * 15 + [
                speech[i : i + FRAME] for i in range(0, len(speech), FRAME)
            ]
            for chunk in chunks:
                await ws.send_bytes(chunk)
                await asyncio.sleep(0.02)
            while not ws.closed:
                await ws.send_bytes(bytes(FRAME))
                await asyncio.sleep(0.02)

        sender = asyncio.create_task(send())
        async with asyncio.timeout(limit):
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    line.notices.append(json.loads(message.data))
        line.close_code = ws.close_code
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
    return line


async def test_an_answering_machine_gets_the_message_and_no_greeting(bot_dir, serve) -> None:
    machine = ("Hi, you have reached Sam. Please leave a message after the tone.",)
    server = await serve(write_bot(bot_dir, extra=VOICEMAIL, lines=machine))
    line = await outbound_call(server, speech_seconds=3.5)
    await wait_for_records(server)
    record = server.records[-1]
    assert record.direction == "outbound"
    assert record.disconnected_by == "voicemail", record.cause
    assert "machine-vm" in (record.cause or "") and "leave a message" in (record.cause or "")
    bot_lines = [text for role, text in line.transcript if role == "bot"]
    assert bot_lines == ["Hi, this is the test line calling back. Please call us on 555 0100."]
    detection = next(e for e in record.events if e.type == "voicemail_detection")
    assert detection.data["category"] == "machine-vm"
    assert line.close_code == 1000


async def test_a_person_who_answers_hears_the_greeting(bot_dir, serve) -> None:
    person = ("hello", "bye")
    bots = write_bot(bot_dir, extra=VOICEMAIL, lines=person, limits='silence_timeout = "3s"')
    server = await serve(bots)
    line = await outbound_call(server, speech_seconds=0.6)
    await wait_for_records(server)
    record = server.records[-1]
    assert ("bot", "Hello, this is the test line.") in line.transcript
    detection = next(e for e in record.events if e.type == "voicemail_detection")
    assert detection.data["category"] == "human"
    assert record.disconnected_by == "rnr"  # then the person said nothing more
