"""Keys pressed on a WebSocket call (the generic protocol's ``dtmf``): the same keypad as a
LiveKit call's (`runtime.keypad`), so the bot answers them as the caller's turn."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.transports.conftest import FAKE_BOT
from tests.transports.test_call_server import wait_for_records, ws_url

KEY_RULE = r"""
[[llm.rules]]
match = "\\bpressed 42\\b"
reply = "Account forty-two, found it."
"""


async def test_keys_on_the_stream_are_one_turn_the_bot_answers(
    bot_dir: Callable[..., Path], serve: Callable[..., Any]
) -> None:
    server = await serve(bot_dir("line", FAKE_BOT.replace("{lines}", "[]") + KEY_RULE))
    frame = bytes(16000 // 50 * 2)
    transcript: list[tuple[str, str]] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url(server, "/ws")) as ws:
        await ws.send_str(json.dumps({"type": "start", "sample_rate": 16000, "bot": "line"}))

        async def silence() -> None:
            while not ws.closed:
                await ws.send_bytes(frame)
                await asyncio.sleep(0.02)

        sender = asyncio.create_task(silence())
        async with asyncio.timeout(15):
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue  # the bot's audio
                data = json.loads(message.data)
                if data["type"] != "transcript":
                    continue
                transcript.append((data["role"], data["text"]))
                if len(transcript) == 1:  # the greeting: now the caller presses keys
                    for digit in "42#":
                        await ws.send_str(json.dumps({"type": "dtmf", "digit": digit}))
                elif data["role"] == "bot":
                    await ws.send_str('{"type": "stop"}')
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)

    assert transcript[1:] == [("customer", "pressed 42"), ("bot", "Account forty-two, found it.")]
    await wait_for_records(server)
    record = server.records[-1]
    assert [(e.role, e.text) for e in record.transcript][1:] == transcript[1:]
    keys = [event.data for event in record.events if event.type == "dtmf"]
    assert keys == [{"direction": "in", "digit": digit} for digit in "42#"]
